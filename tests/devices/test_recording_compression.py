"""Lossless compressed recording: Blosc2 chunks readable by plain h5py, Mono12p packing,
the write queue's honest drops, the throttle, a full disk and a killed writer (issue 19)."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import h5py
import numpy as np
import pytest

from hyplex.devices import recording_target
from hyplex.devices.bitpack import pack_mono12p, unpack_mono12p
from hyplex.devices.clock import VirtualClock
from hyplex.devices.compression import (
    BLOSC2_FILTER_ID,
    FrameEncoding,
    PluginBlosc2,
    decode_chunk,
    encode_frame,
    require_codec,
)
from hyplex.devices.errors import RecordingError
from hyplex.devices.frame import Frame, PixelFormat
from hyplex.devices.recorder import (
    DiskSpaceWarning,
    Recorder,
    Recording,
    RecordingDiskFull,
    StreamSpec,
    record,
)
from hyplex.devices.sim_camera import SimulatedCamera
from hyplex.devices.throttle import TokenBucket
from hyplex.optics.extras import MissingExtraError

pytestmark = pytest.mark.timeout(120)

SHAPE = (60, 80)


def _sensor_frames(n, shape=SHAPE, electrons=400.0, seed=0):
    """12-bit frames like a sensor's: black level 16 DN, shot noise, K = 0.4 DN/e-."""
    rng = np.random.default_rng(seed)
    signal = rng.poisson(electrons, (n, *shape)) * 0.4 + 16
    return np.clip(np.rint(signal), 0, 4095).astype(np.uint16)


def _frame(data, index):
    return Frame(data, index, index, 1_000 + index, pixel_format=PixelFormat.MONO12)


def _spec(shape=SHAPE, pixel_format=PixelFormat.MONO12):
    return StreamSpec(shape, pixel_format)


# --- Mono12p --------------------------------------------------------------------------------


def test_mono12p_byte_order_is_pfnc():
    """PFNC Mono12p is LSB-first: p0 = b0 | (b1 & 0xF) << 8, p1 = b1 >> 4 | b2 << 4 (not the
    GigE Vision Mono12Packed order, which would give bytes ab 3c 12 here)."""
    packed = pack_mono12p(np.array([[0xABC, 0x123]], np.uint16))
    assert packed.tobytes() == bytes([0xBC, 0x3A, 0x12])
    # harvesters' PFNC conversion reads these two triplets as (0xFFF, 0) and (0, 0xFFF)
    raw = np.frombuffer(bytes([0xFF, 0x0F, 0x00, 0x00, 0xF0, 0xFF]), np.uint8)
    assert unpack_mono12p(raw, (1, 4)).tolist() == [[0xFFF, 0, 0, 0xFFF]]


def test_mono12p_round_trip_is_exact():
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 4096, (37, 64), dtype=np.uint16)
    frame[0, :4] = [0, 4095, 4095, 0]
    packed = pack_mono12p(frame)
    assert packed.shape == (37, 96) and packed.dtype == np.uint8
    assert np.array_equal(unpack_mono12p(packed, frame.shape), frame)
    with pytest.raises(ValueError, match="reaches 4096"):
        pack_mono12p(np.full((2, 2), 4096, np.uint16))
    with pytest.raises(ValueError, match="even frame width"):
        pack_mono12p(np.zeros((2, 3), np.uint16))


# --- codec ----------------------------------------------------------------------------------


