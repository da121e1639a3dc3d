"""``hyplex pretrain`` / ``design --init-encoder`` / ``segment --temporal tcl``: runs and
errors at the command line."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hyplex.cli.app import app
from hyplex.devices.frame import Frame, PixelFormat
from hyplex.devices.recorder import Recorder, StreamSpec
from hyplex.models.pretraining import load_encoder
from hyplex.models.reconstruction import LinearDecoder
from hyplex.models.segmentation import UNet
from hyplex.pipeline.model_files import save_decoder
from hyplex.pipeline.models import PixelClassifier
from hyplex.pipeline.outputs import read_decoded
from hyplex.simulation.layout import MosaicLayout


def _frames(folder, channels=9, count=3, size=20):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        np.save(folder / f"f{i}.npy", rng.uniform(0.5, 1.5, (size, size, channels)))
    return folder


def test_pretrain_writes_an_encoder_that_design_accepts(tmp_path):
    torch.set_num_threads(1)
    frames = _frames(tmp_path / "frames")
    out = tmp_path / "enc.safetensors"
    arguments = ["pretrain", "--frames", str(frames), "--out", str(out), "--steps", "3"]
    result = CliRunner().invoke(app, [*arguments, "--batch", "4", "--crop", "12"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and out.is_file()
    assert load_encoder(UNet(9, 4, 8, 2), out)["depth"] == 2
    # design checks the file against its segmenter before training: a 4-filter encoder
    other = tmp_path / "enc4.safetensors"
    frames4 = _frames(tmp_path / "frames4", channels=4)
    arguments = ["pretrain", "--frames", str(frames4), "--out", str(other), "--steps", "1"]
    result = CliRunner().invoke(app, [*arguments, "--in-channels", "4", "--crop", "12"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        app, ["design", "--quick", "--out", str(tmp_path / "d"), "--init-encoder", str(other)]
    )
    assert result.exit_code == 2 and "does not fit the segmenter" in result.output


def test_pretrain_reports_bad_input(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "enc.safetensors")
    result = CliRunner().invoke(app, ["pretrain", "--frames", str(empty), "--out", out])
    assert result.exit_code == 2 and "no frames in" in result.output
    frames = _frames(tmp_path / "frames", channels=4)
    result = CliRunner().invoke(app, ["pretrain", "--frames", str(frames), "--out", out])
    assert result.exit_code == 2 and "has 4 channels per metapixel" in result.output
    assert "expects 9" in result.output
    result = CliRunner().invoke(app, ["pretrain", "--frames", str(frames), "--out", "x.pt"])
    assert result.exit_code == 2 and ".safetensors" in result.output


@pytest.mark.parametrize("temporal", ["tcl", "lstm"])
def test_segment_with_the_temporal_event_module(tmp_path, temporal):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    shape, pitch = (96, 128), 3.0
    save_decoder(LinearDecoder(9, 34), tmp_path / "rec")
    save_decoder(PixelClassifier(9, 4, hidden=8), tmp_path / "seg.json")
    rng = np.random.default_rng(0)
    with Recorder(tmp_path / "clip.h5", StreamSpec(shape, PixelFormat.MONO12)) as recorder:
        for i in range(4):
            data = rng.integers(0, 4095, shape).astype(np.uint16)
            recorder.write(Frame(data, frame_id=i, seq=i, host_timestamp_ns=i))
    out = tmp_path / "out"
    arguments = [
        "segment", str(tmp_path / "clip.h5"), "--out", str(out),
        "--reconstructor", str(tmp_path / "rec.safetensors"),
        "--segmenter", str(tmp_path / "seg.json"), "--pitch-px", str(pitch),
        "--temporal", temporal, "--no-video", "--input-scale-dn", "1000",
    ]  # fmt: skip
    result = CliRunner().invoke(app, arguments)
    if temporal == "lstm":
        assert result.exit_code == 2 and "no temporal module" in result.output
        return
    assert result.exit_code == 0, result.output
    stored = read_decoded(out / "clip.labels.h5")
    assert stored["labels"].shape == (4, *MosaicLayout.fit(shape, pitch_px=pitch).metapixels)
