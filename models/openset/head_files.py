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

from pathlib import Path

import torch
from torch import nn

from hyplex.models.bundle_records import (
    read_hashed_tensors,
    read_record,
    write_hashed_record,
)
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


class OpenSetHeadError(ValueError):
    """A missing, foreign or corrupt open-set head."""


def has_openset_head(bundle_path) -> bool:
    """Whether the bundle directory holds an ``openset.json``."""
    return (Path(bundle_path) / HEAD_JSON).is_file()


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
    folder = Path(bundle_path)
    if not folder.is_dir():
        raise OpenSetHeadError(f"{folder}: no such bundle directory")
    if detector.threshold is None:
        raise OpenSetHeadError(
            "the detector is not calibrated (call calibrate() on held-out ID data)"
        )
    channels = getattr(detector.model, "in_channels", None)
    record = {
        "format": HEAD_FORMAT,
        "format_version": HEAD_VERSION,
        **detector.config(),
        "class_names": list(class_names),
        "n_filters": None if channels is None else int(channels),
        "metrics": metrics or {},
    }
    tensors = detector.tensors()
    return write_hashed_record(
        folder / HEAD_JSON, "openset", tensors, record, metadata={"format": HEAD_FORMAT}
    )


def read_head_record(bundle_path) -> dict:
    """The validated ``openset.json`` of a bundle (:class:`OpenSetHeadError` if absent/bad)."""
    folder = Path(bundle_path)
    kinds = {
        "method": str,
        "options": dict,
        "class_names": list,
        "threshold": (int, float),
        "score_scale": (int, float),
    }
    return read_record(
        folder / HEAD_JSON,
        record_format=HEAD_FORMAT,
        version=HEAD_VERSION,
        fields=kinds,
        error=OpenSetHeadError,
        missing=(
            f"{folder} has no open-set head, so it cannot give unknown maps; add one with "
            f"'hyplex openset fit --bundle {folder} --method OE' (or design --openset METHOD)"
        ),
        what="an open-set head",
    )


def load_openset_head(bundle_path, segmenter: nn.Module, class_names=None, device="cpu"):
    """The bundle's open-set detector around ``segmenter`` (its weights are replaced by the
    head's when the method fine-tuned them; pass a copy to keep the original).

    Raises
    ------
    OpenSetHeadError
        No head, a corrupt or foreign head, tensors whose hash or shapes do not match, a head
        for other classes or another number of filters than the segmenter.
    """
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
    tensors = read_hashed_tensors(folder, record, HEAD_JSON, OpenSetHeadError, "head")
    tensors_path = folder / record["tensors_file"]
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
