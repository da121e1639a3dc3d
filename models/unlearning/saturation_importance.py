"""SatImp: per-element loss weights from saturation and importance.

P. Yang, Q. Wang, Z. Huang, T. Liu, C. Zhang, B. Han, "Exploring Criteria of Loss Reweighting
to Enhance LLM Unlearning", ICML 2025 (arXiv:2505.11953), sec. 3 and 5.

Two goals of reweighting the forget loss (per token; here also per pixel or point):

* **saturation**: data already unlearned (low likelihood ``p_i``) need no more push, so they
  get *low* weight, ``w_sat = p_i^beta1`` (the form of WGA's weight);
* **importance**: the elements that carry the knowledge get *high* weight; the paper's
  likelihood-based importance weights low-likelihood tokens *up*, ``w_imp = (1 - p_i)^beta2``.

SatImp (sec. 5) multiplies them, a smooth, element-level weight that vanishes at both ends::

    w_i = sg( p_i^beta1 (1 - p_i)^beta2 ),      L = mean_i w_i log p_i

(``sg``: stop-gradient), minimised with the retain cross-entropy (``retain_weight``). With
``beta2 = 0`` it is WGA; with ``beta1 = beta2 = 0`` it is GA.
"""

from __future__ import annotations

import math

import torch

from hyplex.models.unlearning.toolkit import (
    Objective,
    UnlearningMethod,
    cross_entropy,
    element_log_probs,
    forward_elements,
    weighted_mean,
)

__all__ = ["satimp_weights", "SaturationImportance"]


def satimp_weights(probabilities: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """``p^beta1 (1 - p)^beta2`` elementwise (no gradient); ``probabilities`` in [0, 1]."""
    p = probabilities.detach().clamp(0.0, 1.0)
    return p.pow(beta1) * (1.0 - p).pow(beta2)


class SaturationImportance(UnlearningMethod):
    """SatImp: ``L = mean_i sg(p_i^beta1 (1-p_i)^beta2) log p_i`` + retain cross-entropy."""

    name = "SatImp"
    paper = "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning (ICML 2025)"

    def __init__(self, beta1: float = 1.0, beta2: float = 1.0, retain_weight: float = 1.0):
        super().__init__(retain_weight)
        for name, value in (("beta1", beta1), ("beta2", beta2)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
        self.beta1, self.beta2 = float(beta1), float(beta2)

    def objective(self, model, reference, forget, retain):
        logits, targets, weights = forward_elements(model, forget)
        log_p = element_log_probs(logits, targets)
        w = satimp_weights(log_p.exp(), self.beta1, self.beta2)
        loss = weighted_mean(w * log_p, weights)
        keep = None if retain is None or self.retain_weight == 0 else cross_entropy(model, retain)
        return Objective(loss, keep)