@pytest.mark.parametrize("compression, gain", [("lz4", 1.3), ("zstd", 1.1)])
def test_bit_shuffle_is_what_compresses_sensor_frames(compression, gain):
    """The codec is Blosc2 *with* bit-shuffle: on 12-bit shot-noise frames it stores ``gain``
    times less than the same codec without the shuffle (LZ4, a pure dictionary coder, gains
    most; Zstandard's entropy stage recovers part of it alone)."""
    import blosc2

    frame = _sensor_frames(1, (240, 320))[0]
    encoding = FrameEncoding(frame.shape, frame.dtype, compression, threads=2)
    plugin = PluginBlosc2.load()  # hdf5plugin's C-Blosc2, called without the GIL
    assert plugin is not None
    stored = encode_frame(encoding, frame, plugin)
    assert np.array_equal(decode_chunk(encoding, stored), frame)
    # python-blosc2's path makes the same kind of chunk
    assert np.array_equal(decode_chunk(encoding, encode_frame(encoding, frame)), frame)
    codec = blosc2.Codec.LZ4 if compression == "lz4" else blosc2.Codec.ZSTD
    plain = blosc2.compress2(frame, typesize=2, clevel=1, codec=codec, filters=[])
    assert frame.nbytes / len(stored) > gain * frame.nbytes / len(plain)
    assert frame.nbytes / len(stored) > 1.5


@pytest.mark.parametrize("queue_frames", [0, 3])
@pytest.mark.parametrize(
    "compression, packing",
    [("lz4", None), ("zstd", None), ("zstd", "mono12p"), ("none", "mono12p")],
)
def test_compressed_recording_round_trip(tmp_path, compression, packing, queue_frames):
    path = tmp_path / "rec.h5"
    frames = _sensor_frames(7)
    with Recorder(
        path,
        _spec(),
        compression=compression,
        packing=packing,
        queue_frames=queue_frames,
        block_when_full=True,
    ) as recorder:
        for index, data in enumerate(frames):
            assert recorder.write(_frame(data, index)) == index
        recorder.flush()  # waits for the queue: every accepted frame is committed
        assert recorder.flushed() == 7
    assert recorder.dropped == 0 and recorder.compression_ratio > 1.2
    with Recording(path) as recording:
        assert len(recording) == 7 and recording.compression == compression
        for index in range(7):
            assert np.array_equal(recording[index], frames[index])
        assert recording.frame(4).frame_id == 4
    with h5py.File(path, "r") as handle:  # plain h5py (hdf5plugin imported by the recorder)
        dataset = handle["streams/camera/frames"]
        plist = dataset.id.get_create_plist()
        filters = [plist.get_filter(k)[0] for k in range(plist.get_nfilters())]
        assert (BLOSC2_FILTER_ID in filters) == (compression != "none")
        chunk = dataset.id.get_chunk_info(0)
        assert chunk.size < frames[0].nbytes  # what is on disk is smaller
        if packing is None:
            assert np.array_equal(dataset[:], frames)


def test_a_fresh_process_reads_it_with_plain_h5py_and_hdf5plugin(tmp_path):
    path = tmp_path / "rec.h5"
    frames = _sensor_frames(3)
    with Recorder(
        path, _spec(), compression="zstd", queue_frames=2, block_when_full=True
    ) as recorder:
        for index, data in enumerate(frames):
            recorder.write(_frame(data, index))
    script = (
        "import sys, h5py, hdf5plugin, numpy as np\n"
        "f = h5py.File(sys.argv[1], 'r')\n"
        "print(int(f['streams/camera/frames'][:].astype(np.int64).sum()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == int(frames.astype(np.int64).sum())


def test_a_missing_codec_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "hdf5plugin", None)  # import hdf5plugin now fails
    with pytest.raises(MissingExtraError, match="hdf5plugin.*pip install"):
        require_codec("zstd")
    assert require_codec("none").value == "none"  # raw recording needs neither
    with pytest.raises(ValueError, match="unknown compression 'gzip'"):
        require_codec("gzip")


def test_packing_needs_a_12_bit_stream(tmp_path):
    with pytest.raises(ValueError, match="12-bit pixels.*Mono16"):
        Recorder(tmp_path / "r.h5", _spec(pixel_format=PixelFormat.MONO16), packing="mono12p")
    assert not (tmp_path / "r.h5").exists()


# --- throttle and bounded queue -------------------------------------------------------------


