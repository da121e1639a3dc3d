"""Recorder and Recording: round trip, lookup by time, export, and crash safety (SIGKILL)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from hyplex.devices.clock import VirtualClock
from hyplex.devices.frame import Frame, PixelFormat
from hyplex.devices.opencv_camera import OpenCVCamera
from hyplex.devices.recorder import Recorder, Recording, StreamSpec, record
from hyplex.devices.sim_camera import SimulatedCamera

# writer threads and killed writer processes: a hang fails here, with stacks
pytestmark = pytest.mark.timeout(120)


def _frame(index, shape=(6, 8), dtype=np.uint16, **extra):
    return Frame(
        data=np.full(shape, index, dtype),
        frame_id=10 + index,
        seq=index,
        host_timestamp_ns=1_000_000_000 + index * 50_000_000,
        exposure_us=100.0 + index,
        gain_db=1.5,
        pixel_format=PixelFormat.MONO16 if dtype == np.uint16 else PixelFormat.MONO8,
        device_timestamp_ns=index * 40_000_000,
        extra=extra,
    )


def test_round_trip_with_metadata_and_extra_fields(tmp_path):
    path = tmp_path / "rec.h5"
    spec = StreamSpec((6, 8), PixelFormat.MONO16, ("wavelength_nm",), {"model": "test"})
    with Recorder(path, spec) as recorder:
        for index in range(5):
            recorder.write(_frame(index, wavelength_nm=400.0 + index))
        with pytest.raises(ValueError, match="does not match"):
            recorder.write(_frame(0, shape=(3, 3)))
    with Recording(path) as recording:
        assert len(recording) == 5 and recording.attrs["model"] == "test"
        assert recording.pixel_format is PixelFormat.MONO16
        frame = recording.frame(3)
        assert np.all(frame.data == 3) and frame.frame_id == 13 and frame.seq == 3
        assert frame.exposure_us == 103.0 and frame.gain_db == 1.5
        assert frame.device_timestamp_ns == 120_000_000
        assert frame.extra == {"wavelength_nm": 403.0}
        assert np.all(recording[-1] == 4)
        with pytest.raises(IndexError):
            recording[5]


def test_frames_by_time(tmp_path):
    path = tmp_path / "rec.h5"
    with Recorder(path, StreamSpec((6, 8))) as recorder:
        for index in range(10):
            recorder.write(_frame(index))
    with Recording(path) as recording:
        assert recording.index_at(0.0) == 0
        assert recording.index_at(0.124) == 2  # host frames every 50 ms
        assert recording.index_at(0.15) == 3
        assert recording.frame_at(0.2, clock="device").seq == 5  # device every 40 ms
        assert recording.index_at(99.0) == 9
        with pytest.raises(IndexError):
            recording.index_at(-1.0)


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_export_keeps_16_bits_and_reads_back_as_a_camera(tmp_path, fmt):
    path = tmp_path / "rec.h5"
    with Recorder(path, StreamSpec((6, 8))) as recorder:
        for index in range(4):
            recorder.write(_frame(1000 * index))
    with Recording(path) as recording:
        paths = recording.export(tmp_path / "out", fmt)
    assert len(paths) == 4
    with OpenCVCamera(str(tmp_path / "out" / f"frame_%06d.{fmt}")) as camera:
        camera.start()
        values = [int(f.data[0, 0]) for f in camera.frames(timeout=5)]
    assert values == [0, 1000, 2000, 3000]


def test_record_a_simulated_stream(twin, scene, tmp_path):
    path = tmp_path / "sim.h5"
    with SimulatedCamera(scene, twin, clock=VirtualClock(), seed=4) as camera:
        summary = record(camera, path, n_frames=8, buffer_frames=3)
        reference = camera.snap()  # same noise stream position differs; compare statistics
    assert summary.frames == 8 and summary.stats.dropped == 0
    with Recording(path) as recording:
        assert len(recording) == 8
        table = recording.metadata
        assert list(table["seq"]) == list(range(8))
        assert np.all(np.diff(table["device_timestamp_ns"]) > 0)
        assert recording.attrs["backend"] == "sim"
        assert abs(recording[3].mean() - reference.data.mean()) < 0.05 * reference.data.mean()


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from hyplex.devices.frame import Frame, PixelFormat
    from hyplex.devices.recorder import Recorder, StreamSpec

    shape = (120, 160)
    with Recorder(sys.argv[1], StreamSpec(shape, PixelFormat.MONO16, ("index",))) as recorder:
        index = 0
        while True:
            data = np.full(shape, index % 65536, np.uint16)
            data[0, :4] = np.frombuffer(np.int64(index).tobytes(), np.uint16)
            recorder.write(Frame(data, index, index, index, 1.0, 0.0, PixelFormat.MONO16,
                                 extra={"index": float(index)}))
            print(index + 1, flush=True)
            index += 1
    """
)


def test_sigkill_during_recording_leaves_every_committed_frame(tmp_path):
    path = tmp_path / "killed.h5"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        reported = 0
        while reported < 40 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            reported = int(line)
        assert reported >= 40, "the writer did not get going"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    with pytest.raises(OSError):  # a plain open refuses: the writer never closed the file
        h5py.File(path, "r")
    with Recording(path) as recording:
        count = len(recording)
        assert count >= reported  # every frame reported written (flushed) is there
        table = recording.metadata
        assert list(table["seq"]) == list(range(count))
        assert list(table["index"]) == list(range(count))
        for index in range(count):
            data = recording[index]
            assert np.frombuffer(data[0, :4].tobytes(), np.int64)[0] == index
            assert np.all(data[1:] == index % 65536)
