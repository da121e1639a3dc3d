"""The roofline table (hyplex.pipeline.roofline) and ``hyplex segment --verbose``."""

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from hyplex.cli.video import register
from hyplex.devices.frame import Frame, PixelFormat
from hyplex.devices.recorder import Recorder, StreamSpec
from hyplex.models.reconstruction import LinearDecoder
from hyplex.pipeline.model_files import save_decoder
from hyplex.pipeline.roofline import (
    copy_bandwidth_bytes_per_s,
    format_roofline,
    roofline,
    stage_bytes,
)


def test_stage_bytes_count_inputs_and_outputs_once():
    moved = stage_bytes((3000, 4000), 2, (1000, 1333), 9, 34, 6)
    barcodes = 1000 * 1333 * 9 * 4
    assert moved["preprocess"] == 3000 * 4000 * 2 + barcodes
    assert moved["inference"] == barcodes + 1000 * 1333 * (34 * 4 + 5)
    assert stage_bytes((30, 40), 1, (10, 13), 9, 0, 0)["inference"] == 10 * 13 * 9 * 4


def test_roofline_fractions():
    rows = roofline({"preprocess": 10.0, "inference": 50.0, "output": 1.0},
                    {"preprocess": 2e7, "inference": 1e7}, 4e9, fps_target=25)  # fmt: skip
    assert [row.stage for row in rows] == ["preprocess", "inference"]  # no bytes: no row
    assert rows[0].budget_fraction == pytest.approx(10 / 40)
    assert rows[0].bandwidth_fraction == pytest.approx(2e7 / 0.01 / 4e9)
    assert rows[1].bandwidth_fraction == pytest.approx(1e7 / 0.05 / 4e9)
    text = format_roofline(rows, 4e9, 25)
    assert "preprocess" in text and "40.0 ms (25 fps)" in text and "4.00 GB/s" in text
    with pytest.raises(ValueError, match="must be > 0"):
        roofline({}, {}, 0.0)


def test_copy_bandwidth_is_a_plausible_rate():
    rate = copy_bandwidth_bytes_per_s(8 * 2**20, repeats=2)
    assert 1e8 < rate < 1e13  # 0.1 GB/s .. 10 TB/s
    with pytest.raises(ValueError, match="n_bytes >= 1 MiB"):
        copy_bandwidth_bytes_per_s(1000)


def test_segment_verbose_prints_the_table(tmp_path):
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    torch.manual_seed(0)
    save_decoder(LinearDecoder(9, 34), tmp_path / "rec")
    shape = (96, 128)
    rng = np.random.default_rng(0)
    with Recorder(tmp_path / "clip.h5", StreamSpec(shape, PixelFormat.MONO12)) as recorder:
        for i in range(3):
            data = rng.integers(0, 4095, shape).astype(np.uint16)
            recorder.write(Frame(data, frame_id=i, seq=i, host_timestamp_ns=i))
    result = CliRunner().invoke(
        app,
        ["segment", str(tmp_path / "clip.h5"), "--out", str(tmp_path / "out"),
         "--reconstructor", str(tmp_path / "rec.safetensors"), "--pitch-px", "3",
         "--no-video", "--verbose"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "of copy bw" in result.output and "frame budget 33.3 ms" in result.output
    assert "preprocess" in result.output and "inference" in result.output
    result = CliRunner().invoke(
        app, ["segment", str(tmp_path / "clip.h5"), "--reconstructor",
              str(tmp_path / "rec.safetensors"), "--profile", "realtime"],
    )  # fmt: skip
    assert result.exit_code != 0 and "expected --bundle" in result.output
