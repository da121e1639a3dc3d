"""Parts a design bundle carries beside its decoders: a JSON record naming a content-hashed
safetensors file.

The open-set head (``openset.json``, :mod:`hyplex.models.openset.head_files`), the real/fake
head (``realfake.json``, :mod:`hyplex.models.pretraining.realfake_files`) and the fitted
temporal modules (``temporal-<kind>.json``, :mod:`hyplex.models.temporal.module_files`) are
stored the same way, so that a crash or a hand-edited file never yields a half-loaded part:

* the tensors go to ``<prefix>-<sha256[:16]>.safetensors``, written atomically
  (:func:`hyplex.optics.atomic_io.atomic_write`), never pickled;
* then the record, with ``tensors_file`` and ``tensors_sha256``, is written atomically over
  the old one (the old tensors file is removed after), so a reader sees the old part or the
  new one;
* on load the record is size-capped, checked for its format, version and field types, its
  ``tensors_file`` must be a plain file name in the bundle, and the tensors must hash to
  ``tensors_sha256`` before safetensors parses them.

Each part keeps its own error class (a ``ValueError``), its own fields and its own checks of
what the tensors mean; this module holds only the file handling they share.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import torch

from hyplex.optics.atomic_io import atomic_directory, atomic_write

__all__ = [
    "MAX_RECORD_BYTES",
    "add_to_bundle",
    "file_sha256",
    "read_hashed_tensors",
    "read_record",
    "write_hashed_record",
]

#: a record larger than this is refused before it is parsed (bytes)
MAX_RECORD_BYTES = 1_000_000


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _old_tensors_file(record_path: Path) -> str | None:
    """The ``tensors_file`` an existing record names, or None (absent or unreadable record:
    a corrupt part can always be replaced)."""
    try:
        old = json.loads(record_path.read_text()).get("tensors_file")
    except (OSError, ValueError, AttributeError):
        return None
    return old if isinstance(old, str) and Path(old).name == old else None


def write_hashed_record(
    record_path,
    prefix: str,
    tensors: Mapping[str, torch.Tensor],
    record: dict,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``tensors`` and then ``record`` (JSON) as one bundle part, replacing any old one.

    Parameters
    ----------
    record_path : str or Path
        The record's path, e.g. ``bundle/openset.json``; its folder must exist.
    prefix : str
        Start of the tensors file's name (``<prefix>-<sha256[:16]>.safetensors``).
    tensors : mapping of name -> contiguous CPU tensor.
    record : dict
        JSON-able fields of the part; ``tensors_file``, ``tensors_sha256`` and
        ``created_utc`` (ISO 8601, seconds) are added.
    metadata : str -> str, optional
        The safetensors header's metadata.

    Returns
    -------
    Path of the record.
    """
    from safetensors.torch import save

    record_path = Path(record_path)
    folder = record_path.parent
    payload = save(dict(tensors), metadata=dict(metadata) if metadata else None)
    digest = hashlib.sha256(payload).hexdigest()
    name = f"{prefix}-{digest[:16]}.safetensors"
    old = _old_tensors_file(record_path) if record_path.is_file() else None
    atomic_write(folder / name, lambda handle: handle.write(payload))
    full = {
        **record,
        "tensors_file": name,
        "tensors_sha256": digest,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(full, indent=1)
    atomic_write(record_path, lambda handle: handle.write(text.encode()))
    if old and old != name and (folder / old).is_file():
        (folder / old).unlink()
    return record_path


def read_record(
    record_path,
    *,
    record_format: str,
    version: int,
    fields: Mapping[str, type | tuple[type, ...]],
    error: type[Exception],
    missing: str,
    what: str,
) -> dict:
    """The record at ``record_path``, checked as far as this module can.

    Parameters
    ----------
    record_path : str or Path
    record_format, version : the ``format`` and ``format_version`` it must carry.
    fields : name -> type(s) of the fields it must hold (``tensors_file`` and
        ``tensors_sha256`` are always required; a bool never passes for a number).
    error : the exception class raised (the part's own ``ValueError`` subclass).
    missing : the message when there is no record (say how to make one).
    what : the part, in words, for messages (e.g. ``"an open-set head"``).

    Raises
    ------
    error
        No record, a record over :data:`MAX_RECORD_BYTES`, not JSON, another format or
        version, a missing or mistyped field, a ``tensors_file`` that is not a plain
        ``.safetensors`` file name.
    """
    path = Path(record_path)
    if not path.is_file():
        raise error(missing)
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise error(f"{path} is larger than {MAX_RECORD_BYTES} bytes")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != record_format:
        raise error(f"{path}: not {what} (format {record_format!r} expected)")
    if record.get("format_version") != version:
        raise error(f"{path}: format_version {record.get('format_version')}, expected {version}")
    required = {**fields, "tensors_file": str, "tensors_sha256": str}
    for key, kind in required.items():
        value = record.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise error(f"{path}: {key} is missing or of the wrong type")
    name = record["tensors_file"]
    if Path(name).name != name or not name.endswith(".safetensors"):
        raise error(f"{path}: tensors_file must be a file name in the bundle, got {name!r}")
    return record


def read_hashed_tensors(
    folder, record: dict, record_name: str, error: type[Exception], what: str
) -> dict[str, torch.Tensor]:
    """The tensors a checked record (:func:`read_record`) names, on the CPU.

    Parameters
    ----------
    folder : the bundle directory.
    record : the record's fields (``tensors_file``, ``tensors_sha256``).
    record_name : the record's file name, for messages.
    error : the exception class raised.
    what : the part, in words, for the hash message (e.g. ``"head"``).

    Raises
    ------
    error
        The file is missing, its SHA-256 differs from the record's, or safetensors cannot
        parse it.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors_path = Path(folder) / record["tensors_file"]
    if not tensors_path.is_file():
        raise error(f"{tensors_path} is missing (named by {record_name})")
    if file_sha256(tensors_path) != record["tensors_sha256"]:
        raise error(f"{tensors_path}: SHA-256 does not match {record_name} (corrupt {what})")
    try:
        return load_file(tensors_path, device="cpu")
    except (SafetensorError, OSError) as exc:
        raise error(f"{tensors_path} is corrupt: {exc}") from None


def add_to_bundle(bundle_path, output, write: Callable[[Path], object]) -> Path:
    """Add a part to a bundle in place, or to a new copy of it.

    Parameters
    ----------
    bundle_path : str or Path
        The bundle folder.
    output : str, Path or None
        None: ``write`` runs on the bundle itself (each part's own writes are atomic). A new
        folder: the bundle is copied into a staging folder, ``write`` runs there, and the
        staging folder is renamed to ``output``, so the copy and its new part appear together
        or not at all (:func:`hyplex.optics.atomic_io.atomic_directory`). A part the copy
        already holds is replaced by ``write`` (:func:`write_hashed_record` removes the old
        tensors file).
    write : callable(folder: Path)
        Writes the part into ``folder``.

    Returns
    -------
    Path of the bundle that holds the part.
    """
    if output is None:
        write(Path(bundle_path))
        return Path(bundle_path)
    with atomic_directory(output) as staging:
        shutil.copytree(bundle_path, staging, dirs_exist_ok=True)
        write(Path(staging))
    return Path(output)
