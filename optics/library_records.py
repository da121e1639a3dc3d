"""Named records stored beside a response library's designs: a JSON summary plus arrays.

A record is one HDF5 group of a library file (format version 2,
:mod:`hyplex.optics.library`)::

    /<name>                 group, attrs: summary (JSON text), complete (1)
    /<name>/<array>         datasets (indices, spectra, ...)

Two records exist: ``accuracy`` (:mod:`hyplex.optics.library_accuracy`) and
``convergence_probe`` (:mod:`hyplex.optics.library_probe`). A group without ``complete = 1``
(a write that never finished, which the atomic writers of :mod:`hyplex.optics.library` do not
leave behind) reads as absent, so a reader never trusts half a record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import h5py
import numpy as np

__all__ = ["Record", "RECORD_NAMES", "read_record", "write_record"]

#: The records a library may hold.
RECORD_NAMES = ("accuracy", "convergence_probe")


@dataclass
class Record:
    """A JSON-ready ``summary`` dict and named numpy ``arrays``."""

    summary: dict
    arrays: dict = field(default_factory=dict)


def _check_name(name: str) -> None:
    if name not in RECORD_NAMES:
        raise ValueError(f"record name must be one of {RECORD_NAMES}, got {name!r}")


def write_record(handle: h5py.File, name: str, record: Record) -> None:
    """Write ``record`` as the group ``/name`` of an open file (replacing one there)."""
    _check_name(name)
    if name in handle:
        del handle[name]
    group = handle.create_group(name)
    for key, value in record.arrays.items():
        group.create_dataset(key, data=np.asarray(value), track_times=False)
    group.attrs["summary"] = json.dumps(record.summary, sort_keys=True)
    group.attrs["complete"] = 1  # written last: a group without it is ignored


def read_record(handle: h5py.File, name: str, arrays: bool = True) -> Record | None:
    """The record ``/name`` of an open file, or None if it has none (or an unfinished one).

    ``arrays=False`` reads the summary only.
    """
    _check_name(name)
    group = handle.get(name)
    if not isinstance(group, h5py.Group) or int(group.attrs.get("complete", 0)) != 1:
        return None
    summary = json.loads(group.attrs["summary"])
    values = {key: group[key][()] for key in group} if arrays else {}
    return Record(summary, values)
