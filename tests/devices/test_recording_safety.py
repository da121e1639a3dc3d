"""Recordings never lose data: one writer per file, no silent overwrite, truncation detected.

Each test reproduces a failure the audit found (issue 20, item 2): a second recorder on the
same file zeroed the first one's frames; re-recording truncated a file silently; a truncated
recording hung the reader inside h5py (HDF5 retries a bad metadata checksum for ever under
SWMR) or read back as zeros.
"""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hyplex.cli.devices import register
from hyplex.devices.errors import (
    RecordingError,
    RecordingExists,
    RecordingInUse,
    RecordingTruncated,
)
from hyplex.devices.frame import Frame, PixelFormat
from hyplex.devices.recorder import Recorder, Recording, StreamSpec
from hyplex.devices.swmr import superblock_end
from hyplex.devices.writer_lock import WriterLock, lock_path

# writer processes and SWMR readers: a hang fails here, with stacks
pytestmark = pytest.mark.timeout(180)

SHAPE = (48, 64)
APP_SCRIPT = (
    "import typer; from hyplex.cli.devices import register; "
    "app = typer.Typer(); register(app); app()"
)


def _frame(index):
    data = np.full(SHAPE, 1000 + index, np.uint16)
    return Frame(data, frame_id=index, seq=index, host_timestamp_ns=index)


def _record(path, n, **kwargs):
    with Recorder(path, StreamSpec(SHAPE, PixelFormat.MONO16), **kwargs) as recorder:
        for index in range(n):
            recorder.write(_frame(index))


def _frames_of(path):
    with Recording(path) as recording:
        return [int(recording[i][0, 0]) for i in range(len(recording))]


@pytest.fixture(scope="module")
def app():
    application = typer.Typer()
    register(application)
    return application


# --- one writer per file ----------------------------------------------------------------


def test_a_second_recorder_on_the_same_file_is_refused_and_the_first_keeps_its_frames(tmp_path):
    path = tmp_path / "rec.h5"
    with Recorder(path, StreamSpec(SHAPE)) as first:
        for index in range(3):
            first.write(_frame(index))
        for overwrite in (False, True):
            with pytest.raises((RecordingInUse, RecordingExists)) as caught:
                Recorder(path, StreamSpec(SHAPE), overwrite=overwrite)
            assert str(path) in str(caught.value)
            assert f"pid {os.getpid()}" in str(caught.value)  # names the other writer
        for index in range(3, 6):
            first.write(_frame(index))  # the first recorder goes on undisturbed
    assert _frames_of(path) == [1000 + i for i in range(6)]
    assert not os.path.exists(lock_path(path))  # released and removed at close


