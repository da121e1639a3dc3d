"""Runs that fail leave nothing that looks complete; Ctrl-C keeps clearly partial outputs; a
truncated recording or a stalled source fails fast; the overlay is H.264 (issue 20, items 2
and 9). Each test reproduces a failure the audit found."""

import os
import threading
import time

import numpy as np
import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

from hyplex.devices.frame import Frame, PixelFormat
from hyplex.devices.recorder import Recorder, StreamSpec
from hyplex.pipeline import Pipeline, PipelineConfig
from hyplex.pipeline.batch import SegmentJob, segment_file
from hyplex.pipeline.inference import InferenceConfig, InferenceEngine
from hyplex.pipeline.outputs import (
    DecodedWriter,
    OverlayVideoWriter,
    StatsWriter,
    partial_path,
    read_decoded,
)
from hyplex.pipeline.sources import SourceError
from hyplex.pipeline.stages import Preprocessor
from hyplex.pipeline.types import PipelineFailed
from hyplex.simulation.layout import MosaicLayout

# pipeline stage threads: a hang fails here, with stacks
pytestmark = pytest.mark.timeout(120)

SHAPE = (96, 128)
PITCH = 3.0
N_BANDS, N_CLASSES = 34, 5


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def layout():
    return MosaicLayout.fit(SHAPE, pitch_px=PITCH)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    reconstructor = nn.Sequential(nn.Conv2d(9, N_BANDS, 1))
    segmenter = nn.Sequential(nn.Conv2d(9, N_CLASSES, 3, padding=1))
    return reconstructor.eval(), segmenter.eval()


def _frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 4000, SHAPE).astype(np.uint16) for _ in range(n)]


def _sinks(folder, layout):
    return [
        DecodedWriter(folder / "run.labels.h5", layout.metapixels, N_CLASSES, cube_bands=N_BANDS),
        OverlayVideoWriter(folder / "run.overlay.mp4", N_CLASSES, fps=10, scale=4),
        StatsWriter(folder / "run.stats.csv"),
    ]


FINAL = ("run.labels.h5", "run.overlay.mp4", "run.stats.csv", "run.stats.json")


def _pipeline(layout, models, **config):
    engine = InferenceEngine(*models, config=InferenceConfig(input_scale_dn=1000.0))
    return Pipeline(Preprocessor(layout, SHAPE), engine, PipelineConfig(**config))


