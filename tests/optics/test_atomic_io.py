"""Atomic writes (hyplex.optics.atomic_io): a crash leaves the old file, writers never share
a temporary, the data and the rename are fsynced, permissions are those of a plain open."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hyplex.optics import atomic_io
from hyplex.optics.atomic_io import atomic_directory, atomic_path, atomic_write


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")

    def half(handle):
        handle.write(b"new, but not all of it")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_a_crash_at_the_rename_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")

    def crash(source, destination):
        raise KeyboardInterrupt  # stands for the process dying between write and rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, lambda handle: handle.write(b"new"))
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]


KILLED = """
import sys, time
from hyplex.optics.atomic_io import atomic_write

def slow(handle):
    handle.write(b"new")
    handle.flush()
    print("written", flush=True)
    time.sleep(60)

atomic_write(sys.argv[1], slow)
"""


@pytest.mark.timeout(120)
def test_a_process_killed_between_write_and_rename_leaves_the_old_file(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "written"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert target.read_bytes() == b"old"
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].startswith(".data.bin.")  # hidden, unique
    atomic_write(target, lambda handle: handle.write(b"new"))  # the next writer is unaffected
    assert target.read_bytes() == b"new"


def test_two_writers_never_share_a_temporary(tmp_path):
    target = tmp_path / "shared.bin"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        first.write_bytes(b"first")
        second.write_bytes(b"second")
    assert target.read_bytes() == b"first"  # the last to finish wins, whole

    contents = [bytes([i]) * 200_000 for i in range(8)]
    barrier = threading.Barrier(len(contents))

    def write(data):
        barrier.wait()
        atomic_write(target, lambda handle: handle.write(data))

    threads = [threading.Thread(target=write, args=(data,)) for data in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert target.read_bytes() in contents
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]


def test_the_data_is_fsynced_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "fsync")
        real_fsync(descriptor)

    def replace(source, destination):
        events.append("replace")
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write(tmp_path / "x.bin", lambda handle: handle.write(b"x"))
    assert events == ["fsync", "replace", "fsync-dir"]


def test_permissions_are_those_of_a_plain_open(tmp_path):
    old = os.umask(0o027)
    try:
        plain = tmp_path / "plain.bin"
        plain.write_bytes(b"")
        written = atomic_write(tmp_path / "atomic.bin", lambda handle: handle.write(b""))
        assert _mode(written) == _mode(plain) == 0o640
        assert atomic_io._umask() == 0o027
        with atomic_directory(tmp_path / "bundle") as staging:
            (staging / "a.json").write_text("{}")
        (tmp_path / "plain_dir").mkdir()
        assert _mode(tmp_path / "bundle") == _mode(tmp_path / "plain_dir")
    finally:
        os.umask(old)


def test_a_directory_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "bundle"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"

    with pytest.raises(FileExistsError), atomic_directory(target) as staging:
        (staging / "a.txt").write_text("two")
    with pytest.raises(RuntimeError), atomic_directory(target, overwrite=True) as staging:
        (staging / "a.txt").write_text("two")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert (target / "a.txt").read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no staging or old copy left

    with atomic_directory(target, overwrite=True) as staging:
        (staging / "b.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
