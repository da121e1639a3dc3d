"""Evaluation in the style of three seed datasets, as metrics on twin data.

References
----------
[Sober] Q. Wang, Y. Lin, Y. Chen, L. Schmidt, B. Han, T. Zhang, "A Sober Look at the
        Robustness of CLIPs to Spurious Features", NeurIPS 2024: accuracy on the *common*
        (class usually seen with this background) and *counter* (same class, other
        background) groups, and the drop between them.
[SurFITR] "SurFITR: A Dataset for Surveillance Image Forgery Detection and Localisation":
        image-level detection (AUC) and pixel-level localisation (F1, IoU) of forged regions.
[AUDETER] "AUDETER: A Large-scale Dataset for Deepfake Audio Detection in Open Worlds":
        real-versus-fake decisions scored by the equal error rate (EER).

Here the groups are the same materials under the twin's usual illuminant / background against
another one; the forged regions are metameric fakes (``hyplex.simulation.scenes``: painted
objects with a natural colour under D65 and a paint's spectrum, class ``fake_<class>``,
:func:`hyplex.models.segmentation.fake_class_ids`), and the real-versus-fake decision is the
per-pixel (or per-image) fake score. All ROC quantities use scikit-learn.

Conventions: scores are larger for "fake" / "anomalous"; accuracies and rates are fractions
in [0, 1], drops are in percentage points.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "equal_error_rate",
    "forgery_detection",
    "forgery_localisation",
    "group_accuracies",
    "group_accuracy_drop",
]


def _array(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype == object:
        raise ValueError(f"{name} must be a numeric array")
    return array


def equal_error_rate(scores, is_fake) -> tuple[float, float]:
    """Equal error rate of real-versus-fake decisions, and its threshold.

    The EER is the rate at which the false acceptance rate (real called fake, FPR) equals the
    false rejection rate (fake called real, FNR = 1 - TPR). On the ROC points of
    :func:`sklearn.metrics.roc_curve` the crossing lies between two consecutive points; it is
    found by linear interpolation of ``FPR - FNR`` there.

    Parameters
    ----------
    scores : array_like, any shape
        Fake scores (higher = more likely fake), finite.
    is_fake : array_like of bool, same shape
        True on fakes.

    Returns
    -------
    eer : float
        In [0, 1] (0.5 for a random score).
    threshold : float
        A score at the crossing (``score >= threshold`` is called fake).
    """
    from sklearn.metrics import roc_curve

    s = _array(scores, "scores").astype(np.float64).reshape(-1)
    y = _array(is_fake, "is_fake").astype(bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.size}) and is_fake ({y.size}) must have the same size")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    if y.all() or not y.any():
        raise ValueError("is_fake must hold both real (False) and fake (True) items")
    fpr, tpr, thresholds = roc_curve(y, s)
    fnr = 1.0 - tpr
    difference = fpr - fnr  # rises from -1 (nothing called fake) to +1
    k = int(np.searchsorted(difference, 0.0, side="left"))
    if k == 0:
        return float(fpr[0]), float(thresholds[0])
    d0, d1 = difference[k - 1], difference[k]
    weight = 0.0 if d1 == d0 else -d0 / (d1 - d0)
    eer = fpr[k - 1] + weight * (fpr[k] - fpr[k - 1])
    threshold = (
        thresholds[k]
        if np.isinf(thresholds[k - 1])
        else (thresholds[k - 1] + weight * (thresholds[k] - thresholds[k - 1]))
    )
    return float(eer), float(threshold)


def forgery_localisation(predicted, forged, valid=None) -> dict:
    """Pixel F1 and IoU of predicted forged regions against the true ones (pooled over all
    images, as SurFITR's localisation scores).

    Parameters
    ----------
    predicted, forged : array_like of bool, (B, H, W) or any shape
        Predicted and true forged pixels (a fake map).
    valid : array_like of bool, same shape, optional
        Pixels to count (default all).

    Returns
    -------
    dict with ``f1``, ``iou``, ``precision``, ``recall`` (NaN where undefined: no true or no
    predicted forged pixel) and ``n_forged``.
    """
    p = _array(predicted, "predicted").astype(bool)
    t = _array(forged, "forged").astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"predicted {p.shape} and forged {t.shape} must have the same shape")
    if valid is not None:
        v = _array(valid, "valid").astype(bool)
        if v.shape != p.shape:
            raise ValueError(f"valid {v.shape} must have the shape {p.shape}")
        p, t = p[v], t[v]
    tp = float(np.sum(p & t))
    fp, fn = float(np.sum(p & ~t)), float(np.sum(~p & t))
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    iou = tp / (tp + fp + fn) if tp + fp + fn else float("nan")
    return {
        "f1": f1,
        "iou": iou,
        "precision": precision,
        "recall": recall,
        "n_forged": int(np.sum(t)),
    }


def forgery_detection(score_maps, forged, threshold: float, valid=None) -> dict:
    """SurFITR-style evaluation of forgery score maps: detection AUC and localisation.

    Parameters
    ----------
    score_maps : array_like, (B, H, W)
        Per-pixel fake (anomaly) scores, higher = more likely forged.
    forged : array_like of bool, (B, H, W)
        True forged pixels (the scenes' ``fake_map``).
    threshold : float
        Pixels with ``score > threshold`` are predicted forged (e.g. the 95 %-TPR threshold of
        the detector).
    valid : array_like of bool, (B, H, W), optional
        Pixels to count (e.g. object pixels only).

    Returns
    -------
    dict
        ``pixel_auroc`` (forged vs. real pixels), ``image_auroc`` (an image's score is its
        highest pixel score; an image is forged when it holds a forged pixel; NaN when all
        images are alike), ``eer`` (pixel EER), and the keys of :func:`forgery_localisation`.
    """
    from sklearn.metrics import roc_auc_score

    s = _array(score_maps, "score_maps").astype(np.float64)
    t = _array(forged, "forged").astype(bool)
    if s.ndim != 3 or s.shape != t.shape:
        raise ValueError(
            f"score_maps and forged must be (B, H, W) alike; got {s.shape} and {t.shape}"
        )
    v = np.ones_like(t) if valid is None else _array(valid, "valid").astype(bool)
    if v.shape != t.shape:
        raise ValueError(f"valid {v.shape} must have the shape {t.shape}")
    pixel_scores, pixel_truth = s[v], t[v]
    if pixel_truth.all() or not pixel_truth.any():
        raise ValueError("the valid pixels must hold both forged and real pixels")
    image_scores = np.array([s[i][v[i]].max() if v[i].any() else -np.inf for i in range(len(s))])
    image_truth = np.array([bool((t[i] & v[i]).any()) for i in range(len(s))])
    keep = np.isfinite(image_scores)
    image_auroc = (
        float(roc_auc_score(image_truth[keep], image_scores[keep]))
        if image_truth[keep].any() and not image_truth[keep].all()
        else float("nan")
    )
    return {
        "pixel_auroc": float(roc_auc_score(pixel_truth, pixel_scores)),
        "image_auroc": image_auroc,
        "eer": equal_error_rate(pixel_scores, pixel_truth)[0],
        **forgery_localisation(s > threshold, t, v),
    }


def group_accuracies(pred_labels, true_labels, groups, valid=None) -> dict:
    """Pixel accuracy per group.

    Parameters
    ----------
    pred_labels, true_labels : array_like of int, same shape (e.g. (B, H, W))
    groups : array_like of int or str, same shape
        Group of every pixel (e.g. an illuminant or background id per scene, broadcast).
    valid : array_like of bool, same shape, optional
        Pixels to count (default ``true_labels >= 0``).

    Returns
    -------
    dict
        group -> accuracy in [0, 1] (groups with no valid pixel are left out).
    """
    p, t = _array(pred_labels, "pred_labels"), _array(true_labels, "true_labels")
    g = _array(groups, "groups")
    if not (p.shape == t.shape == g.shape):
        raise ValueError(
            f"pred_labels, true_labels and groups must have one shape; got {p.shape}, "
            f"{t.shape}, {g.shape}"
        )
    v = t >= 0 if valid is None else _array(valid, "valid").astype(bool)
    out = {}
    for group in np.unique(g[v]):
        here = v & (g == group)
        out[group.item() if hasattr(group, "item") else group] = float(np.mean(p[here] == t[here]))
    return out


def group_accuracy_drop(pred_common, true_common, pred_counter, true_counter, classes=None) -> dict:
    """Accuracy drop from the common to the counter group ([Sober]'s robustness measure).

    The two groups hold the same materials: *common* as in training (the twin's illuminant
    and backgrounds), *counter* under another illuminant or on another background. Accuracy
    is averaged per class (each class weighs the same, as group accuracy does) over the
    classes present in both groups.

    Parameters
    ----------
    pred_common, true_common : array_like of int, same shape
        Predicted and true labels of the common group (negative labels are ignored).
    pred_counter, true_counter : array_like of int, same shape
        The same for the counter group.
    classes : sequence of int, optional
        Classes to average over (default: those present in both groups).

    Returns
    -------
    dict
        ``common`` and ``counter`` accuracies (fractions), ``drop`` (percentage points,
        ``100 * (common - counter)``), ``worst_group`` (the lowest per-class accuracy over both
        groups, a fraction) and ``classes`` (the classes averaged).
    """

    def per_class(pred, true):
        p, t = _array(pred, "pred"), _array(true, "true")
        if p.shape != t.shape:
            raise ValueError(f"predictions {p.shape} and labels {t.shape} must match in shape")
        return {int(c): float(np.mean(p[t == c] == c)) for c in np.unique(t[t >= 0])}

    common, counter = per_class(pred_common, true_common), per_class(pred_counter, true_counter)
    chosen = sorted(set(common) & set(counter)) if classes is None else [int(c) for c in classes]
    missing = [c for c in chosen if c not in common or c not in counter]
    if not chosen or missing:
        raise ValueError(
            f"no class is present in both groups (or classes {missing} are missing from one)"
        )
    a = float(np.mean([common[c] for c in chosen]))
    b = float(np.mean([counter[c] for c in chosen]))
    worst = min(min(common[c], counter[c]) for c in chosen)
    return {
        "common": a,
        "counter": b,
        "drop": 100.0 * (a - b),
        "worst_group": worst,
        "classes": chosen,
    }
