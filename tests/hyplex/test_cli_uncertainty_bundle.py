"""The conditional-flow path end to end, in the default suite: ``hyplex design`` with
``reconstructor = "flow"`` writes a bundle, the bundle reloads with its flow decoder, and
``hyplex segment --bundle B --uncertainty`` writes the per-pixel, per-band std map beside the
cube in the HDF5. (``test_cli_uncertainty.py`` runs the same chain on a larger design under
``@slow``; this one trains a single step on one 16 x 16 scene, seconds on one core.)"""

import numpy as np
import torch
from tiny_bundles import tiny_recording
from typer.testing import CliRunner

from hyplex.cli.app import app
from hyplex.models.bundle import load_bundle
from hyplex.models.restoration.conditional_flow import ConditionalFlowDecoder

torch.set_num_threads(1)
runner = CliRunner()
ENV = {"COLUMNS": "400", "HYPLEX_THREADS": "1"}

ONE_STEP_FLOW_DESIGN = """
[codesign]
bands = 8
wavelength_range_nm = [420.0, 700.0]
scene_size = 16
n_train_scenes = 1
n_val_scenes = 1
n_objects = 2
patch_size = 16
batch_size = 1
steps = 1
finetune_steps = 0
evaluate_initial = false
device = "cpu"
reconstructor = "flow"
[codesign.reconstructor_config]
width = 8
hidden = 8
n_blocks = 1
[codesign.segmenter_config]
base_channels = 4
depth = 1
"""


def test_design_a_flow_bundle_then_segment_writes_its_std_map(tmp_path):
    from hyplex.models.codesign_library import quick_library
    from hyplex.pipeline.outputs import read_decoded

    library = tmp_path / "lib.h5"
    quick_library(library, count=24)
    config = tmp_path / "flow.toml"
    config.write_text(ONE_STEP_FLOW_DESIGN)
    design_args = ["design", "--config", str(config), "--library", str(library)]
    result = runner.invoke(app, env=ENV, args=[*design_args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    bundle = tmp_path / "run" / "bundle"
    loaded = load_bundle(bundle)
    assert isinstance(loaded.reconstructor, ConditionalFlowDecoder)

    recording = tiny_recording(tmp_path / "rec")
    segment = ["segment", str(recording), "--no-video", "--input-scale-dn", "4095"]
    segment += ["--bundle", str(bundle)]
    result = runner.invoke(app, env=ENV, args=[*segment, "--out", str(tmp_path / "out"),
                                               "--uncertainty"])  # fmt: skip
    assert result.exit_code == 0, result.output
    stored = read_decoded(tmp_path / "out" / "clip.labels.h5")
    # 3 frames of the 240 x 240 recording, 10 x 10 metapixels, the design's 8 bands
    assert stored["cube_std"].shape == stored["cube"].shape == (3, 10, 10, 8)
    assert np.isfinite(stored["cube_std"]).all() and (stored["cube_std"] > 0).all()
    # the std is the posterior's spread: it differs between pixels and bands
    assert stored["cube_std"].std() > 0
    result = runner.invoke(app, env=ENV, args=[*segment, "--out", str(tmp_path / "plain")])
    assert result.exit_code == 0, result.output
    assert "cube_std" not in read_decoded(tmp_path / "plain" / "clip.labels.h5")
