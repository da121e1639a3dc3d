"""Fit a bundle's real-vs-fake (metamer) head: HierCon on twin pixels through its own encoder.

Method: "HierCon: Hierarchical Contrastive Attention for Audio Deepfake Detection" (Liang et
al., WWW 2026): the three-stage attention head and the margin contrastive loss of
:mod:`hyplex.models.pretraining.hierarchical_contrastive`, trained by its
:func:`~hyplex.models.pretraining.hierarchical_contrastive.train_hiercon` (BCE + lambda
L_con on balanced batches).

Data, as the ``real_fake`` block of ``benchmarks/learning_temporal_pretraining.py`` builds
it: twin scenes (:func:`hyplex.models.data.generate_scenes`) of the bundle's classes with
painted metamers (``fake_<class>``) of its fake-able classes, seen through the bundle's own
encoder with its sensor noise (:func:`hyplex.models.unlearning.segmenter_forgetting.
encode_scenes`), barcodes divided by the median training barcode. The head trains on the
pixels of the real classes that have fakes and of their fakes; a second, disjoint set of
held-out scenes sets the threshold (at the EER, or at 95 % TPR: 95 % of the held-out fakes
called fake) and gives the held-out EER and AUROC, beside the EER of the bundle's segmenter
read as a fake detector (its summed ``fake_*`` probabilities, hyplex's current head).

Used by ``hyplex realfake fit``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from hyplex.models.pretraining.hierarchical_contrastive import (
    HierConConfig,
    HierConHead,
    train_hiercon,
)
from hyplex.models.pretraining.realfake_files import THRESHOLD_CRITERIA, RealFakeHead

__all__ = ["RealFakeFitSettings", "fake_classes_of", "fit_realfake_head", "threshold_at"]

FAKE_PREFIX = "fake_"


@dataclass
class RealFakeFitSettings:
    """How a real/fake head is fitted.

    Attributes
    ----------
    train_scenes, heldout_scenes : int
        Twin scenes to train on and to set the threshold on (>= 1 each).
    shape : (int, int)
        (H, W) of the twin scenes, metapixels (one pixel = one barcode), >= 8 each.
    steps, batch : int
        HierCon training steps and pixels per (balanced) batch.
    criterion : str
        ``"eer"`` or ``"tpr95"`` (module doc).
    fake_fraction : float
        Chance that an object of a fake-able class is painted as a metamer, in (0, 1].
    seed : int
        Scenes, sensor noise, initial weights and batches.
    """

    train_scenes: int = 16
    heldout_scenes: int = 8
    shape: tuple = (32, 32)
    steps: int = 600
    batch: int = 256
    criterion: str = "eer"
    fake_fraction: float = 0.4
    seed: int = 0

    def __post_init__(self):
        if self.criterion not in THRESHOLD_CRITERIA:
            raise ValueError(
                f"criterion must be one of {THRESHOLD_CRITERIA}, got {self.criterion!r}"
            )
        if int(self.train_scenes) < 1 or int(self.heldout_scenes) < 1:
            raise ValueError(
                f"train_scenes and heldout_scenes must be >= 1, got {self.train_scenes}, "
                f"{self.heldout_scenes}"
            )
        if int(self.steps) < 1 or int(self.batch) < 2:
            raise ValueError(f"steps must be >= 1 and batch >= 2, got {self.steps}, {self.batch}")
        if not 0.0 < float(self.fake_fraction) <= 1.0:
            raise ValueError(f"fake_fraction must lie in (0, 1], got {self.fake_fraction}")


def fake_classes_of(class_names) -> tuple[list[str], list[str]]:
    """The real classes that have metamers in ``class_names`` and the scene classes.

    Parameters
    ----------
    class_names : sequence of str
        A bundle's classes: ``["background", *classes, *("fake_" + c)]``.

    Returns
    -------
    (fakeable, classes) : lists of str
        ``fakeable``: classes ``c`` with ``"fake_c"`` in ``class_names`` (``["vegetation"]``
        when the bundle has no fake class but has vegetation, as the twin paints it);
        ``classes``: the natural classes (no background, no ``fake_*``).

    Raises
    ------
    ValueError
        No class that the twin can paint a metamer of.
    """
    names = [str(n) for n in class_names]
    classes = [n for n in names[1:] if not n.startswith(FAKE_PREFIX)]
    fakeable = [n[len(FAKE_PREFIX) :] for n in names if n.startswith(FAKE_PREFIX)]
    fakeable = [n for n in fakeable if n in classes]
    if not fakeable and "vegetation" in classes:
        fakeable = ["vegetation"]
    if not fakeable:
        raise ValueError(
            f"the bundle's classes {names} hold no class with metamers (fake_<class>) and no "
            "vegetation: the twin has nothing to paint fakes of"
        )
    return fakeable, classes


def threshold_at(scores, is_fake, criterion: str = "eer") -> float:
    """The logit threshold (``score >= threshold`` is fake) on held-out pixels.

    Parameters
    ----------
    scores : array_like (N,)
        Fake logits, finite.
    is_fake : array_like of bool (N,)
        Both classes present.
    criterion : str
        ``"eer"``: where false acceptances equal false rejections
        (:func:`hyplex.models.openset.robustness_evaluation.equal_error_rate`); ``"tpr95"``:
        the largest score that still calls >= 95 % of the fakes fake.
    """
    from hyplex.models.openset.robustness_evaluation import equal_error_rate

    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(is_fake, dtype=bool).reshape(-1)
    if criterion == "eer":
        _, threshold = equal_error_rate(s, y)
        return float(threshold) if np.isfinite(threshold) else float(s.max())
    if criterion == "tpr95":
        if not y.any():
            raise ValueError("is_fake must hold fakes to set a 95 %-TPR threshold")
        return float(np.quantile(s[y], 0.05, method="lower"))
    raise ValueError(f"criterion must be one of {THRESHOLD_CRITERIA}, got {criterion!r}")


def _twin_pixels(bundle, settings, fakeable, classes, count, scene_seed):
    """Barcodes ``(S, C, H, W)`` and labels of ``count`` twin scenes through the encoder."""
    from hyplex.models.data import generate_scenes
    from hyplex.models.unlearning.segmenter_forgetting import encode_scenes

    scenes = generate_scenes(
        bundle.wavelengths_nm,
        count,
        scene_seed,
        tuple(settings.shape),
        classes=classes,
        fake_classes=fakeable,
        fake_fraction=settings.fake_fraction,
    )
    coded = encode_scenes(bundle.encoder(), scenes, seed=scene_seed + 101)
    names = list(scenes.class_names)
    real_ids = [names.index(c) for c in fakeable]
    fake_ids = [names.index(FAKE_PREFIX + c) for c in fakeable]
    return coded.barcodes.float(), coded.labels, names, real_ids, fake_ids


def _segmenter_scores(bundle, barcodes, names, fake_ids, relevant):
    """The bundle segmenter's summed fake-class probability on the relevant pixels, or None
    when its classes have no fakes or it does not read barcodes."""
    segmenter = bundle.segmenter
    if segmenter is None or getattr(segmenter, "in_channels", None) != barcodes.shape[1]:
        return None
    if list(bundle.class_names) != names:
        return None
    with torch.no_grad():
        probabilities = torch.softmax(segmenter.eval()(barcodes).float(), 1)
    fake = probabilities[:, fake_ids].sum(1)  # (S, H, W)
    return fake[relevant].numpy()


def fit_realfake_head(bundle, settings: RealFakeFitSettings | None = None, progress=False):
    """Fit and calibrate a HierCon real/fake head for ``bundle`` (module doc).

    Parameters
    ----------
    bundle : DesignBundle
        A loaded :class:`~hyplex.models.bundle.DesignBundle` (its encoder, wavelengths and
        classes; its segmenter for the comparison).
    settings : RealFakeFitSettings, optional
    progress : bool
        Show a tqdm bar over the training steps.

    Returns
    -------
    (head, metrics)
        ``head``: the :class:`RealFakeHead` on the CPU, eval mode. ``metrics``: held-out
        ``eer``, ``auroc``, ``threshold_logit``, ``criterion``, ``tpr`` and ``fpr`` at the
        threshold, ``segmenter_eer`` (None when not measurable), pixel counts, ``seconds``.

    Raises
    ------
    ValueError
        The bundle has no class with metamers; the twin scenes hold no real or no fake pixels.
    """
    from sklearn.metrics import roc_auc_score

    from hyplex.models.openset.robustness_evaluation import equal_error_rate

    settings = settings or RealFakeFitSettings()
    fakeable, classes = fake_classes_of(bundle.class_names)
    n_filters = int(np.asarray(bundle.responses).shape[0])
    seed = int(settings.seed)
    sets = {}
    for part, count, offset in (
        ("train", settings.train_scenes, 1),
        ("heldout", settings.heldout_scenes, 2),
    ):
        barcodes, labels, names, real_ids, fake_ids = _twin_pixels(
            bundle, settings, fakeable, classes, int(count), 10 * seed + offset
        )
        is_fake = torch.isin(labels, torch.tensor(fake_ids))
        relevant = is_fake | torch.isin(labels, torch.tensor(real_ids))
        if not bool(is_fake.any()) or not bool((relevant & ~is_fake).any()):
            raise ValueError(
                f"the {count} {part} twin scenes hold no {'fake' if not is_fake.any() else 'real'}"
                f" pixels of {fakeable}; use more scenes"
            )
        sets[part] = (barcodes, labels, relevant, is_fake, names, fake_ids)
    barcodes, _, relevant, is_fake, _, _ = sets["train"]
    pixels = barcodes.permute(0, 2, 3, 1)[relevant]  # (N, C)
    scale = float(barcodes.median())
    if not scale > 0:
        raise ValueError(f"the twin barcodes' median is {scale}; the encoder gives no signal")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    hiercon = HierConHead(n_filters).to(device)
    config = HierConConfig(steps=int(settings.steps), batch=int(settings.batch), seed=seed)
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, desc="HierCon", unit="step")

    def report(step, loss):
        bar.set_postfix(loss=f"{loss:.3f}")
        bar.update(1)

    try:
        train_hiercon(
            hiercon,
            (pixels.clamp(min=0.0) / scale).to(device),  # as RealFakeHead.pixel_logits reads
            is_fake[relevant].to(device),
            config,
            report if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    hiercon = hiercon.cpu().eval()
    barcodes, _, relevant, is_fake, names, fake_ids = sets["heldout"]
    head = RealFakeHead(hiercon, scale, 0.0, settings.criterion, fakeable,
                        [FAKE_PREFIX + c for c in fakeable])  # fmt: skip
    with torch.no_grad():
        scores = head.pixel_logits(barcodes.permute(0, 2, 3, 1)[relevant]).numpy()
    truth = is_fake[relevant].numpy()
    threshold = threshold_at(scores, truth, settings.criterion)
    head.threshold_logit = threshold
    called = scores >= threshold
    current = _segmenter_scores(bundle, barcodes, names, fake_ids, relevant)
    metrics = {
        "eer": float(equal_error_rate(scores, truth)[0]),
        "auroc": float(roc_auc_score(truth, scores)),
        "criterion": settings.criterion,
        "threshold_logit": threshold,
        "tpr": float(called[truth].mean()),
        "fpr": float(called[~truth].mean()),
        "segmenter_eer": None if current is None else float(equal_error_rate(current, truth)[0]),
        "heldout_real_pixels": int((~truth).sum()),
        "heldout_fake_pixels": int(truth.sum()),
        "train_pixels": int(len(pixels)),
        "steps": int(config.steps),
        "seconds": round(seconds, 2),
        "fake_classes": list(head.fake_classes),
    }
    return head, metrics
