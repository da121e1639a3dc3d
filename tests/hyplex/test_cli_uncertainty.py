"""``hyplex design`` with the conditional-flow reconstructor and ``hyplex segment
--uncertainty``: the std map in the HDF5, and the errors for decoders without a posterior."""

import numpy as np
import pytest
import torch
from tiny_bundles import tiny_bundle, tiny_recording
from typer.testing import CliRunner

from hyplex.cli.app import app
from hyplex.models.bundle import load_bundle
from hyplex.models.reconstruction import LinearDecoder
from hyplex.models.restoration.conditional_flow import ConditionalFlowDecoder

torch.set_num_threads(1)
runner = CliRunner()
ENV = {"COLUMNS": "400", "HYPLEX_THREADS": "1"}


@pytest.fixture(scope="module")
def flow_bundle(tmp_path_factory):
    return tiny_bundle(
        tmp_path_factory,
        reconstructor="flow",
        reconstructor_config={"width": 8, "hidden": 8, "n_blocks": 1},
    )


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return tiny_recording(tmp_path_factory.mktemp("rec"))


def _segment(recording, out, *extra):
    args = ["segment", str(recording), "--out", str(out), "--no-video"]
    return runner.invoke(app, env=ENV, args=[*args, "--input-scale-dn", "4095", *extra])


@pytest.mark.slow  # the co-design run of the fixture takes ~20 s on the loaded machine
def test_a_flow_bundle_reloads_and_segment_writes_the_std_map(flow_bundle, recording, tmp_path):
    from hyplex.pipeline.outputs import read_decoded

    loaded = load_bundle(flow_bundle)
    assert isinstance(loaded.reconstructor, ConditionalFlowDecoder)
    result = _segment(recording, tmp_path / "out", "--bundle", str(flow_bundle), "--uncertainty")
    assert result.exit_code == 0, result.output
    stored = read_decoded(tmp_path / "out" / "clip.labels.h5")
    assert stored["cube_std"].shape == stored["cube"].shape == (3, 10, 10, 8)
    assert (stored["cube_std"] > 0).all() and np.isfinite(stored["cube_std"]).all()
    # without the flag no std map is written
    result = _segment(recording, tmp_path / "plain", "--bundle", str(flow_bundle))
    assert result.exit_code == 0, result.output
    assert "cube_std" not in read_decoded(tmp_path / "plain" / "clip.labels.h5")


def test_segment_writes_the_std_map_of_a_flow_decoder_file(recording, tmp_path):
    from hyplex.pipeline.model_files import save_decoder
    from hyplex.pipeline.outputs import read_decoded

    torch.manual_seed(0)
    weights, _ = save_decoder(ConditionalFlowDecoder(9, 6, width=8, hidden=8, n_blocks=1),
                              tmp_path / "flow")  # fmt: skip
    result = _segment(recording, tmp_path / "out", "--reconstructor", str(weights), "--uncertainty")
    assert result.exit_code == 0, result.output
    stored = read_decoded(tmp_path / "out" / "clip.labels.h5")
    assert stored["cube_std"].shape == stored["cube"].shape == (3, 10, 10, 6)
    assert (stored["cube_std"] > 0).all()


def test_uncertainty_needs_a_flow_decoder_and_the_cube(recording, tmp_path):
    from hyplex.pipeline.model_files import save_decoder

    weights, _ = save_decoder(LinearDecoder(9, 8), tmp_path / "linear")
    result = _segment(recording, tmp_path / "a", "--reconstructor", str(weights), "--uncertainty")
    assert result.exit_code != 0
    assert "gives no posterior" in result.output and "'flow'" in result.output
    flow, _ = save_decoder(ConditionalFlowDecoder(9, 6, width=8, hidden=8, n_blocks=1),
                           tmp_path / "flow")  # fmt: skip
    args = ("--reconstructor", str(flow), "--uncertainty", "--no-cube")
    result = _segment(recording, tmp_path / "c", *args)
    assert result.exit_code != 0 and "beside the cube" in result.output


def test_a_flow_decoder_for_another_channel_count_is_refused(recording, tmp_path):
    from hyplex.pipeline.model_files import save_decoder

    flow = ConditionalFlowDecoder(4, 8, width=8, hidden=8, n_blocks=1)
    weights, _ = save_decoder(flow, tmp_path / "flow4")
    result = _segment(recording, tmp_path / "out", "--reconstructor", str(weights), "--uncertainty")
    assert result.exit_code != 0
    assert "4" in result.output and "9" in result.output, result.output
