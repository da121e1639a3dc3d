"""BS: unlearning against soft belief targets (the model's own top-k) mixed with one-hot ones.

"LLM Unlearning with LLM Beliefs" (arXiv 2025): gradient ascent on the ground-truth token
alone *squeezes* the probability mass it removes into the model's other high-likelihood
beliefs (often paraphrases of the same fact), so the knowledge survives. The bootstrapping
remedy (token level, BS-T) unlearns the target *and* the model's current top-k beliefs
together, i.e. ascends the log-likelihood of a soft target::

    q_i = (1 - lam) onehot(y_i) + lam sg(topk_k(p_i)) / sum(sg(topk_k(p_i)))
    L   = mean_i sum_c q_ic log p_ic                      (minimised; GA on q)

(``sg``: stop-gradient; the top-k distribution is renormalised over its ``k`` classes). For a
segmenter the "beliefs" of a forgotten-class pixel are the classes it would fall back to: a
plain GA that only pushes the true class down hands the pixel to its runner-up with full
confidence, BS spreads it. ``lam = 0`` is GA. Minimised with the retain cross-entropy.
"""

from __future__ import annotations

import math

import torch

from hyplex.models.unlearning.toolkit import (
    Objective,
    UnlearningMethod,
    cross_entropy,
    forward_elements,
    upcast,
    weighted_mean,
)

__all__ = ["belief_targets", "BeliefSupervision"]


def belief_targets(logits: torch.Tensor, targets: torch.Tensor, k: int, lam: float):
    """Soft targets ``q (M, C)`` from flat logits ``(M, C)`` and targets ``(M,)`` (no grad)."""
    with torch.no_grad():
        probabilities = torch.softmax(upcast(logits), dim=-1)
        k = min(int(k), probabilities.shape[1])
        top, index = probabilities.topk(k, dim=-1)
        belief = torch.zeros_like(probabilities).scatter_(1, index, top)
        belief = belief / belief.sum(dim=1, keepdim=True).clamp_min(1e-12)
        one_hot = torch.zeros_like(probabilities).scatter_(1, targets[:, None], 1.0)
        return (1.0 - lam) * one_hot + lam * belief


class BeliefSupervision(UnlearningMethod):
    """BS-T: GA on ``(1-lam) onehot + lam top-k belief`` + retain cross-entropy."""

    name = "BS"
    paper = "LLM Unlearning with LLM Beliefs (2025), bootstrapping (BS-T)"

    def __init__(self, k: int = 3, lam: float = 0.5, retain_weight: float = 1.0):
        super().__init__(retain_weight)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1; got {k!r}")
        if not (isinstance(lam, int | float) and math.isfinite(lam) and 0 <= lam <= 1):
            raise ValueError(f"lam must be in [0, 1]; got {lam!r}")
        self.k, self.lam = k, float(lam)

    def objective(self, model, reference, forget, retain):
        logits, targets, weights = forward_elements(model, forget)
        q = belief_targets(logits, targets, self.k, self.lam)
        log_p = torch.log_softmax(upcast(logits), dim=-1)
        loss = weighted_mean((q * log_p).sum(dim=1), weights)
        keep = None if retain is None or self.retain_weight == 0 else cross_entropy(model, retain)
        return Objective(loss, keep)