def test_token_bucket_holds_the_rate():
    clock = VirtualClock()
    bucket = TokenBucket(10e6, burst_bytes=1e6, clock=clock)
    for _ in range(50):
        bucket.consume(1_000_000)
    # 50 MB at 10 MB/s, less the 1 MB the full bucket held at the start
    assert clock.now_ns() * 1e-9 == pytest.approx(4.9, abs=1e-6)
    clock.advance(10.0)  # idle: the bucket refills to its burst, no further
    assert bucket.consume(1_000_000) == 0.0
    assert bucket.consume(500_000) == pytest.approx(0.05)


def test_throttled_recorder_writes_at_the_throttle(tmp_path):
    clock = VirtualClock()
    frames = _sensor_frames(10)
    with Recorder(tmp_path / "t.h5", _spec(), throttle_MBps=1.0, clock=clock) as recorder:
        for index, data in enumerate(frames):
            recorder.write(_frame(data, index))
    stored = recorder.bytes_written
    assert stored == frames.nbytes
    burst = 0.05 * 1e6
    assert clock.now_ns() * 1e-9 == pytest.approx((stored - burst) / 1e6, rel=1e-6)


def test_a_full_write_queue_drops_and_records_every_drop(tmp_path):
    """The writer is held to 0.5 MB/s (a 9.6 kB frame per 19 ms); the caller offers 30
    frames at once into a queue of 2: most are dropped, each drop counted and its row kept,
    and every frame that was accepted is in the file, in order, intact."""
    path = tmp_path / "q.h5"
    frames = _sensor_frames(30)
    accepted = []
    with Recorder(path, _spec(), queue_frames=2, throttle_MBps=0.5) as recorder:
        for index, data in enumerate(frames):
            if recorder.write(_frame(data, index)) is not None:
                accepted.append(index)
    assert recorder.dropped == 30 - len(accepted) >= 20
    with Recording(path) as recording:
        assert len(recording) == len(accepted)
        assert list(recording.metadata["seq"]) == accepted
        for position, index in enumerate(accepted):
            assert np.array_equal(recording[position], frames[index])
        dropped = list(recording.dropped["seq"])
    assert sorted(dropped + accepted) == list(range(30)) and dropped == sorted(dropped)


def test_handed_over_ring_slots_are_recorded_and_released(twin, scene, tmp_path):
    """``write(frame, take=True)``: the encoder reads the ring slot itself (no copy) and the
    queue releases it; a slot that were never released would stall the 3-slot ring within
    a few frames (the read below would time out)."""
    from hyplex.devices.errors import StreamEnded

    path = tmp_path / "handed.h5"
    with SimulatedCamera(scene, twin, clock=VirtualClock(), cycle_frames=2, seed=5) as camera:
        expected = [camera.render_raw(k).copy() for k in range(2)]
        spec = StreamSpec.for_camera(camera)
        camera.start(n=12, buffer_frames=3)
        ids = []
        with Recorder(
            path, spec, compression="zstd", queue_frames=2, block_when_full=True
        ) as recorder:
            while True:
                try:
                    frame = camera.read(timeout=10.0, copy=False)
                except StreamEnded:
                    break
                ids.append(frame.frame_id)
                recorder.write(frame, take=True)
        camera.stop()
    assert len(ids) == 12
    with Recording(path) as recording:
        assert len(recording) == 12
        for index, frame_id in enumerate(ids):
            assert np.array_equal(recording[index], expected[frame_id % 2])


# --- full disk ------------------------------------------------------------------------------


def _disk_fills_after(recorder, n_chunks, monkeypatch):
    write = recorder.write_chunk
    calls = {"n": 0}

    def write_chunk(frames, index, payload):
        calls["n"] += 1
        if calls["n"] > n_chunks:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(frames, index, payload)

    monkeypatch.setattr(recorder, "write_chunk", write_chunk)


