"""Open-set detection metrics per pixel: AUROC, AUPR, FPR at 95 % TPR, and the threshold.

All computed with scikit-learn (``roc_auc_score``, ``average_precision_score``, ``roc_curve``),
as pytorch-ood's ``OODMetrics`` does, on scores that are larger for outliers:

* ``auroc``: area under the ROC curve of "unknown" (positive) against "known" pixels.
* ``aupr``: average precision with the unknown pixels as the positive class (AUPR-Out);
  ``aupr_in`` with the known pixels positive and the negated score.
* ``fpr95``: the false-positive rate at 95 % true-positive rate in pytorch-ood's convention
  (``pytorch_ood.utils.fpr_at_tpr``: OOD is the positive class, label 1): the fraction of
  known pixels flagged unknown at the first threshold that flags >= 95 % of the unknown ones.
  Lower is better.
* ``fpr95_id_positive``: the other convention found in the literature (Liu et al.,
  "Energy-based Out-of-distribution Detection", NeurIPS 2020, whose code passes the ID scores
  as positives): the fraction of unknown pixels accepted as known when 95 % of the known ones
  are accepted. Reported beside ``fpr95`` so that figures from either family of papers compare.

:func:`threshold_at_tpr` is the deployed threshold: the score under which ``tpr`` of the
held-out ID pixels lie (so that 95 % of normal pixels are kept as known).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["ood_metrics", "threshold_at_tpr", "OpenSetMetrics"]


def _flat(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    return array.reshape(-1)


def _pixels(scores, unknown, valid=None) -> tuple[np.ndarray, np.ndarray]:
    """Flat float64 scores and bool unknown masks, restricted to ``valid`` pixels."""
    s, u = _flat(scores).astype(np.float64), _flat(unknown).astype(bool)
    if s.shape != u.shape:
        raise ValueError(f"scores ({s.size} values) and unknown ({u.size}) must match in shape")
    if valid is not None:
        v = _flat(valid).astype(bool)
        if v.shape != s.shape:
            raise ValueError(f"valid ({v.size} values) must match scores ({s.size})")
        s, u = s[v], u[v]
    return s, u


def ood_metrics(scores, unknown, valid=None) -> dict:
    """AUROC, AUPR (out and in) and FPR@95TPR of per-pixel scores.

    Parameters
    ----------
    scores : array_like or torch.Tensor, any shape, e.g. (B, H, W)
        Unknown scores, higher = more unknown.
    unknown : same shape, bool
        True on unknown (OOD) pixels, False on known (ID) ones.
    valid : same shape, bool, optional
        Pixels to evaluate (default all).

    Returns
    -------
    dict with ``auroc``, ``aupr``, ``aupr_in``, ``fpr95``, ``fpr95_id_positive`` (fractions in
    [0, 1]; see the module docstring for the two FPR conventions) and
    ``n_known``, ``n_unknown`` (pixel counts).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    s, u = _pixels(scores, unknown, valid)
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    n_unknown, n_known = int(u.sum()), int((~u).sum())
    if n_unknown == 0 or n_known == 0:
        raise ValueError(
            f"need both known and unknown pixels; got {n_known} known, {n_unknown} unknown"
        )
    fpr95 = _fpr_at_tpr(u, s)  # pytorch-ood: unknown pixels positive, flagged when s is high
    fpr95_id_positive = _fpr_at_tpr(~u, -s)  # known pixels positive, accepted when -s is high
    return {
        "auroc": float(roc_auc_score(u, s)),
        "aupr": float(average_precision_score(u, s)),
        "aupr_in": float(average_precision_score(~u, -s)),
        "fpr95": fpr95,
        "fpr95_id_positive": fpr95_id_positive,
        "n_known": n_known,
        "n_unknown": n_unknown,
    }


def _fpr_at_tpr(positive: np.ndarray, score: np.ndarray, tpr: float = 0.95) -> float:
    """FPR at the first ROC point whose TPR is >= ``tpr`` (positives scored high)."""
    from sklearn.metrics import roc_curve

    fpr, tprs, _ = roc_curve(positive, score)
    return float(fpr[np.searchsorted(tprs, tpr, side="left")])


def threshold_at_tpr(id_scores, tpr: float = 0.95) -> float:
    """The score ``t`` with a fraction ``tpr`` of held-out ID scores ``<= t``.

    Parameters
    ----------
    id_scores : array_like, any shape
        Scores of in-distribution pixels (higher = more unknown), finite.
    tpr : float in (0, 1)
        Fraction of ID pixels to accept as known.

    Returns
    -------
    float, the threshold (pixels with ``score > t`` are flagged unknown).
    """
    values = _flat(id_scores).astype(np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError("id_scores must be a non-empty array of finite scores")
    if not (isinstance(tpr, (int, float)) and 0 < tpr < 1):
        raise ValueError(f"tpr must be a fraction in (0, 1); got {tpr!r}")
    return float(np.quantile(values, tpr, method="higher"))


class OpenSetMetrics:
    """Accumulates per-pixel scores over batches, then :func:`ood_metrics` (pytorch-ood's
    ``OODMetrics`` shape: ``update`` then ``compute``).

    Parameters
    ----------
    max_pixels : int
        Keep at most this many pixels (a deterministic stride over what was added) so that a
        long evaluation stays within memory.
    """

    def __init__(self, max_pixels: int = 2_000_000):
        if int(max_pixels) < 2:
            raise ValueError(f"max_pixels must be >= 2; got {max_pixels}")
        self.max_pixels = int(max_pixels)
        self._scores: list[np.ndarray] = []
        self._unknown: list[np.ndarray] = []

    def update(self, scores, unknown, valid=None) -> None:
        """Add ``scores (B, H, W)`` with their ``unknown (B, H, W)`` masks."""
        s, u = _pixels(scores, unknown, valid)
        self._scores.append(s)
        self._unknown.append(u)

    def compute(self) -> dict:
        """:func:`ood_metrics` of everything added."""
        if not self._scores:
            raise ValueError("no scores were added (call update first)")
        s, u = np.concatenate(self._scores), np.concatenate(self._unknown)
        if s.size > self.max_pixels:
            keep = np.linspace(0, s.size - 1, self.max_pixels).astype(np.int64)
            s, u = s[keep], u[keep]
        return ood_metrics(s, u)

    def reset(self) -> None:
        """Forget every score and mask added by :meth:`update` (a new evaluation); the
        ``max_pixels`` cap is kept."""
        self._scores.clear()
        self._unknown.clear()
