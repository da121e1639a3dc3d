"""``train_codesign`` calibrates a conditional-flow reconstructor's intervals (split conformal
on calibration scenes of their own), so a designed bundle's ``--uncertainty`` maps are not
the over-confident intervals of a flow fitted to its training residuals (issue 16)."""

import torch
from tiny_bundles import tiny_config

from hyplex.models.codesign import train_codesign
from hyplex.models.codesign_library import quick_library

FLOW = {"width": 8, "hidden": 8, "n_blocks": 1, "mean_width": 8, "mean_blocks": 1, "mean_stages": 1}


def test_a_designed_flow_gets_its_band_scale_fitted(tmp_path):
    torch.set_num_threads(1)
    library = quick_library(tmp_path / "lib.h5", count=24)
    config = tiny_config(reconstructor="flow", reconstructor_config=FLOW)
    result = train_codesign(config, None, library=library, progress=False)
    scale = result.model.reconstructor.band_scale.flatten()
    assert result.notes["flow_band_scale"] == [round(float(v), 4) for v in scale]
    assert len(result.notes["flow_band_scale"]) == config.bands
    assert not torch.allclose(scale, torch.ones_like(scale))  # fitted, not the initial 1
    assert torch.isfinite(scale).all() and (scale > 0).all()