@pytest.mark.parametrize("queue_frames", [0, 2])
def test_a_full_disk_stops_cleanly_with_a_valid_file(tmp_path, monkeypatch, queue_frames):
    path = tmp_path / "full.h5"
    frames = _sensor_frames(12)
    recorder = Recorder(
        path, _spec(), compression="lz4", queue_frames=queue_frames, block_when_full=True
    )
    _disk_fills_after(recorder, 5, monkeypatch)
    with pytest.raises(RecordingDiskFull, match="full.*valid.*camera: 5"):
        for index, data in enumerate(frames):
            recorder.write(_frame(data, index))
            if queue_frames:
                time.sleep(0.02)  # let the writer reach the full disk
    recorder.close()
    with Recording(path) as recording:
        assert len(recording) == 5
        for index in range(5):
            assert np.array_equal(recording[index], frames[index])


def test_record_stops_at_a_full_disk_and_says_so(twin, scene, tmp_path, monkeypatch):
    path = tmp_path / "sim.h5"
    created = []
    original = Recorder.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        created.append(self)
        _disk_fills_after(self, 3, monkeypatch)

    monkeypatch.setattr(Recorder, "__init__", spy)
    with SimulatedCamera(scene, twin, clock=VirtualClock(), seed=2) as camera:
        summary = record(camera, path, n_frames=10, compression="zstd")
    assert summary.error is not None and "full" in summary.error
    assert summary.frames == 3
    with Recording(path) as recording:
        assert len(recording) == 3


def test_too_little_disk_is_a_warning_before_the_start(tmp_path, monkeypatch):
    usage = recording_target.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        recording_target.shutil, "disk_usage", lambda folder: usage._replace(free=10_000_000)
    )
    with pytest.warns(DiskSpaceWarning, match="0.01 GB free.*0.10 GB"):
        Recorder(tmp_path / "a.h5", _spec(), expected_frames=10_417, compression="lz4").close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Recorder(tmp_path / "b.h5", _spec(), expected_frames=100).close()


# --- SIGKILL --------------------------------------------------------------------------------

KILLED_WRITER = textwrap.dedent(
    f"""
    import sys
    import numpy as np
    from hyplex.devices.frame import Frame, PixelFormat
    from hyplex.devices.recorder import Recorder, StreamSpec
    spec = StreamSpec({SHAPE!r}, PixelFormat.MONO12)
    rng = np.random.default_rng(0)
    with Recorder(sys.argv[1], spec, compression="zstd", packing=sys.argv[2],
                  queue_frames=4, block_when_full=True) as recorder:
        for index in range(10 ** 9):
            data = np.clip(rng.poisson(300, {SHAPE!r}), 0, 4095).astype(np.uint16)
            data[0, :4] = np.frombuffer(np.int64(index).tobytes(), np.uint16) & 0xFFF
            data[1, :4] = np.frombuffer(np.int64(index).tobytes(), np.uint16) >> 12
            recorder.write(Frame(data, index, index, index, pixel_format=PixelFormat.MONO12))
            print(recorder.flushed(), flush=True)
    """
)


@pytest.mark.parametrize("packing", ["none", "mono12p"])
def test_sigkill_during_a_compressed_queued_recording_keeps_every_flushed_frame(tmp_path, packing):
    path = tmp_path / "killed.h5"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path), packing], stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        flushed = 0
        while flushed < 30 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            flushed = int(line)
        assert flushed >= 30, "the writer did not get going"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    with pytest.raises(OSError):
        h5py.File(path, "r")  # the writer never closed it
    with Recording(path) as recording:
        count = len(recording)
        assert count >= flushed
        assert list(recording.metadata["seq"]) == list(range(count))
        for index in range(count):
            data = recording[index].astype(np.int64)
            low, high = data[0, :4], data[1, :4]
            assert (
                int(np.frombuffer((low | high << 12).astype(np.uint16).tobytes(), np.int64)[0])
                == index
            )


def test_write_after_a_failure_is_refused_with_the_cause(tmp_path, monkeypatch):
    recorder = Recorder(tmp_path / "e.h5", _spec())

    def broken(frames, index, payload):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(recorder, "write_chunk", broken)
    data = _sensor_frames(1)[0]
    with pytest.raises(RecordingError, match="failed.*Input/output"):
        recorder.write(_frame(data, 0))
    with pytest.raises(RecordingError, match="Input/output"):
        recorder.write(_frame(data, 1))
    recorder.close()
    with Recording(tmp_path / "e.h5") as recording:
        assert len(recording) == 0


