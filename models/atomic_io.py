"""Atomic, durable file writes for checkpoints and caches.

A uniquely named temporary file in the target's directory (so no two writers share it) is
written, flushed and fsynced, then ``os.replace``d over the target: readers see the old file
or the new one, never half of one, and a crash at any point leaves the old file intact.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path, write: Callable, shared: bool = False, sync_directory: bool = False):
    """Write ``path`` atomically through ``write(handle)`` (a binary file handle).

    Parameters
    ----------
    path : str or Path
        The target; its directory is created if missing.
    write : callable(handle) -> None
        Writes the content (e.g. ``lambda f: torch.save(state, f)``).
    shared : bool
        Give the file the permissions a plain ``open()`` would (``mkstemp`` makes it 0600),
        for caches other users read.
    sync_directory : bool
        Also fsync the directory, so the rename itself survives a power cut (POSIX).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".partial", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if shared:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if sync_directory and hasattr(os, "O_DIRECTORY"):
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        except OSError:  # some file systems cannot sync a directory; the file itself is synced
            pass
        finally:
            os.close(directory)