def _left(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_complete_run_renames_its_outputs_into_place(tmp_path, layout, models):
    summary = _pipeline(layout, models).run(_frames(4), sinks=_sinks(tmp_path, layout))
    assert summary.outcome == "complete" and summary.processed == 4
    assert _left(tmp_path) == sorted(FINAL)  # no partial file, no lock file
    assert read_decoded(tmp_path / "run.labels.h5")["labels"].shape[0] == 4


@pytest.mark.parametrize("kind", ["nan", "shape", "empty"])
def test_a_run_without_a_usable_frame_fails_and_leaves_no_output(tmp_path, layout, models, kind):
    if kind == "nan":
        frames = [np.full(SHAPE, np.nan, np.float32) for _ in range(4)]
    elif kind == "shape":
        frames = [np.zeros((10, 12), np.uint16) for _ in range(4)]
    else:
        frames = []
    (tmp_path / "run.labels.h5").write_bytes(b"an older, complete result")  # left alone
    with pytest.raises(PipelineFailed, match="no usable frame") as caught:
        _pipeline(layout, models).run(frames, sinks=_sinks(tmp_path, layout))
    summary = caught.value.summary
    assert summary.outcome == "failed" and summary.processed == 0
    assert summary.corrupt == (0 if kind == "empty" else 4)
    assert _left(tmp_path) == ["run.labels.h5"]
    assert (tmp_path / "run.labels.h5").read_bytes() == b"an older, complete result"


@pytest.mark.parametrize("good_frames", [0, 2])
def test_a_failing_stage_fails_the_run(tmp_path, layout, models, good_frames):
    def frames():
        yield from _frames(good_frames)
        raise RuntimeError("the source broke")

    with pytest.raises(PipelineFailed, match="the source broke") as caught:
        _pipeline(layout, models).run(frames(), sinks=_sinks(tmp_path, layout))
    if good_frames:  # what was processed is kept, clearly marked partial
        assert caught.value.summary.outcome == "partial" and "kept" in str(caught.value)
        assert _left(tmp_path) == sorted(partial_path(tmp_path / name).name for name in FINAL)
        assert read_decoded(partial_path(tmp_path / "run.labels.h5"))["labels"].shape[0] == 2
    else:
        assert _left(tmp_path) == []


def test_ctrl_c_keeps_partial_outputs_under_partial_names(tmp_path, layout, models):
    class Interrupt:
        def __init__(self):
            self.count = 0

        def write(self, result):
            self.count += 1
            if self.count == 3:
                raise KeyboardInterrupt

        def close(self, summary=None):
            pass

    sinks = [*_sinks(tmp_path, layout), Interrupt()]
    summary = _pipeline(layout, models).run(_frames(10), sinks=sinks)
    assert summary.interrupted and summary.outcome == "partial"
    assert _left(tmp_path) == sorted(partial_path(tmp_path / name).name for name in FINAL)
    stored = read_decoded(partial_path(tmp_path / "run.labels.h5"))
    assert list(stored["frame_index"]) == [0, 1, 2]


@pytest.mark.timeout(60)
def test_a_stalled_source_fails_after_its_read_timeout(tmp_path, layout, models):
    release = threading.Event()

    def frames():
        release.wait()  # a read that never returns (a hung mount, a stuck driver)
        yield from _frames(1)

    pipeline = _pipeline(layout, models, read_timeout_s=1.0, first_read_timeout_s=1.5)
    start = time.monotonic()
    try:
        with pytest.raises(PipelineFailed, match="no frame for"):
            pipeline.run(frames(), sinks=_sinks(tmp_path, layout))
    finally:
        release.set()
    assert time.monotonic() - start < 20
    assert _left(tmp_path) == []
    with pytest.raises(ValueError, match="read_timeout_s"):
        PipelineConfig(read_timeout_s=0)


@pytest.mark.parametrize(("metapixels_odd", "scale"), [(False, 4), (True, 1), (True, 3)])
def test_the_overlay_is_h264_that_browsers_play(tmp_path, layout, models, metapixels_odd, scale):
    av = pytest.importorskip("av")
    from hyplex.pipeline.types import FrameResult

    height, width = (31, 45) if metapixels_odd else layout.metapixels
    writer = OverlayVideoWriter(tmp_path / "o.mp4", N_CLASSES, fps=12.5, scale=scale)
    rng = np.random.default_rng(0)
    for index in range(6):
        labels = rng.integers(0, N_CLASSES, (height, width))
        writer.write(FrameResult(index, index, labels=labels, intensity=labels * 1.0))
    writer.close()
    with av.open(str(tmp_path / "o.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.format.name == "yuv420p"
        assert stream.width % 2 == 0 and stream.height % 2 == 0
        assert stream.width >= width * scale and stream.height >= height * scale
        assert abs(float(stream.average_rate) - 12.5) < 1e-6
        assert sum(1 for _ in container.decode(video=0)) == 6
    with pytest.raises(ValueError, match="fps"):
        OverlayVideoWriter(tmp_path / "p.mp4", N_CLASSES, fps=0)


# --- hyplex segment ------------------------------------------------------------------------


def _recording(path, frames):
    with Recorder(path, StreamSpec(SHAPE, PixelFormat.MONO12)) as recorder:
        for i, data in enumerate(frames):
            recorder.write(Frame(data, frame_id=i, seq=i, host_timestamp_ns=i))


@pytest.fixture()
def in_memory_models(monkeypatch, models):
    """Jobs get the module's models (no model files: their format is not at stake here)."""
    reconstructor, segmenter = models

    def job_models(job):
        return {
            "reconstructor": reconstructor,
            "segmenter": segmenter,
            "wavelengths_nm": None,
            "class_names": None,
            "layout": None,
        }

    monkeypatch.setattr("hyplex.pipeline.batch.job_models", job_models)


def _job(path, out, **fields):
    inference = {"input_scale_dn": 1000.0}
    return SegmentJob(str(path), str(out), bundle="memory", pitch_px=PITCH, inference=inference)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size", [20_000, 2_000, 100_000])
def test_segment_fails_fast_on_a_truncated_recording(tmp_path, in_memory_models, size):
    path = tmp_path / "cut.h5"
    _recording(path, _frames(8))
    os.truncate(path, size)
    out = tmp_path / "out"
    start = time.monotonic()
    with pytest.raises(SourceError, match="truncated"):
        segment_file(_job(path, out))
    assert time.monotonic() - start < 5
    assert not out.exists() or _left(out) == []


@pytest.fixture(scope="module")
def app():
    from hyplex.cli.video import register

    application = typer.Typer()
    register(application)

    @application.command("noop")
    def noop() -> None:  # a second command keeps typer from collapsing the app
        pass

    return application


@pytest.mark.timeout(120)
def test_segment_exits_non_zero_when_every_frame_is_corrupt(tmp_path, app, in_memory_models):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(3):  # float TIFFs full of NaN: each frame is reported as corrupt
        assert cv2.imwrite(str(folder / f"f{index}.tiff"), np.full(SHAPE, np.nan, np.float32))
    out = tmp_path / "out"
    arguments = ["segment", str(folder), "--out", str(out), "--bundle", "memory"]
    result = CliRunner().invoke(app, [*arguments, "--pitch-px", str(PITCH)])
    assert result.exit_code == 1, result.output
    assert "no usable frame" in result.output and "FAILED" in result.output
    assert _left(out) == ["segment_summary.json"]

    good = tmp_path / "clip.h5"
    _recording(good, _frames(3))
    result = CliRunner().invoke(
        app, ["segment", str(good), "--out", str(out), "--bundle", "memory", "--pitch-px", "3"]
    )
    assert result.exit_code == 0, result.output
    assert _left(out) == sorted(
        ["clip.labels.h5", "clip.overlay.mp4", "clip.stats.csv", "clip.stats.json"]
        + ["segment_summary.json"]
    )


@pytest.mark.timeout(120)
def test_segment_ctrl_c_keeps_partial_files_and_runs_no_further_input(
    tmp_path, app, in_memory_models, monkeypatch
):
    from hyplex.pipeline.outputs import StatsWriter

    write = StatsWriter.write

    def interrupted_at_the_third_frame(self, result):
        if result.index == 2:
            raise KeyboardInterrupt
        write(self, result)

    monkeypatch.setattr(StatsWriter, "write", interrupted_at_the_third_frame)
    first, second = tmp_path / "first.h5", tmp_path / "second.h5"
    _recording(first, _frames(6))
    _recording(second, _frames(6))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["segment", str(first), str(second), "--out", str(out), "--bundle", "memory"]
        + ["--pitch-px", str(PITCH)],
    )
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and ".partial." in result.output
    assert _left(out) == sorted(
        f"first.{kind}.partial.{ext}"
        for kind, ext in (("labels", "h5"), ("overlay", "mp4"), ("stats", "csv"), ("stats", "json"))
    )
    # the labels were written before the statistics sink saw frame 2
    assert list(read_decoded(out / "first.labels.partial.h5")["frame_index"]) == [0, 1, 2]