# --- command line ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app():
    import typer

    from hyplex.cli.devices import register

    application = typer.Typer()
    register(application)
    return application


def test_stream_records_compressed_frames(app, png_sequence, tmp_path):
    from typer.testing import CliRunner

    path = tmp_path / "cli.h5"
    camera = ["stream", "--camera", f"opencv:{png_sequence}", "--record", str(path)]
    result = CliRunner().invoke(app, [*camera, "--compression", "zstd", "--queue-frames", "2"])
    assert result.exit_code == 0, result.output
    assert "12 frames" in result.output and "zstd" in result.output
    with Recording(path) as recording:
        assert len(recording) == 12 and recording.compression == "zstd"
        for index in range(12):  # frame i: 100 i + column, 40 x 56 (conftest)
            expected = (100 * index + np.arange(56, dtype=np.uint16))[None, :].repeat(40, 0)
            assert np.array_equal(recording[index], expected)

    result = CliRunner().invoke(app, [*camera, "--overwrite", "--compression", "gzip"])
    assert result.exit_code == 2 and "unknown compression 'gzip'" in result.output
    result = CliRunner().invoke(app, [*camera, "--overwrite", "--packing", "mono12p"])
    assert result.exit_code == 1 and "12-bit pixels" in result.output


def test_compression_releases_the_gil():
    """The encoder compresses through hdf5plugin's C-Blosc2 via ctypes, which releases the
    GIL: a Python thread keeps running during the call (with python-blosc2 it would stall
    for the whole call, stalling the camera's acquisition thread with it)."""
    import threading

    import blosc2

    frame = _sensor_frames(1, (600, 800))[0]
    plugin = PluginBlosc2.load()

    def spins_during(compress) -> int:
        done = threading.Event()
        thread = threading.Thread(target=lambda: (compress(), done.set()))
        count = 0
        thread.start()
        while not done.is_set():
            count += 1
        thread.join()
        return count

    def slow_plugin():
        plugin.compress(frame, "zstd", 9, 1)

    def slow_python():
        blosc2.compress2(frame, typesize=2, clevel=9, codec=blosc2.Codec.ZSTD, nthreads=1)

    spins_python, spins_plugin = spins_during(slow_python), spins_during(slow_plugin)
    assert spins_plugin > 5 * spins_python + 1000


def test_the_pipeline_source_reads_packed_compressed_recordings(tmp_path):
    """``hyplex segment`` reads recordings through RecordingSource: a Mono12p + zstd file
    yields the original (H, W) uint16 frames."""
    from hyplex.pipeline.sources import RecordingSource

    path = tmp_path / "packed.h5"
    frames = _sensor_frames(4)
    with Recorder(path, _spec(), compression="zstd", packing="mono12p") as recorder:
        for index, data in enumerate(frames):
            recorder.write(_frame(data, index))
    source = RecordingSource(path)
    try:
        items = list(source)
    finally:
        source.close()
    assert len(items) == 4 and source.sensor_shape == SHAPE
    for item, data in zip(items, frames, strict=True):
        assert item.error is None and np.array_equal(item.data, data)


def test_a_version_1_recording_without_the_dropped_table_still_reads(tmp_path):
    path = tmp_path / "v1.h5"
    frames = _sensor_frames(2)
    with Recorder(path, _spec()) as recorder:
        for index, data in enumerate(frames):
            recorder.write(_frame(data, index))
    with h5py.File(path, "a") as handle:  # as version 1 wrote it
        group = handle["streams/camera"]
        del group["dropped"]
        for key in ("compression", "packing"):
            del group.attrs[key]
        handle.attrs["version"] = 1
    with Recording(path) as recording:
        assert len(recording) == 2 and recording.dropped.shape == (0,)
        assert recording.compression == "none" and np.array_equal(recording[1], frames[1])