def test_a_recorder_in_another_process_is_named(tmp_path):
    path = tmp_path / "rec.h5"
    holder = textwrap.dedent(
        f"""
        import sys, time
        from hyplex.devices.recorder import Recorder, StreamSpec
        with Recorder(sys.argv[1], StreamSpec({SHAPE!r})):
            print("recording", flush=True)
            time.sleep(60)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", holder, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "recording"
        with pytest.raises(RecordingInUse, match=f"pid {process.pid}") as caught:
            Recorder(path, StreamSpec(SHAPE), overwrite=True)
        assert str(path) in str(caught.value)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        # the kernel released the dead writer's lock: the stale lock file blocks no one
        assert os.path.exists(lock_path(path))
        _record(path, 2, overwrite=True)
        assert _frames_of(path) == [1000, 1001]
    finally:
        process.kill()
        process.wait()


def test_the_lock_file_is_never_shared_by_two_holders(tmp_path):
    path = tmp_path / "x.h5"
    first = WriterLock(path)
    with pytest.raises(RecordingInUse):
        WriterLock(path)
    first.release()
    first.release()  # idempotent
    with WriterLock(path) as second:
        assert second.held
    assert not os.path.exists(lock_path(path))


def test_two_stream_commands_on_one_file(app, png_sequence, tmp_path):
    """The audit's case: `hyplex stream --record X.h5` twice, the second a few s later."""
    path = tmp_path / "twice.h5"
    first = subprocess.Popen(
        [sys.executable, "-c", APP_SCRIPT, "stream", "--camera", "sim", "--sim-shape", "96x128"]
        + ["--cycle-frames", "2", "--frame-rate-hz", "8", "--frames", "32", "--seconds", "120"]
        + ["--record", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 180
        while not (os.path.exists(lock_path(path)) and os.path.getsize(lock_path(path))):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first recorder did not start"
            time.sleep(0.1)
        second = [
            "stream",
            "--camera",
            f"opencv:{png_sequence}",
            "--record",
            str(path),
        ]
        result = CliRunner().invoke(app, second)
        assert result.exit_code == 1, result.output
        assert str(path) in result.output and f"pid {first.pid}" in result.output
        assert "--overwrite" in result.output
        result = CliRunner().invoke(app, [*second, "--overwrite"])
        assert result.exit_code == 1, result.output
        assert "being written by" in result.output and f"pid {first.pid}" in result.output
        out, err = first.communicate(timeout=180)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, err
    assert "32 frames" in out and f"recorded to {path}" in out
    with Recording(path) as recording:
        assert len(recording) == 32
        assert all(recording[i].max() > 0 for i in range(32))  # none zeroed
        assert list(recording.metadata["seq"]) == list(range(32))


# --- no silent overwrite ----------------------------------------------------------------


def test_an_existing_recording_is_kept_unless_overwrite(app, png_sequence, tmp_path):
    path = tmp_path / "take1.h5"
    _record(path, 9)
    before = path.read_bytes()
    with pytest.raises(RecordingExists, match="refusing to overwrite"):
        Recorder(path, StreamSpec(SHAPE))
    result = CliRunner().invoke(
        app, ["stream", "--camera", f"opencv:{png_sequence}", "--record", str(path)]
    )
    assert result.exit_code == 1 and "exists" in result.output and "--overwrite" in result.output
    assert path.read_bytes() == before and _frames_of(path) == [1000 + i for i in range(9)]

    with Recording(path) as old:  # a reader of the old take keeps it
        _record(path, 2, overwrite=True)
        assert len(old) == 9 and int(old[8][0, 0]) == 1008
    assert _frames_of(path) == [1000, 1001]
    result = CliRunner().invoke(
        app, ["stream", "--camera", f"opencv:{png_sequence}", "--record", str(path), "--overwrite"]
    )
    assert result.exit_code == 0, result.output
    with Recording(path) as recording:
        assert len(recording) == 12


def test_a_folder_or_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(RecordingError, match="is a folder"):
        Recorder(tmp_path, StreamSpec(SHAPE))
    with pytest.raises(RecordingError, match="does not exist"):
        Recorder(tmp_path / "no" / "rec.h5", StreamSpec(SHAPE))


# --- truncation ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size", [20_000, 500, 3_000, 60_000, "all but 100"])
def test_a_truncated_closed_recording_fails_fast(tmp_path, size):
    path = tmp_path / "cut.h5"
    _record(path, 12)
    full = path.stat().st_size
    end, writing = superblock_end(path)
    assert end == full and not writing
    os.truncate(path, full - 100 if size == "all but 100" else size)
    start = time.monotonic()
    with pytest.raises(RecordingTruncated, match=f"truncated: {path.stat().st_size} bytes"):
        Recording(path)
    assert time.monotonic() - start < 5.0  # a hang was > 300 s; margin for a loaded machine


KILLED_WRITER = textwrap.dedent(
    f"""
    import sys
    import numpy as np
    from hyplex.devices.frame import Frame
    from hyplex.devices.recorder import Recorder, StreamSpec
    with Recorder(sys.argv[1], StreamSpec({SHAPE!r})) as recorder:
        for index in range(10 ** 9):
            recorder.write(Frame(np.full({SHAPE!r}, 1000 + index, np.uint16), index, index, index))
            if index == 29:
                print("30", flush=True)
    """
)


@pytest.fixture(scope="module")
def killed_recording(tmp_path_factory):
    """A recording whose writer was killed (SIGKILL) after at least 30 frames."""
    path = tmp_path_factory.mktemp("killed") / "killed.h5"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "30"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    return path


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.02, 0.005, 0.001])
def test_a_truncated_killed_recording_fails_fast(killed_recording, tmp_path, fraction):
    """A killed SWMR writer leaves a stale end of file in the superblock: the committed
    frames' chunks are checked against the file size, and HDF5's metadata retries are
    bounded (the 20 kB cut hung for ever in h5py before)."""
    with Recording(killed_recording) as recording:
        committed = len(recording)
        assert committed >= 30
    path = tmp_path / "cut.h5"
    shutil.copy(killed_recording, path)
    os.truncate(path, max(200, int(path.stat().st_size * fraction)))
    start = time.monotonic()
    with pytest.raises(RecordingError, match="truncated|cut short|damaged"):
        Recording(path)
    assert time.monotonic() - start < 5.0


@pytest.mark.timeout(60)
def test_twenty_kilobytes_of_a_recording_fail_fast_in_a_fresh_process(killed_recording, tmp_path):
    """The audit's file: cut to 20 kB, read by a fresh process (no HDF5 cache to help)."""
    path = tmp_path / "cut20k.h5"
    shutil.copy(killed_recording, path)
    os.truncate(path, 20_000)
    script = (
        "import sys\nfrom hyplex.pipeline.sources import RecordingSource, SourceError\n"
        "try:\n    RecordingSource(sys.argv[1])\nexcept SourceError as e:\n    print(e)\n"
    )
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=50
    )
    assert result.returncode == 0, result.stderr
    assert "cut short" in result.stdout or "truncated" in result.stdout
    assert time.monotonic() - start < 30.0


@pytest.mark.timeout(120)
def test_a_recording_being_written_is_never_taken_for_a_truncated_one(tmp_path):
    """The checks race a live writer (frames, rows and index are flushed before committed is
    raised): opening and reading while it writes must never report truncation."""
    path = tmp_path / "live.h5"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "30"
        opened = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            with Recording(path) as recording:
                opened += 1
                for _ in range(5):
                    recording.refresh()
                    last = len(recording) - 1
                    assert int(recording[last][0, 0]) == (1000 + last) % 65536
    finally:
        process.kill()
        process.wait()
    assert opened >= 10
