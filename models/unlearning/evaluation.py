"""One evaluator for every unlearning method: forget/retain metrics, MIA, ES, model mixing.

Q. Wang, B. Han, P. Yang, J. Zhu, T. Liu, M. Sugiyama, "Towards Effective Evaluations and
Comparisons for LLM Unlearning Methods", ICLR 2025 (arXiv:2406.09179).

Kept apart from the methods (as open-unlearning and pytorch-ood keep metrics apart): every
function reads a model and batches (the layouts of :mod:`.toolkit`) and nothing else.

* **Extraction strength** (sec. 4, ES): for a target answer ``y`` of ``n`` elements,
  ``ES = 1 - (1/n) min_k { k : the model, given y_<k, generates y_>=k }``. For a causal
  model greedy generation from ``y_<k`` reproduces ``y_>=k`` exactly when every teacher-forced
  argmax from position ``k`` on is correct (the contexts are then identical), so ES is read
  from one teacher-forced pass (:func:`extraction_strength`). 1 = the whole answer is
  extracted from nothing, 0 = not even the last element.
* **Membership inference** (:func:`mia_auc`): the LOSS attack (Yeom et al. 2018) or Min-k%
  (Shi et al. 2024), scored per sample (a sequence, an image, a scene); the AUC of telling
  members from non-members, 0.5 = indistinguishable (what a retrained model gives).
* **Calibration by model mixing** (sec. 5): methods are compared at *equal retain
  performance*. The unlearned weights are mixed with the original's,
  ``theta(a) = (1 - a) theta_ori + a theta_unl``, and the largest ``a`` in [0, 1] whose retain
  score reaches a common target is found by bisection (:func:`calibrate_by_mixing`); the
  forget metric is then read at that ``a``.
* Segmenter metrics: element accuracy on the forget set, retain mIoU, output KL to the
  retrained model on held-out data (:func:`output_kl`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hyplex.models.unlearning.toolkit import (
    as_batch,
    device_of,
    element_log_probs,
    flat_logits,
)

__all__ = [
    "element_accuracy",
    "mean_iou",
    "output_kl",
    "sample_scores",
    "auc",
    "mia_auc",
    "extraction_strength",
    "mix_models",
    "calibrate_by_mixing",
    "UnlearningEvaluator",
]


def _elements(model: nn.Module, batches: Iterable, device=None):
    """Yield ``(logits (M, C), targets (M,), weights (M,), batch_size)`` with no gradient."""
    # no_grad only around the forward pass: a context held across a ``yield`` would leak the
    # disabled grad mode into the caller
    for item in batches:
        batch = as_batch(item)
        if device is not None:
            batch = batch.to(device)
        with torch.no_grad():
            logits = model(batch.inputs)
        logits, targets, weights = flat_logits(logits, batch.targets, batch.mask)
        yield logits.float(), targets, weights, int(batch.targets.shape[0])


def element_accuracy(model: nn.Module, batches: Iterable) -> float:
    """Weighted share of counted elements whose argmax equals the target, in [0, 1]."""
    hits = total = 0.0
    for logits, targets, weights, _ in _elements(model, batches, device_of(model)):
        hits += float(((logits.argmax(1) == targets).float() * weights).sum())
        total += float(weights.sum())
    if total == 0:
        raise ValueError("no element counts in the batches (empty masks?)")
    return hits / total


def mean_iou(model: nn.Module, batches: Iterable, n_classes: int, classes=None) -> float:
    """Mean intersection-over-union over ``classes`` (default: every class present in the
    counted targets or predictions), in [0, 1]."""
    intersection = torch.zeros(n_classes, dtype=torch.float64)
    union = torch.zeros(n_classes, dtype=torch.float64)
    for logits, targets, weights, _ in _elements(model, batches, device_of(model)):
        keep = weights > 0
        predicted, truth = logits.argmax(1)[keep].cpu(), targets[keep].cpu()
        for c in range(n_classes):
            p, t = predicted == c, truth == c
            intersection[c] += float((p & t).sum())
            union[c] += float((p | t).sum())
    chosen = torch.arange(n_classes) if classes is None else torch.as_tensor(list(classes))
    chosen = chosen[union[chosen] > 0]
    if chosen.numel() == 0:
        raise ValueError("no class of the batches appears in targets or predictions")
    return float((intersection[chosen] / union[chosen]).mean())


def output_kl(model_p: nn.Module, model_q: nn.Module, batches: Iterable) -> float:
    """Mean over counted elements of ``KL(p || q)`` of the two models' class distributions
    (nats). With ``p`` the retrained model: the distance of an unlearned ``q`` to the gold
    standard."""
    batches = list(batches)
    total = count = 0.0
    device = device_of(model_p)
    streams = zip(
        _elements(model_p, batches, device), _elements(model_q, batches, device), strict=True
    )
    for (lp, _, w, _), (lq, _, _, _) in streams:
        log_p, log_q = torch.log_softmax(lp, 1), torch.log_softmax(lq.to(lp.device), 1)
        kl = (log_p.exp() * (log_p - log_q)).sum(1)
        total += float((kl * w).sum())
        count += float(w.sum())
    if count == 0:
        raise ValueError("no element counts in the batches")
    return total / count


def sample_scores(model: nn.Module, batches: Iterable, attack: str = "loss", k: float = 0.2):
    """Per-sample membership scores (higher = more likely a member), ``(S,)`` numpy.

    ``attack="loss"``: the mean log-likelihood of the sample's counted elements (LOSS);
    ``"min_k"``: the mean of its lowest ``k`` fraction of element log-likelihoods (Min-k%).
    A sample is one entry of the batch's leading axis."""
    if attack not in ("loss", "min_k"):
        raise ValueError(f"attack must be 'loss' or 'min_k'; got {attack!r}")
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1]; got {k!r}")
    scores = []
    for logits, targets, weights, size in _elements(model, batches, device_of(model)):
        log_p = element_log_probs(logits, targets).reshape(size, -1).cpu()
        w = weights.reshape(size, -1).cpu()
        for row, weight in zip(log_p, w, strict=True):
            values = row[weight > 0]
            if values.numel() == 0:
                continue
            if attack == "min_k":
                count = max(1, int(np.ceil(k * values.numel())))
                values = values.sort().values[:count]
            scores.append(float(values.mean()))
    return np.asarray(scores)


