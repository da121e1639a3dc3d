"""``WriterLock``: one writer per file, enforced with ``flock`` on a sidecar ``<file>.lock``.

HDF5's own file lock does not protect a recording: SWMR writing (``swmr_mode = True``) drops
it, so a second writer could open the same file and overwrite the first one's frames. A
recorder (and every pipeline output) therefore holds an exclusive ``fcntl.flock`` on
``<file>.lock`` for as long as it writes:

- a second writer, in this process or another, fails at once with
  :class:`~hyplex.devices.errors.RecordingInUse` naming the file and the holder (pid, host,
  command, start time, as the holder wrote them into the lock file);
- the kernel releases the lock when the holder's process dies (SIGKILL included), so a stale
  ``.lock`` file never blocks: the next writer takes it over;
- the holder deletes the lock file when it releases it; a writer that opened the file just
  before its deletion notices (the path no longer names the file it locked) and retries.

Readers take no lock. On NFS, ``flock`` is emulated with ``fcntl`` locks, which protect
against other hosts but not against a second writer in the same process.
"""

from __future__ import annotations

import datetime
import os
import socket
import sys

from hyplex.devices.errors import RecordingInUse

LOCK_SUFFIX = ".lock"

__all__ = ["WriterLock", "lock_path", "lock_holder", "LOCK_SUFFIX"]


def lock_path(path) -> str:
    """The sidecar lock file of ``path``: ``<path>.lock``."""
    return os.fspath(path) + LOCK_SUFFIX


def lock_holder(path) -> str | None:
    """What the current holder of ``path``'s lock wrote about itself, or None if the lock
    file is absent or empty (this does not test whether the lock is held)."""
    try:
        with open(lock_path(path), encoding="utf-8", errors="replace") as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return text or None


class WriterLock:
    """An exclusive, non-blocking writer lock on ``path`` (see the module doc).

    Parameters
    ----------
    path : str or Path
        The file that is written (the lock itself is ``<path>.lock``).
    what : str
        What the holder writes, for the error a second writer sees ("recording", "output").

    Raises
    ------
    RecordingInUse
        Another writer holds the lock.
    """

    def __init__(self, path, what: str = "recording"):
        import fcntl

        self.path, self.lock_file = os.fspath(path), lock_path(path)
        while True:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = lock_holder(self.path) or "another writer (it has not said who yet)"
                raise RecordingInUse(
                    f"{self.path} is being written by {holder}; wait for it to finish, stop "
                    f"it, or write to another file (lock: {self.lock_file})"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # A holder deletes the lock file when it releases it: make sure the path still
            # names the file we locked, or a third writer could lock a new file beside us.
            try:
                current = os.stat(self.lock_file)
            except FileNotFoundError:
                os.close(fd)
                continue
            mine = os.fstat(fd)
            if (mine.st_dev, mine.st_ino) != (current.st_dev, current.st_ino):
                os.close(fd)
                continue
            break
        self._fd: int | None = fd
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
        info = f"pid {os.getpid()} on {socket.gethostname()} ({what} since {started}: {command})"
        os.ftruncate(fd, 0)
        os.pwrite(fd, (info + "\n").encode("utf-8", "replace"), 0)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Delete the lock file and release the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.lock_file)  # while still holding it (see the module doc)
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
