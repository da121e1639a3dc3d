"""The real-vs-fake (metamer) head of a design bundle: HierCon weights + JSON record.

The head is :class:`~hyplex.models.pretraining.hierarchical_contrastive.HierConHead` ("HierCon:
Hierarchical Contrastive Attention for Audio Deepfake Detection", Liang et al., WWW 2026;
see that module for the method), wrapped as :class:`RealFakeHead`: per pixel of a barcode
map it gives the probability that the pixel is a painted metamer (a fake) of one of the
bundle's real classes. A bundle directory (:mod:`hyplex.models.bundle`) may carry one::

    realfake.json                      format "hyplex-realfake-head" v1: the HierCon config,
                                       barcode_scale, threshold_logit and its criterion
                                       ("eer" or "tpr95", on held-out twin pixels),
                                       real_classes, fake_classes, n_filters, the tensors'
                                       file name and SHA-256, metrics, created_utc
    realfake-<sha256[:16]>.safetensors the HierConHead's tensors

Writing: the tensors go to a content-named file (atomic rename), then ``realfake.json``
(atomic rename), then the previous tensors file is removed; a crash leaves the old head or
the new one, never a mix. Reading never unpickles: safetensors whose SHA-256 must match the
record and whose shapes are checked against a freshly built head
(:func:`hyplex.optics.untrusted.check_state_shapes`) before loading.

The map: ``p_fake = sigmoid(logit(x / barcode_scale) - threshold_logit)``, so 0.5 sits at the
stored threshold (as the open-set ``unknown`` map sits at its 95 %-TPR threshold). The head
was trained on pixels of the real classes and their fakes only; on other materials its
output is an extrapolation, so the map is read where the segmenter's labels are one of
``real_classes`` or ``fake_<class>``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hyplex.models.bundle_records import read_hashed_tensors, read_record, write_hashed_record
from hyplex.models.pretraining.hierarchical_contrastive import HierConHead
from hyplex.optics.untrusted import check_state_shapes

__all__ = [
    "REALFAKE_FORMAT",
    "REALFAKE_JSON",
    "THRESHOLD_CRITERIA",
    "RealFakeHead",
    "RealFakeHeadError",
    "has_realfake_head",
    "load_realfake_head",
    "read_realfake_record",
    "save_realfake_head",
]

REALFAKE_FORMAT = "hyplex-realfake-head"
REALFAKE_VERSION = 1
REALFAKE_JSON = "realfake.json"
THRESHOLD_CRITERIA = ("eer", "tpr95")
_CONFIG_KEYS = ("in_channels", "band_groups", "layers", "layers_per_group", "width")
# an untrusted record must not make the loader allocate an arbitrarily large network
_CONFIG_LIMITS = {k: 4096 if k == "width" else 1024 for k in _CONFIG_KEYS}


class RealFakeHeadError(ValueError):
    """A missing, foreign or corrupt real/fake head, or one that does not fit the input."""


class RealFakeHead(nn.Module):
    """HierCon fake probability per pixel of a barcode map (see the module doc).

    Parameters
    ----------
    hiercon : HierConHead
        The trained head (reads ``(N, C)`` barcodes scaled to ~1).
    barcode_scale : float
        Divides the barcodes before the head, in the decoders' input units (the median of the
        twin training barcodes through the bundle's encoder), > 0.
    threshold_logit : float
        Logit called fake at ``>=``; the map is 0.5 there.
    criterion : str
        How the threshold was set on held-out pixels: ``"eer"`` (false acceptance = false
        rejection) or ``"tpr95"`` (95 % of the fakes called fake).
    real_classes, fake_classes : list of str
        The bundle's classes the head separates (``fake_classes`` are ``"fake_<real>"``).
    """

    def __init__(
        self,
        hiercon: HierConHead,
        barcode_scale: float,
        threshold_logit: float,
        criterion: str = "eer",
        real_classes=("vegetation",),
        fake_classes=("fake_vegetation",),
    ):
        super().__init__()
        if not isinstance(hiercon, HierConHead):
            raise TypeError(f"hiercon must be a HierConHead, got {type(hiercon).__name__}")
        scale, threshold = float(barcode_scale), float(threshold_logit)
        if not (scale > 0 and scale < float("inf")):
            raise ValueError(f"barcode_scale must be a finite number > 0, got {barcode_scale}")
        if threshold != threshold or abs(threshold) == float("inf"):
            raise ValueError(f"threshold_logit must be finite, got {threshold_logit}")
        if criterion not in THRESHOLD_CRITERIA:
            raise ValueError(f"criterion must be one of {THRESHOLD_CRITERIA}, got {criterion!r}")
        self.hiercon = hiercon
        self.barcode_scale, self.threshold_logit, self.criterion = scale, threshold, criterion
        self.real_classes, self.fake_classes = list(real_classes), list(fake_classes)

    @property
    def in_channels(self) -> int:
        """C, filters per barcode."""
        return self.hiercon.in_channels

    def pixel_logits(self, barcodes: torch.Tensor) -> torch.Tensor:
        """Fake logits ``(N,)`` of pixel barcodes ``(N, C)`` in the decoders' input units.

        Barcodes are photon signals: negative values (noise after dark subtraction) are
        clipped to 0 before scaling, so the head's log-level stays finite.
        """
        if barcodes.ndim != 2 or barcodes.shape[1] != self.in_channels:
            raise RealFakeHeadError(
                f"barcodes must be (N, {self.in_channels}) for this real/fake head, got "
                f"{tuple(barcodes.shape)}: mismatched channel counts"
            )
        x = barcodes.float().clamp(min=0.0) / self.barcode_scale
        return self.hiercon(x)

    def forward(self, barcodes: torch.Tensor) -> torch.Tensor:
        """Fake probability ``(B, h, w)`` float32 of barcode maps ``(B, C, h, w)``: 0.5 at
        the stored threshold (module doc)."""
        if barcodes.ndim != 4 or barcodes.shape[1] != self.in_channels:
            raise RealFakeHeadError(
                f"barcodes must be (B, {self.in_channels}, h, w) for this real/fake head, got "
                f"{tuple(barcodes.shape)}: mismatched channel counts"
            )
        b, c, h, w = barcodes.shape
        pixels = barcodes.permute(0, 2, 3, 1).reshape(-1, c)
        logits = self.pixel_logits(pixels) - self.threshold_logit
        return torch.sigmoid(logits).reshape(b, h, w)


def has_realfake_head(bundle_path) -> bool:
    """Whether the bundle directory holds a ``realfake.json``."""
    return (Path(bundle_path) / REALFAKE_JSON).is_file()


def save_realfake_head(bundle_path, head: RealFakeHead, metrics: dict | None = None) -> Path:
    """Write ``head`` as the bundle's real/fake head, replacing any old one (module doc).

    Parameters
    ----------
    bundle_path : str or Path
        The bundle directory (must exist).
    head : RealFakeHead
    metrics : dict, optional
        JSON-able figures to keep with the head (held-out EER, AUROC, ...).

    Returns
    -------
    Path of ``realfake.json``.
    """
    folder = Path(bundle_path)
    if not folder.is_dir():
        raise RealFakeHeadError(f"{folder}: no such bundle directory")
    if not isinstance(head, RealFakeHead):
        raise TypeError(f"head must be a RealFakeHead, got {type(head).__name__}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.hiercon.state_dict().items()}
    record = {
        "format": REALFAKE_FORMAT,
        "format_version": REALFAKE_VERSION,
        "method": "HierCon",
        "config": dict(head.hiercon.config),
        "barcode_scale": head.barcode_scale,
        "threshold_logit": head.threshold_logit,
        "criterion": head.criterion,
        "real_classes": head.real_classes,
        "fake_classes": head.fake_classes,
        "n_filters": head.in_channels,
        "metrics": metrics or {},
    }
    return write_hashed_record(
        folder / REALFAKE_JSON, "realfake", tensors, record, metadata={"format": REALFAKE_FORMAT}
    )


def read_realfake_record(bundle_path) -> dict:
    """The validated ``realfake.json`` of a bundle.

    Raises
    ------
    RealFakeHeadError
        No head (the message says how to fit one), a file too large, not JSON, another
        format or version, a missing or mistyped field.
    """
    folder = Path(bundle_path)
    path = folder / REALFAKE_JSON
    kinds = {
        "config": dict,
        "barcode_scale": (int, float),
        "threshold_logit": (int, float),
        "criterion": str,
        "real_classes": list,
        "fake_classes": list,
        "n_filters": int,
    }
    record = read_record(
        path,
        record_format=REALFAKE_FORMAT,
        version=REALFAKE_VERSION,
        fields=kinds,
        error=RealFakeHeadError,
        missing=(
            f"{folder} has no real/fake head, so it cannot give fake maps; add one with "
            f"'hyplex realfake fit --bundle {folder}'"
        ),
        what="a real/fake head",
    )
    config = record["config"]
    if set(config) != set(_CONFIG_KEYS) or not all(
        isinstance(config[k], int) and not isinstance(config[k], bool) for k in _CONFIG_KEYS
    ):
        raise RealFakeHeadError(f"{path}: config must hold the integers {list(_CONFIG_KEYS)}")
    if not all(1 <= config[k] <= limit for k, limit in _CONFIG_LIMITS.items()):
        raise RealFakeHeadError(f"{path}: config {config} outside the limits {_CONFIG_LIMITS}")
    if config["in_channels"] != record["n_filters"]:
        raise RealFakeHeadError(f"{path}: config in_channels differs from n_filters")
    return record


def load_realfake_head(bundle_path, n_filters: int | None = None, device="cpu") -> RealFakeHead:
    """The bundle's real/fake head, in eval mode on ``device``.

    Parameters
    ----------
    bundle_path : str or Path
    n_filters : int, optional
        Filters per barcode of the data it will read (the bundle's encoder or the input's
        layout); a head fitted for another count is refused.
    device : str or torch.device

    Raises
    ------
    RealFakeHeadError
        No head, a corrupt or foreign record, tensors that are missing or whose SHA-256 or
        shapes do not match the record, a head for another number of filters.
    """
    folder = Path(bundle_path)
    record = read_realfake_record(folder)
    if n_filters is not None and int(n_filters) != record["n_filters"]:
        raise RealFakeHeadError(
            f"{folder}/{REALFAKE_JSON} was fitted for {record['n_filters']} filters, the input "
            f"has {int(n_filters)}: mismatched channel counts"
        )
    tensors = read_hashed_tensors(folder, record, REALFAKE_JSON, RealFakeHeadError, "head")
    tensors_path = folder / record["tensors_file"]
    try:
        hiercon = HierConHead(**record["config"])
        check_state_shapes(hiercon.state_dict(), tensors, str(tensors_path))
        hiercon.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})
        head = RealFakeHead(
            hiercon,
            record["barcode_scale"],
            record["threshold_logit"],
            record["criterion"],
            record["real_classes"],
            record["fake_classes"],
        )
    except (TypeError, ValueError, RuntimeError, KeyError) as error:
        raise RealFakeHeadError(f"{folder}: the real/fake head does not load: {error}") from None
    return head.to(device).eval()
