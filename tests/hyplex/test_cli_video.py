"""``hyplex segment`` on small recordings writes valid outputs; a bad file fails alone."""

import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from hyplex.cli.video import parse_bands, register
from hyplex.devices.frame import Frame, PixelFormat
from hyplex.devices.recorder import Recorder, StreamSpec
from hyplex.models.reconstruction import LinearDecoder
from hyplex.pipeline.model_files import save_decoder
from hyplex.pipeline.models import PixelClassifier
from hyplex.pipeline.outputs import read_decoded
from hyplex.simulation.layout import MosaicLayout

SHAPE = (96, 128)
PITCH = 3.0


@pytest.fixture(scope="module")
def app():
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:  # a second command keeps typer from collapsing the app
        pass

    return app


@pytest.fixture()
def files(tmp_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    save_decoder(LinearDecoder(9, 34), tmp_path / "rec")  # rec.safetensors + rec.json
    save_decoder(PixelClassifier(9, 6, hidden=8), tmp_path / "seg.json")
    rng = np.random.default_rng(0)
    recording = tmp_path / "clip.h5"
    with Recorder(recording, StreamSpec(SHAPE, PixelFormat.MONO12)) as recorder:
        for i in range(5):
            data = rng.integers(0, 4095, SHAPE).astype(np.uint16)
            recorder.write(Frame(data, frame_id=i, seq=i, host_timestamp_ns=i))
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF but not really")
    return tmp_path


def test_segment_writes_outputs_and_reports_a_bad_file(app, files):
    out = files / "out"
    result = CliRunner().invoke(
        app,
        [
            "segment",
            str(files / "clip.h5"),
            str(files / "bad.h5"),
            "--out",
            str(out),
            "--reconstructor",
            str(files / "rec.safetensors"),
            "--segmenter",
            str(files / "seg.json"),
            "--pitch-px",
            str(PITCH),
            "--bands",
            "0:34:4",
            "--temporal",
            "gated",
            "--input-scale-dn",
            "1000",
        ],
    )
    assert result.exit_code == 1, result.output  # one input failed
    assert "FAILED" in result.output and "bad.h5" in result.output
    assert "5 frames" in result.output
    stored = read_decoded(out / "clip.labels.h5")
    metapixels = MosaicLayout.fit(SHAPE, pitch_px=PITCH).metapixels
    assert stored["labels"].shape == (5, *metapixels)
    assert stored["cube"].shape == (5, *metapixels, 9)  # bands 0, 4, ..., 32
    assert stored["labels"].max() < 6
    import cv2

    capture = cv2.VideoCapture(str(out / "clip.overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    capture.release()
    assert len((out / "clip.stats.csv").read_text().splitlines()) == 6
    stats = json.loads((out / "clip.stats.json").read_text())
    assert stats["processed"] == 5 and stats["dropped"] == 0
    summary = json.loads((out / "segment_summary.json").read_text())
    assert [("error" in r) for r in summary] == [False, True]
    assert "HDF5" in summary[1]["error"]


def test_segment_needs_a_model_and_valid_bands(app, files):
    result = CliRunner().invoke(app, ["segment", str(files / "clip.h5")])
    assert result.exit_code != 0 and "--bundle" in result.output
    assert parse_bands("0:6:2") == (0, 2, 4) and parse_bands("3,1") == (3, 1)
    with pytest.raises(typer.BadParameter, match="bands must be like"):
        parse_bands("a-b")


@pytest.mark.timeout(180)
def test_segment_on_two_dask_workers_matches_one_and_leaves_the_environment(app, files):
    """Dask's Nanny writes OMP_NUM_THREADS=1, PYTHONHASHSEED, ... into the parent's
    environment when it starts workers; a batch run must give it back as it was."""
    import os
    import shutil

    shutil.copy(files / "clip.h5", files / "clip2.h5")
    common = ["--reconstructor", str(files / "rec.safetensors"), "--pitch-px", str(PITCH)]
    common += ["--input-scale-dn", "1000", "--no-video"]
    inputs = [str(files / "clip.h5"), str(files / "clip2.h5")]
    before = dict(os.environ)
    runs = {}
    for workers in (1, 2):
        out = files / f"out{workers}"
        result = CliRunner().invoke(
            app, ["segment", *inputs, "--out", str(out), "--workers", str(workers), *common]
        )
        assert result.exit_code == 0, result.output
        runs[workers] = [read_decoded(out / f"{name}.labels.h5") for name in ("clip", "clip2")]
    assert dict(os.environ) == before
    for one, two in zip(runs[1], runs[2], strict=True):
        for key in one:
            if isinstance(one[key], np.ndarray):
                assert np.array_equal(one[key], two[key], equal_nan=True), key
