"""Checks of command-line values at the boundary, made before any work starts.

A value the user got wrong gets one line, a ``typer.BadParameter`` (exit code 2) that names
the option, the value and what was expected, instead of a traceback from deep inside a
solver, a file library or a camera. Real bugs keep their tracebacks: only the errors listed
here (and :class:`~hyplex.optics.memory.MemoryBudgetError`) are converted.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import typer

__all__ = [
    "finite",
    "input_file",
    "memory_bad_parameter",
    "output_dir",
    "output_file",
    "sim_sensor_bytes",
    "check_sim_sensor",
]


def _bad(message: str, option: str | None) -> typer.BadParameter:
    return typer.BadParameter(message, param_hint=option and f"'{option}'")


def _blocking_ancestor(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` if it is not a folder (so nothing can be
    created below it), else None."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _unwritable_ancestor(path: Path) -> Path | None:
    for parent in path.absolute().parents:
        if parent.exists():
            return None if os.access(parent, os.W_OK | os.X_OK) else parent
    return None


def output_file(path: Path | None, option: str = "--out", expected: str = "a file path"):
    """Refuse ``path`` as a file to write: an existing folder, a path below a file, or in a
    folder that cannot be written. Missing parent folders are fine (commands create them).
    Returns ``path``."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise _bad(f"{path} is a directory; expected {expected}", option)
    blocking = _blocking_ancestor(path)
    if blocking is not None:
        raise _bad(f"{path}: {blocking} is a file, not a folder; expected {expected}", option)
    unwritable = _unwritable_ancestor(path)
    if unwritable is not None and not path.exists():
        raise _bad(f"{path}: cannot create files in {unwritable} (permission denied)", option)
    return path


def output_dir(path: Path | None, option: str = "--out", expected: str = "a folder"):
    """Refuse ``path`` as a folder to write into: an existing file, or a path below a file.
    A missing folder is fine (commands create it). Returns ``path``."""
    if path is None:
        return None
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise _bad(f"{path} is a file; expected {expected} (a directory)", option)
    blocking = _blocking_ancestor(path)
    if blocking is not None:
        raise _bad(f"{path}: {blocking} is a file, not a folder; expected {expected}", option)
    return path


def input_file(path: Path | None, option: str, expected: str = "an existing file"):
    """Refuse a missing path or a folder where a file is read. Returns ``path``."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise _bad(f"{path} is a directory; expected {expected}", option)
    if not path.is_file():
        raise _bad(f"{path} does not exist; expected {expected}", option)
    return path


def finite(value: float | None, option: str, positive: bool = False, unit: str = ""):
    """Refuse NaN, inf, and (with ``positive``) values <= 0. None passes. Returns ``value``."""
    if value is None:
        return None
    if not math.isfinite(value) or (positive and value <= 0):
        expected = "a finite number > 0" if positive else "a finite number"
        raise _bad(f"{value}; expected {expected}{unit and ', in ' + unit}", option)
    return value


def memory_bad_parameter(error, options: dict[str, str] | None = None) -> typer.BadParameter:
    """A :class:`~hyplex.optics.memory.MemoryBudgetError` as a BadParameter naming the option
    (``options`` maps the error's ``setting`` to an option name; default ``--<setting>``)."""
    setting = getattr(error, "setting", None)
    hint = None
    if setting:
        hint = (options or {}).get(setting, "--" + setting.replace("_", "-"))
    return _bad(str(error), hint)


#: Bytes per pixel of a simulated camera beside its frame buffers (measured peak RSS of
#: ``hyplex stream --camera sim``: float32 electron maps, the layout's index and mix maps).
SIM_BYTES_PER_PX = 16


def sim_sensor_bytes(rows: int, cols: int, frames: int) -> int:
    """Memory of a simulated camera of ``rows x cols`` pixels holding ``frames`` uint16
    frames at once (looped noisy frames and ring slots), bytes."""
    return int(rows) * int(cols) * (SIM_BYTES_PER_PX + 2 * max(int(frames), 0))


def check_sim_sensor(text: str, rows: int, cols: int, frames: int, option="--sim-shape") -> None:
    """Refuse, before the twin is built, a simulated sensor that cannot fit in memory."""
    from hyplex.optics.memory import MemoryBudgetError, available_memory_bytes, check_memory

    available = available_memory_bytes()
    per_px = sim_sensor_bytes(1, 1, frames)
    most = available // per_px
    side = math.isqrt(most)
    try:
        check_memory(
            sim_sensor_bytes(rows, cols, frames),
            f"{text} ({rows * cols:,} pixels, {per_px} bytes each)",
            hint=f"; expected at most {most:,} pixels (e.g. {side}x{side})",
            available=available,
        )
    except MemoryBudgetError as error:
        raise _bad(str(error), option) from None
