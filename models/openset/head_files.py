"""An open-set head inside a design bundle: JSON config + safetensors, written atomically.

A bundle directory (:mod:`hyplex.models.bundle`) may carry one head beside its decoders::

    openset.json                      format "hyplex-openset-head" v1: method, options,
                                      threshold (score at 95 % TPR on held-out ID pixels),
                                      score_scale, trains_segmenter, class_names, n_filters,
                                      the tensors' file name and SHA-256, metrics, provenance
    openset-<sha256[:16]>.safetensors the head's tensors (a fine-tuned ``segmenter.*``, a
                                      ``watermark.*``, a method's own head)

Writing: the tensors go to a content-named file (atomic rename), then ``openset.json`` (atomic
rename), then the previous tensors file is removed. A crash leaves the old head or the new one,
never a mix: the JSON names the exact tensors file and its hash, checked on load. Reading never
unpickles: safetensors, and a JSON whose shapes are checked against the detector's own modules
(``hyplex.optics.untrusted.check_state_shapes``) before loading.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from hyplex.optics.atomic_io import atomic_write
from hyplex.optics.untrusted import check_state_shapes

__all__ = [
    "HEAD_FORMAT",
    "OpenSetHeadError",
    "has_openset_head",
    "save_openset_head",
    "load_openset_head",
    "read_head_record",
]

HEAD_FORMAT = "hyplex-openset-head"
HEAD_VERSION = 1
HEAD_JSON = "openset.json"
MAX_JSON_BYTES = 1_000_000


class OpenSetHeadError(ValueError):
    """A missing, foreign or corrupt open-set head."""


def has_openset_head(bundle_path) -> bool:
    """Whether the bundle directory holds an ``openset.json``."""
    return (Path(bundle_path) / HEAD_JSON).is_file()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_openset_head(bundle_path, detector, class_names, metrics: dict | None = None) -> Path:
    """Write ``detector`` (calibrated) as the bundle's open-set head, replacing any old one.

    Parameters
    ----------
    bundle_path : the bundle directory (must exist).
    detector : a fitted, calibrated :class:`~hyplex.models.openset.scores.OpenSetDetector`.
    class_names : the segmenter's classes (checked on load).
    metrics : JSON-able figures to keep with the head (e.g. held-out AUROC).

    Returns
    -------
    Path of ``openset.json``.
    """
    from safetensors.torch import save

    folder = Path(bundle_path)
    if not folder.is_dir():
        raise OpenSetHeadError(f"{folder}: no such bundle directory")
    if detector.threshold is None:
        raise OpenSetHeadError(
            "the detector is not calibrated (call calibrate() on held-out ID data)"
        )
    payload = save(detector.tensors(), metadata={"format": HEAD_FORMAT})
    digest = hashlib.sha256(payload).hexdigest()
    name = f"openset-{digest[:16]}.safetensors"
    atomic_write(folder / name, lambda handle: handle.write(payload))
    old = read_head_record(folder).get("tensors_file") if has_openset_head(folder) else None
    channels = getattr(detector.model, "in_channels", None)
    record = {
        "format": HEAD_FORMAT,
        "format_version": HEAD_VERSION,
        **detector.config(),
        "class_names": list(class_names),
        "n_filters": None if channels is None else int(channels),
        "tensors_file": name,
        "tensors_sha256": digest,
        "metrics": metrics or {},
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(record, indent=1)
    path = atomic_write(folder / HEAD_JSON, lambda handle: handle.write(text.encode()))
    if old and old != name and (folder / old).is_file():
        (folder / old).unlink()
    return path


def read_head_record(bundle_path) -> dict:
    """The validated ``openset.json`` of a bundle (:class:`OpenSetHeadError` if absent/bad)."""
    folder = Path(bundle_path)
    path = folder / HEAD_JSON
    if not path.is_file():
        raise OpenSetHeadError(
            f"{folder} has no open-set head, so it cannot give unknown maps; add one with "
            f"'hyplex openset fit --bundle {folder} --method OE' (or design --openset METHOD)"
        )
    if path.stat().st_size > MAX_JSON_BYTES:
        raise OpenSetHeadError(f"{path} is larger than {MAX_JSON_BYTES} bytes")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OpenSetHeadError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(record, dict) or record.get("format") != HEAD_FORMAT:
        raise OpenSetHeadError(f"{path}: not an open-set head (format {HEAD_FORMAT!r} expected)")
    if record.get("format_version") != HEAD_VERSION:
        raise OpenSetHeadError(
            f"{path}: format_version {record.get('format_version')}, expected {HEAD_VERSION}"
        )
    kinds = {
        "method": str,
        "options": dict,
        "tensors_file": str,
        "tensors_sha256": str,
        "class_names": list,
        "threshold": (int, float),
        "score_scale": (int, float),
    }
    for key, kind in kinds.items():
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise OpenSetHeadError(f"{path}: {key} is missing or of the wrong type")
    name = record["tensors_file"]
    if Path(name).name != name or not name.endswith(".safetensors"):
        raise OpenSetHeadError(
            f"{path}: tensors_file must be a file name in the bundle, got {name!r}"
        )
    return record


def load_openset_head(bundle_path, segmenter: nn.Module, class_names=None, device="cpu"):
    """The bundle's open-set detector around ``segmenter`` (its weights are replaced by the
    head's when the method fine-tuned them; pass a copy to keep the original).

    Raises
    ------
    OpenSetHeadError
        No head, a corrupt or foreign head, tensors whose hash or shapes do not match, a head
        for other classes or another number of filters than the segmenter.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from hyplex.models.openset.scores import build_detector

    folder = Path(bundle_path)
    record = read_head_record(folder)
    if class_names is not None and list(class_names) != record["class_names"]:
        raise OpenSetHeadError(
            f"{folder}/{HEAD_JSON} was fitted for classes {record['class_names']}, the segmenter "
            f"has {list(class_names)}"
        )
    channels = getattr(segmenter, "in_channels", None)
    if (
        record.get("n_filters") is not None
        and channels is not None
        and record["n_filters"] != channels
    ):
        raise OpenSetHeadError(
            f"{folder}/{HEAD_JSON} was fitted for {record['n_filters']} filters, the segmenter "
            f"reads {channels}: mismatched channel counts"
        )
    tensors_path = folder / record["tensors_file"]
    if not tensors_path.is_file():
        raise OpenSetHeadError(f"{tensors_path} is missing (named by {HEAD_JSON})")
    if _sha256(tensors_path) != record["tensors_sha256"]:
        raise OpenSetHeadError(f"{tensors_path}: SHA-256 does not match {HEAD_JSON} (corrupt head)")
    try:
        tensors = load_file(tensors_path, device="cpu")
    except (SafetensorError, OSError) as error:
        raise OpenSetHeadError(f"{tensors_path} is corrupt: {error}") from None
    try:
        detector = build_detector(record["method"], segmenter, **record["options"])
        expected = detector.tensors()
        check_state_shapes(expected, tensors, str(tensors_path))
        detector.restore(
            record,
            {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in tensors.items()},
        )
    except (TypeError, ValueError, RuntimeError, KeyError) as error:
        raise OpenSetHeadError(f"{folder}: the open-set head does not load: {error}") from None
    return detector.to(device)