def auc(positive_scores, negative_scores) -> float:
    """Area under the ROC curve: ``P(s+ > s-) + P(s+ = s-)/2`` (Mann-Whitney), in [0, 1]."""
    pos, neg = np.asarray(positive_scores, float), np.asarray(negative_scores, float)
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"both score sets need samples; got {pos.size} and {neg.size}")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def mia_auc(model, members: Iterable, nonmembers: Iterable, attack="loss", k=0.2) -> float:
    """AUC of a membership-inference attack telling ``members`` from ``nonmembers`` (0.5 =
    chance; a model never trained on either gives ~0.5)."""
    return auc(
        sample_scores(model, members, attack, k), sample_scores(model, nonmembers, attack, k)
    )


def extraction_strength(logits: torch.Tensor, targets: torch.Tensor, mask=None) -> torch.Tensor:
    """ES per sequence from teacher-forced logits of a causal model.

    Parameters
    ----------
    logits : (B, T, V) next-element logits aligned with ``targets``.
    targets : (B, T) integer targets.
    mask : (B, T) bool, the answer elements ``y`` (default all).

    Returns
    -------
    torch.Tensor, (B,) in [0, 1]: ``1 - k*/n`` with ``k*`` the shortest answer prefix after
    which every element is predicted (greedy) correctly; sequences without answer get NaN.
    """
    if logits.ndim != 3 or tuple(targets.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"expected logits (B, T, V) and targets (B, T); got {tuple(logits.shape)}, "
            f"{tuple(targets.shape)}"
        )
    mask = torch.ones_like(targets, dtype=torch.bool) if mask is None else mask.bool()
    correct = logits.argmax(-1) == targets
    out = torch.full((targets.shape[0],), float("nan"))
    for b in range(targets.shape[0]):
        hits = correct[b][mask[b]].cpu()
        n = hits.numel()
        if n == 0:
            continue
        # k* = n - (length of the all-correct suffix)
        wrong = torch.nonzero(~hits).reshape(-1)
        k_star = 0 if wrong.numel() == 0 else int(wrong[-1]) + 1
        out[b] = 1.0 - k_star / n
    return out


def mix_models(original: nn.Module, unlearned: nn.Module, alpha: float) -> nn.Module:
    """``(1 - alpha) theta_original + alpha theta_unlearned`` (floating tensors of the state;
    integer buffers from ``unlearned``), a new module."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha!r}")
    mixed = copy.deepcopy(unlearned)
    a, b = original.state_dict(), unlearned.state_dict()
    state = {
        name: (1 - alpha) * a[name].to(value.device) + alpha * value
        if value.is_floating_point()
        else value
        for name, value in b.items()
    }
    mixed.load_state_dict(state)
    return mixed.eval()


def calibrate_by_mixing(
    original: nn.Module,
    unlearned: nn.Module,
    retain_score: Callable[[nn.Module], float],
    target: float,
    iterations: int = 8,
):
    """The largest mixing weight ``a`` whose mixed model keeps ``retain_score >= target``.

    Parameters
    ----------
    retain_score : model -> float, higher is better (e.g. retain mIoU).
    target : the common retain level all methods are compared at.
    iterations : bisection steps (precision ``2**-iterations``).

    Returns
    -------
    (alpha, mixed model): ``alpha = 1`` if the unlearned model itself meets the target,
    ``0`` (the original) if no mixture does.
    """
    if retain_score(unlearned) >= target:
        return 1.0, unlearned
    low, high = 0.0, 1.0
    for _ in range(int(iterations)):
        middle = 0.5 * (low + high)
        if retain_score(mix_models(original, unlearned, middle)) >= target:
            low = middle
        else:
            high = middle
    return low, mix_models(original, unlearned, low)


@dataclass
class UnlearningEvaluator:
    """The shared evaluator of a segmenter-unlearning case.

    Attributes
    ----------
    forget : batches of the forget data (class case: masks on the forgotten class's pixels).
    retain : batches of the retain data (retain mIoU).
    heldout : batches never trained on (MIA non-members, KL to the retrained model).
    n_classes : classes of the segmenter.
    retrained : the retrain-from-scratch gold standard (None: no KL).
    forgotten_class : the class id forgotten (class case), excluded from the retain mIoU.
    """

    forget: list
    retain: list
    heldout: list
    n_classes: int
    retrained: nn.Module | None = None
    forgotten_class: int | None = None

    def retain_miou(self, model: nn.Module) -> float:
        classes = [c for c in range(self.n_classes) if c != self.forgotten_class]
        return mean_iou(model, self.retain, self.n_classes, classes)

    def evaluate(self, model: nn.Module) -> dict:
        """``forget_accuracy``, ``retain_miou``, ``mia_auc`` (forget vs held-out) and, with a
        retrained model, ``kl_to_retrain`` (held-out data), as floats."""
        result = {
            "forget_accuracy": element_accuracy(model, self.forget),
            "retain_miou": self.retain_miou(model),
            "mia_auc": mia_auc(model, self.forget, self.heldout),
        }
        if self.retrained is not None:
            result["kl_to_retrain"] = output_kl(self.retrained, model, self.heldout)
        return result
