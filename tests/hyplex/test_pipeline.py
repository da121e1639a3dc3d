"""The streaming decode engine: agreement with the per-frame path, back-pressure, bad input,
outputs and Ctrl-C."""

import json
import time
import tracemalloc

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from hyplex.devices.frame import Frame, PixelFormat
from hyplex.devices.recorder import Recorder, StreamSpec
from hyplex.models.temporal import GatedLogitSmoother
from hyplex.pipeline import Pipeline, PipelineConfig
from hyplex.pipeline.inference import InferenceConfig, InferenceEngine, decode_reference
from hyplex.pipeline.outputs import (
    DecodedWriter,
    OverlayVideoWriter,
    StatsWriter,
    partial_path,
    read_decoded,
)
from hyplex.pipeline.sources import RecordingSource, SourceError
from hyplex.pipeline.stages import (
    CorruptFrame,
    DarkFlat,
    Preprocessor,
    StageQueue,
    check_frame,
    naive_barcodes,
)
from hyplex.simulation.layout import MosaicLayout

# pipeline stage threads: a hang fails here, with stacks
pytestmark = pytest.mark.timeout(120)

SHAPE = (96, 128)
N_BANDS, N_CLASSES = 34, 5


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def layout():
    return MosaicLayout.fit(SHAPE, pitch_px=3.0)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    reconstructor = nn.Sequential(nn.Conv2d(9, 16, 1), nn.ReLU(), nn.Conv2d(16, N_BANDS, 1))
    segmenter = nn.Sequential(
        nn.Conv2d(9, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, N_CLASSES, 3, padding=1)
    )
    return reconstructor.eval(), segmenter.eval()


def _frames(n, seed=0, dtype=np.uint16):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 4000, SHAPE).astype(dtype) for _ in range(n)]


class _SlowSink:
    def __init__(self, delay_s):
        self.delay_s, self.indices, self.closed = delay_s, [], False

    def write(self, result):
        time.sleep(self.delay_s)
        self.indices.append(result.index)

    def close(self, summary=None):
        self.closed = True


def test_stream_equals_per_frame_reference(layout, models):
    reconstructor, segmenter = models
    rng = np.random.default_rng(1)
    darkflat = DarkFlat(
        rng.normal(100, 5, SHAPE).astype(np.float32),
        rng.uniform(0.8, 1.2, SHAPE).astype(np.float32),
    )
    preprocessor = Preprocessor(layout, SHAPE, darkflat)
    config = InferenceConfig(batch_size=3, input_scale_dn=1000.0, bands=tuple(range(0, 34, 3)))
    engine = InferenceEngine(reconstructor, segmenter, config=config)
    frames = _frames(11)
    results = []
    summary = Pipeline(preprocessor, engine).run(frames, on_result=results.append)
    assert summary.processed == 11 and summary.dropped == 0 and not summary.errors
    assert [r.index for r in results] == list(range(11))
    assert max(r.batch for r in results) > 1  # frames were batched
    extractor = preprocessor.extractor
    for result, raw in zip(results, frames, strict=True):
        naive = naive_barcodes(
            raw,
            extractor.slots,
            extractor.n_slots,
            preprocessor.barcode_shape,
            darkflat.dark_dn,
            darkflat.flat_gain,
        )
        np.testing.assert_allclose(preprocessor(raw), naive, rtol=1e-4, atol=1e-2)
        reference = decode_reference(naive, reconstructor, segmenter, 1000.0, config.bands)
        assert result.cube.shape == (*layout.metapixels, len(config.bands))
        np.testing.assert_allclose(result.cube, reference.cube, rtol=1e-4, atol=1e-4)
        assert np.mean(result.labels != reference.labels) < 1e-3
        np.testing.assert_allclose(result.confidence, reference.confidence, atol=1e-4)


