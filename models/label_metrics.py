"""Segmentation metrics: confusion matrix, IoU, mIoU and the real-versus-fake accuracy.

The label metrics take integer maps of any (equal) shape, numpy or torch, e.g. ``(B, h, w)``,
and return numpy arrays or python floats. The spectral metrics are in
:mod:`hyplex.models.metrics`, which re-exports these.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["confusion_matrix", "iou_per_class", "mean_iou", "real_fake_accuracy"]


def _labels(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.integer) or x.dtype == bool):
        raise ValueError(f"{name} must hold integer labels; got dtype {x.dtype}")
    return x.astype(np.int64, copy=False)


def confusion_matrix(pred_labels, true_labels, n_classes: int, ignore_index=None) -> np.ndarray:
    """Pixel confusion matrix; rows are true classes, columns predicted classes.

    Parameters
    ----------
    pred_labels, true_labels : numpy.ndarray or torch.Tensor of int, same shape (e.g. (B, h, w))
        Predicted and true class ids in ``[0, n_classes)``.
    n_classes : int
        Number of classes.
    ignore_index : int, optional
        True label excluded from the count (e.g. unlabelled pixels).

    Returns
    -------
    numpy.ndarray, (n_classes, n_classes), int64
        ``matrix[i, j]`` = number of pixels of true class ``i`` predicted as ``j``.
    """
    pred, true = _labels(pred_labels, "pred_labels"), _labels(true_labels, "true_labels")
    if pred.shape != true.shape:
        raise ValueError(
            f"pred_labels and true_labels must have the same shape; got {pred.shape} and "
            f"{true.shape}"
        )
    if not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive int; got {n_classes!r}")
    keep = np.ones(true.shape, bool) if ignore_index is None else true != ignore_index
    pred, true = pred[keep], true[keep]
    for name, labels in (("pred_labels", pred), ("true_labels", true)):
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(
                f"{name} must lie in [0, {n_classes}) (apart from ignore_index); "
                f"got values in [{labels.min()}, {labels.max()}]"
            )
    counts = np.bincount(true * n_classes + pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64)


def iou_per_class(pred_labels, true_labels, n_classes: int, ignore_index=None) -> np.ndarray:
    """Intersection over union of each class, ``TP / (TP + FP + FN)``.

    Parameters
    ----------
    pred_labels, true_labels, n_classes, ignore_index
        As in :func:`confusion_matrix`.

    Returns
    -------
    numpy.ndarray, (n_classes,), float64
        IoU per class; NaN for a class absent from both maps.
    """
    matrix = confusion_matrix(pred_labels, true_labels, n_classes, ignore_index)
    true_positive = np.diag(matrix).astype(np.float64)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def mean_iou(pred_labels, true_labels, n_classes: int, ignore_index=None) -> float:
    """Mean IoU (mIoU) over the classes present in either map (NaN classes are skipped).

    Returns
    -------
    float
        mIoU in [0, 1]; NaN when no pixel is counted.
    """
    iou = iou_per_class(pred_labels, true_labels, n_classes, ignore_index)
    present = ~np.isnan(iou)
    return float(iou[present].mean()) if present.any() else math.nan


def real_fake_accuracy(
    pred_labels, true_fake_map, fake_class_ids, mask=None, balanced: bool = False
) -> float:
    """Accuracy of the real-versus-fake decision read from predicted class labels.

    A pixel is predicted fake when its predicted label is one of ``fake_class_ids``; the score
    is the fraction of pixels in ``mask`` where that decision equals ``true_fake_map``, or with
    ``balanced`` the mean of the two recalls, (TPR + TNR) / 2 (Brodersen et al., ICPR 2010):
    fakes are rare, and plain accuracy rewards a net that never says "fake".

    Parameters
    ----------
    pred_labels : numpy.ndarray or torch.Tensor of int, (B, h, w) or (h, w)
        Predicted class ids.
    true_fake_map : numpy.ndarray or torch.Tensor of bool, same shape
        True where the scene object is a fake (the scene's ``fake_map``).
    fake_class_ids : sequence of int
        Class ids that mean "fake" (see ``hyplex.models.segmentation.fake_class_ids``).
    mask : array of bool, same shape, optional
        Pixels to score; default all.  Callers usually pass the object mask
        ``true_labels != 0`` (class 0 is background), so background does not inflate the score.

    balanced : bool
        Score the mean of the real and fake recalls.

    Returns
    -------
    float
        Accuracy in [0, 1]; NaN when ``mask`` selects no pixel (or, ``balanced``, when the
        selected pixels are all real or all fake: there is nothing to balance).
    """
    pred = _labels(pred_labels, "pred_labels")
    fake = _labels(true_fake_map, "true_fake_map").astype(bool)
    selected = np.ones(pred.shape, bool) if mask is None else _labels(mask, "mask").astype(bool)
    if not (pred.shape == fake.shape == selected.shape):
        raise ValueError(
            "pred_labels, true_fake_map and mask must have the same shape; got "
            f"{pred.shape}, {fake.shape} and {selected.shape}"
        )
    ids = np.asarray(list(fake_class_ids), dtype=np.int64)
    predicted_fake = np.isin(pred, ids)
    if not selected.any():
        return math.nan
    if balanced:
        fakes, reals = selected & fake, selected & ~fake
        if not (fakes.any() and reals.any()):
            return math.nan
        return float((predicted_fake[fakes].mean() + (~predicted_fake[reals]).mean()) / 2)
    return float(np.mean(predicted_fake[selected] == fake[selected]))
