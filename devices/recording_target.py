"""Where a recording goes: checks of the target file, of the free space, and a full disk.

A failed write (a full disk: ``OSError`` ENOSPC) stops a recording cleanly: nothing more is
written or flushed, ``committed`` keeps the last frames that were wholly written, the file
stays readable, and the next :meth:`~hyplex.devices.recorder.Recorder.write` raises
:class:`RecordingDiskFull` (or ``RecordingError``), the error :func:`stopped_error` makes.
:func:`check_disk_space` warns before a recording whose uncompressed size exceeds the free
space; :func:`check_target` refuses a file that exists, a folder, a missing folder.
"""

from __future__ import annotations

import errno
import os
import shutil
import warnings

from hyplex.devices.compression import Compression
from hyplex.devices.errors import RecordingError, RecordingExists
from hyplex.devices.writer_lock import lock_holder

__all__ = [
    "RecordingDiskFull",
    "DiskSpaceWarning",
    "is_disk_full",
    "stopped_error",
    "check_disk_space",
    "check_target",
]


class RecordingDiskFull(RecordingError):
    """The disk filled during a recording: it stopped, the file holds every committed frame."""


class DiskSpaceWarning(UserWarning):
    """The free space may not hold the recording asked for."""


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk is full (``ENOSPC``, or HDF5's "No space left")."""
    return getattr(error, "errno", None) == errno.ENOSPC or "No space left" in str(error)


def stopped_error(path, error: BaseException, committed: str) -> RecordingError:
    """The error to raise (``from error``) once a write to the recording ``path`` failed with
    ``error``: :class:`RecordingDiskFull` for a full disk, else ``RecordingError``; both say
    the file holds the ``committed`` frames (text, e.g. ``"camera: 5"``)."""
    if is_disk_full(error):
        return RecordingDiskFull(
            f"the disk holding {path} is full: the recording stopped; the file is "
            f"valid and holds the committed frames ({committed})"
        )
    return RecordingError(
        f"writing {path} failed ({error!r}): the recording stopped; the file holds "
        f"the committed frames ({committed})"
    )


def check_disk_space(path, n_bytes: int, compression=Compression.NONE) -> int:
    """Free bytes on the disk that holds ``path``; warns (:class:`DiskSpaceWarning`) when
    fewer than ``n_bytes`` (the recording's uncompressed size: an upper bound when
    compressed, since noise can defeat a lossless codec)."""
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    free = shutil.disk_usage(folder).free
    if free < n_bytes:
        codec = Compression.parse(compression)
        note = (
            f" (uncompressed; {codec.value} typically stores 1.5-2.7x less, but noise can "
            "defeat it)"
            if codec is not Compression.NONE
            else ""
        )
        warnings.warn(
            f"{folder} has {free / 1e9:.2f} GB free but the recording may need "
            f"{n_bytes / 1e9:.2f} GB{note}; it will stop cleanly, with a valid file, when the "
            "disk fills",
            DiskSpaceWarning,
            stacklevel=3,
        )
    return free


def check_target(path, overwrite: bool = False) -> None:
    """Raise what :class:`~hyplex.devices.recorder.Recorder` would raise for ``path`` before
    it takes the lock: ``RecordingExists`` (exists, no ``overwrite``), ``RecordingError`` (a
    folder, a missing folder). A cheap early check for command lines; the recorder checks
    again under its lock.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise RecordingError(f"{path} is a folder; give a file to record into, e.g. {path}/rec.h5")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise RecordingError(f"cannot record to {path}: folder {folder} does not exist")
    if os.path.lexists(path) and not overwrite:
        holder = lock_holder(path)
        raise RecordingExists(
            f"{path} exists ({os.path.getsize(path) if os.path.isfile(path) else 0} bytes"
            + (
                f"; its lock file names a writer, {holder}, which may still be recording"
                if holder
                else ""
            )
            + "); refusing to overwrite it: give overwrite=True (hyplex stream --overwrite) "
            "or another file"
        )