def test_optimised_cpu_path_equals_plain_nchw_reference(layout):
    """The engine's CPU path (NHWC/channels_last through oneDNN, inference_mode, two workers,
    batches) computes the same function as the plain eager NCHW per-frame path, for the
    real decoders (spectral transformer with attention levels, U-Net with BatchNorm)."""
    from hyplex.models.reconstruction import SpectralTransformer
    from hyplex.models.segmentation import UNet

    torch.manual_seed(3)
    reconstructor = SpectralTransformer(9, N_BANDS, width=16, levels=1).eval()
    segmenter = UNet(9, N_CLASSES, base_channels=8, depth=2).eval()
    preprocessor = Preprocessor(layout, SHAPE)
    config = InferenceConfig(batch_size=2, input_scale_dn=1000.0, workers=2, torch_threads=1)
    engine = InferenceEngine(reconstructor, segmenter, config=config)
    assert engine.workers == 2
    frames = _frames(5, seed=4)
    results = []
    Pipeline(preprocessor, engine).run(frames, on_result=results.append)
    assert [r.index for r in results] == list(range(5))
    for result, raw in zip(results, frames, strict=True):
        reference = decode_reference(preprocessor(raw), reconstructor, segmenter, 1000.0)
        # fp32 rounding only: NHWC kernels sum in another order than NCHW ones
        np.testing.assert_allclose(result.cube, reference.cube, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(result.confidence, reference.confidence, atol=1e-4)
        assert np.mean(result.labels != reference.labels) < 1e-3


def test_drop_oldest_counts_drops_and_bounds_memory(layout, models):
    engine = InferenceEngine(*models, config=InferenceConfig(input_scale_dn=1000.0))
    config = PipelineConfig(policy="drop_oldest", queue_frames=3)
    frames = _frames(8)
    many = (frames[i % 8] for i in range(150))  # a fast source: 150 frames, 24 kB each
    sink = _SlowSink(0.02)
    tracemalloc.start()
    summary = Pipeline(Preprocessor(layout, SHAPE), engine, config).run(many, sinks=[sink])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert summary.frames_read == 150
    assert summary.dropped > 0 and summary.processed < 150
    assert summary.processed + summary.dropped + summary.corrupt == summary.frames_read
    assert all(v <= 3 for v in summary.max_pending.values()), summary.max_pending
    assert sink.indices == sorted(sink.indices) and sink.closed
    frame_bytes = frames[0].nbytes
    assert peak < 60 * frame_bytes + 8e6, f"peak {peak / 1e6:.1f} MB: memory grew with the stream"


def test_block_policy_drops_nothing_and_blocks_the_source(layout, models):
    engine = InferenceEngine(*models, config=InferenceConfig(input_scale_dn=1000.0))
    config = PipelineConfig(policy="block", queue_frames=2)
    produced = []

    def source():
        for i, frame in enumerate(_frames(30)):
            produced.append(time.monotonic())
            yield frame
            assert i < 30

    sink = _SlowSink(0.02)
    summary = Pipeline(Preprocessor(layout, SHAPE), engine, config).run(source(), sinks=[sink])
    assert summary.dropped == 0 and summary.processed == 30 and sink.indices == list(range(30))
    assert all(v <= 2 for v in summary.max_pending.values())
    # the source was held back to the consumer's pace (30 x 20 ms), not run ahead
    assert produced[-1] - produced[0] > 0.3


def test_corrupt_frames_are_reported_and_later_frames_processed(layout, models):
    engine = InferenceEngine(*models, config=InferenceConfig(input_scale_dn=1000.0))
    frames = _frames(6)
    nan_frame = frames[0].astype(np.float32)
    nan_frame[3, 4] = np.nan
    frames[1] = np.zeros((10, 10), np.uint16)  # wrong shape
    frames[2] = frames[2].astype(np.float64)  # wrong dtype
    frames[3] = nan_frame  # NaN
    results = []
    summary = Pipeline(Preprocessor(layout, SHAPE), engine).run(frames, on_result=results.append)
    assert summary.processed == 3 and summary.corrupt == 3
    errors = dict(summary.errors)
    assert "shape (10, 10), expected (96, 128)" in errors[1]
    assert "dtype float64" in errors[2] and "uint16" in errors[2]
    assert "non-finite" in errors[3]
    assert [r.index for r in results if r.error is None] == [0, 4, 5]
    with pytest.raises(CorruptFrame, match="expected"):
        check_frame(np.zeros(SHAPE, np.int32), SHAPE, 7)


def test_recording_source_and_bad_headers(tmp_path, layout, models):
    path = tmp_path / "rec.h5"
    with Recorder(path, StreamSpec(SHAPE, PixelFormat.MONO12)) as recorder:
        for i, data in enumerate(_frames(4)):
            recorder.write(Frame(data, frame_id=10 + i, seq=i, host_timestamp_ns=i))
    engine = InferenceEngine(*models, config=InferenceConfig(input_scale_dn=1000.0))
    results = []
    summary = Pipeline(Preprocessor(layout, SHAPE), engine).run(path, on_result=results.append)
    assert summary.processed == 4 and [r.frame_id for r in results] == [10, 11, 12, 13]

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(SourceError, match="expected 'hyplex-recording'"):
        RecordingSource(foreign)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all")
    with pytest.raises(SourceError, match="not an HDF5 file"):
        RecordingSource(garbage)
    with pytest.raises(SourceError, match="no such recording"):
        RecordingSource(tmp_path / "missing.h5")


def test_outputs_are_valid_and_marked_partial_after_ctrl_c(tmp_path, layout, models):
    engine = InferenceEngine(*models, config=InferenceConfig(input_scale_dn=1000.0))

    class Interrupt:
        def __init__(self):
            self.count = 0

        def write(self, result):
            self.count += 1
            if self.count == 5:
                raise KeyboardInterrupt

        def close(self, summary=None):
            pass

    decoded = DecodedWriter(
        tmp_path / "out.h5",
        layout.metapixels,
        N_CLASSES,
        cube_bands=N_BANDS,
        wavelengths_nm=np.linspace(400, 730, N_BANDS),
    )
    video = OverlayVideoWriter(tmp_path / "overlay.mp4", N_CLASSES, fps=10, scale=4)
    stats = StatsWriter(tmp_path / "stats.csv")
    sinks = [decoded, video, stats, Interrupt()]
    summary = Pipeline(Preprocessor(layout, SHAPE), engine).run(_frames(20), sinks=sinks)
    assert summary.interrupted and summary.outcome == "partial"
    # kept under their partial names (the final names would claim a complete run)
    assert not any((tmp_path / name).exists() for name in ("out.h5", "overlay.mp4", "stats.csv"))
    stored = read_decoded(tmp_path / "out.partial.h5")
    assert stored["labels"].shape == (5, *layout.metapixels)
    assert stored["cube"].shape == (5, *layout.metapixels, N_BANDS)
    assert list(stored["frame_index"]) == [0, 1, 2, 3, 4]
    import cv2

    capture = cv2.VideoCapture(str(partial_path(tmp_path / "overlay.mp4")))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    ok, image = capture.read()
    assert ok and image.shape[:2] == (layout.metapixels[0] * 4, layout.metapixels[1] * 4)
    capture.release()
    rows = (tmp_path / "stats.partial.csv").read_text().splitlines()
    assert rows[0].startswith("index,frame_id,status,latency_ms") and len(rows) == 6
    report = json.loads((tmp_path / "stats.partial.json").read_text())
    assert report["interrupted"] and report["processed"] == summary.processed
    assert report["outcome"] == "partial"


def test_temporal_module_in_the_engine_resets_per_run(layout, models):
    reconstructor, segmenter = models
    temporal = GatedLogitSmoother(N_CLASSES)
    engine = InferenceEngine(None, segmenter, temporal, InferenceConfig(input_scale_dn=1000.0))
    pipeline = Pipeline(Preprocessor(layout, SHAPE), engine)
    frames = _frames(3)
    first, second = [], []
    pipeline.run(frames, on_result=first.append)
    pipeline.run(frames, on_result=second.append)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
    assert first[0].cube is None


def test_stage_queue_policies():
    queue = StageQueue(2, "drop_oldest")
    for i in range(5):
        queue.put(i)
    assert [queue.get(0.1), queue.get(0.1)] == [3, 4] and queue.stats.dropped == 3
    with pytest.raises(ValueError, match="capacity"):
        StageQueue(0)
    with pytest.raises(ValueError, match="newest_only"):
        PipelineConfig(policy="newest_only")
    with pytest.raises(ValueError, match="reconstructor, a segmenter"):
        InferenceEngine()
