"""Fit an open-set head for a design bundle: the twin's open-set data through the bundle's
own encoder, the method's ``fit``, the 95 %-TPR threshold on held-out ID pixels, held-out
metrics on test-unknown categories, and the head written into the bundle.

Used by ``hyplex openset fit`` and ``hyplex design --openset METHOD``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from hyplex.models.openset.auxiliary import OpenSetSplit, build_openset_data
from hyplex.models.openset.head_files import save_openset_head
from hyplex.models.openset.metrics import ood_metrics
from hyplex.models.openset.scores import METHODS, build_detector

__all__ = ["HeadFitSettings", "fit_bundle_head", "step_options"]


def step_options(method: str, steps: int | None) -> dict:
    """Options that set a method's training length to ``steps``: every option of its
    ``defaults`` named ``steps`` or ``*_steps`` (ACT has three phases); {} for post-hoc
    methods or ``steps=None``."""
    if steps is None:
        return {}
    from hyplex.models.openset.scores import detector_class

    defaults = getattr(detector_class(method), "defaults", {}) or {}
    return {k: int(steps) for k in defaults if k == "steps" or k.endswith("_steps")}


@dataclass
class HeadFitSettings:
    """How a head is fitted.

    Attributes
    ----------
    method : a key of :data:`~hyplex.models.openset.scores.METHODS`.
    options : the method's options (JSON scalars), e.g. ``{"steps": 200}``.
    counts : scenes per set (``train``, ``auxiliary``, ``heldout``, ``test``).
    shape : (H, W) of the twin scenes, pixels (one pixel = one metapixel barcode).
    seed : scenes, noise and training draws.
    """

    method: str = "OE"
    options: dict = field(default_factory=dict)
    counts: dict = field(
        default_factory=lambda: {"train": 32, "auxiliary": 16, "heldout": 8, "test": 8}
    )
    shape: tuple = (32, 32)
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(
                f"unknown open-set method {self.method!r}; choose from {sorted(METHODS)}"
            )


def fit_bundle_head(
    bundle, settings: HeadFitSettings, target=None, progress: bool = False, write: bool = True
) -> tuple:
    """Fit, calibrate and (with ``write``) store an open-set head in ``bundle``.

    Parameters
    ----------
    bundle : a loaded :class:`~hyplex.models.bundle.DesignBundle`.
    settings : :class:`HeadFitSettings`.
    target : unlabelled barcodes ``(N, F, H, W)`` of the captured domain (ACT), or None.

    Returns
    -------
    (detector, metrics): the detector (on CUDA when present, else the CPU) and metrics
    ``auroc``, ``aupr``, ``fpr95`` on the twin's held-out
    test-unknown categories, ``threshold``, ``seconds``.
    """
    encoder = bundle.encoder()
    split = OpenSetSplit.for_class_names(bundle.class_names)
    data = build_openset_data(
        encoder,
        bundle.wavelengths_nm,
        split,
        settings.counts,
        settings.shape,
        settings.seed,
        progress=progress,
    )
    segmenter = getattr(bundle.segmenter, "in_channels", None)
    if target is not None:
        target = torch.as_tensor(np.asarray(target), dtype=torch.float32)
        if target.ndim != 4 or (segmenter is not None and target.shape[1] != segmenter):
            raise ValueError(
                f"target barcodes have shape {tuple(target.shape)}; expected (N, F={segmenter}, "
                "H, W): mismatched channel counts"
            )
        data.target = target
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = copy.deepcopy(bundle.segmenter).float().to(device)  # CUDA when present
    torch.manual_seed(settings.seed)
    detector = build_detector(settings.method, model, **settings.options).to(device)
    start = time.perf_counter()
    detector.fit(data, seed=settings.seed, progress=progress)
    seconds = time.perf_counter() - start
    detector.calibrate(data.heldout.barcodes, valid=data.heldout.labels >= 0)
    scores = detector.predict(data.test.barcodes)
    metrics = {
        k: v
        for k, v in ood_metrics(scores, data.test.unknown).items()
        if k in ("auroc", "aupr", "fpr95")
    }
    metrics.update(
        threshold=detector.threshold,
        seconds=seconds,
        test_unknown=list(split.test_unknown),
        auxiliary=list(split.auxiliary),
    )
    if write:
        save_openset_head(bundle.path, detector, bundle.class_names, metrics)
    return detector, metrics
