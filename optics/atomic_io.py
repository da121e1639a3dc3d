"""Atomic, durable writes of files and directories: one helper for every wing.

A writer fills a uniquely named temporary (``mkstemp``/``mkdtemp`` in the target's own
directory, so two writers never share one and the rename stays on one file system), flushes
and ``fsync``s it, gives it the permissions a plain ``open()``/``mkdir()`` would have (the
temporaries are created 0600/0700), ``os.replace``s it over the target and ``fsync``s the
directory, so the rename itself survives a power cut. Readers see the old file or the new
one, never half of one; a crash at any point leaves the old file intact and at worst a
``.<name>.*.partial`` temporary beside it.

- :func:`atomic_write` ``(path, write)``: ``write(handle)`` fills a binary file handle
  (``np.savez``, ``torch.save``, ``json``...).
- :func:`atomic_path` ``(path)``: a context manager yielding the temporary's path, for
  writers that open files by name (``h5py.File(tmp, "w")``).
- :func:`atomic_directory` ``(path)``: a context manager yielding a staging directory that
  replaces ``path`` as a whole (design bundles).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_directory", "atomic_path", "atomic_write", "fsync_directory"]


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-and-restore
    os.umask(mask)
    return mask


def fsync_directory(path) -> None:
    """``fsync`` a directory, so a rename or a new entry in it reaches the disk (POSIX)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems cannot sync a directory; the files are synced
        pass
    finally:
        os.close(descriptor)


def _fsync_file(path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(path, suffix: str = ".partial") -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on a clean exit it replaces ``path``.

    The block writes the temporary by name (it exists, empty). On an exception the temporary
    is removed and ``path`` is left as it was. The parent directory is created if missing.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(descriptor)
    temporary = Path(name)
    try:
        yield temporary
        _fsync_file(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


def atomic_write(path, write: Callable) -> Path:
    """Write ``path`` atomically through ``write(handle)`` (a binary file handle); returns it.

    Example: ``atomic_write(p, lambda f: torch.save(state, f))``.
    """
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        write(handle)
        handle.flush()
    return Path(path)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync_file(Path(folder) / name)
        fsync_directory(folder)


@contextmanager
def atomic_directory(path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh staging directory beside ``path``; on a clean exit it becomes ``path``.

    With ``overwrite`` an existing ``path`` is replaced: it is renamed aside (a unique name),
    the staging directory renamed into place, and the old one removed, so ``path`` is only
    ever missing between two renames. Without it an existing ``path`` raises
    ``FileExistsError`` (checked again at the rename). Every file written is fsynced, and the
    directories too.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    )
    aside = None
    try:
        yield staging
        _fsync_tree(staging)
        os.chmod(staging, 0o777 & ~_umask())
        if target.exists():
            if not overwrite:
                raise FileExistsError(f"{target} exists")
            aside = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent)
            )
            os.replace(target, aside / target.name)
        try:
            os.replace(staging, target)
        except BaseException:
            if aside is not None:  # put the old one back
                os.replace(aside / target.name, target)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if aside is not None and not (aside / target.name).exists():
            aside.rmdir()  # empty: the old directory is back in place
        raise
    fsync_directory(target.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
