"""The G-effect diagnostic and the objectives of its paper: GA, GD, NPO, WGA, TNPO, WTNPO.

Q. Wang, J. P. Zhou, Z. Zhou, S. Shin, B. Han, K. Q. Weinberger, "Rethinking LLM Unlearning
Objectives: A Gradient Perspective and Go Beyond", ICLR 2025 (arXiv:2502.19301).

**G-effect** (sec. 3). One step ``theta <- theta - eta grad L`` of an unlearning objective ``L``
changes a risk ``R`` (the negative log-likelihood) by, to first order,
``R(theta') - R(theta) ~= -eta grad R . grad L``. The G-effect is the inner product::

    e(D) = grad_theta R(D; theta)^T grad_theta L(D_u; theta)

Unlearning wants ``e(D_u) < 0`` (the forget risk rises) and ``e(D_r) >= 0`` (the retain risk
does not rise); :func:`g_effect` returns both, for the whole network and per parameter tensor
("layers", the paper's layer-wise view).

**Objectives** (per element ``i`` of the forget data: a token, a pixel, a point; ``p_i =
p_theta(y_i | x)``, ``p_i^ref`` the frozen original's; ``sg`` = stop-gradient):

* GA  (gradient ascent, the paper's eq. for L_GA):   ``L = mean_i log p_i``
* GD  (gradient difference): GA + the retain cross-entropy
* NPO (Zhang et al. 2024, as written in the paper): per sample ``s`` (a sequence / an image)
  ``L = (2/beta) mean_s log(1 + (p_s / p_s^ref)^beta)``, ``log p_s = sum_{i in s} log p_i``
* WGA (sec. 5, weighted GA): ``L = mean_i sg(p_i^alpha) log p_i``: the inverse-confidence
  factor ``1/p_i`` of GA's gradient ``-grad p_i / p_i`` is cancelled for already-forgotten
  elements, which stops GA's excessive unlearning.
* TNPO (token-wise NPO): ``L = (2/beta) mean_i log(1 + (p_i / p_i^ref)^beta)``
* WTNPO (weighted TNPO): TNPO's terms weighted by ``sg(p_i^alpha)``.

Every method except GA also minimises the retain cross-entropy (``retain_weight``, GD's
regulariser), as the paper pairs its objectives with a retain term.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hyplex.models.unlearning.toolkit import (
    Batch,
    Objective,
    UnlearningMethod,
    as_batch,
    cross_entropy,
    element_log_probs,
    flat_gradient,
    forward_elements,
    trainable_parameters,
    weighted_mean,
)

__all__ = [
    "GEffect",
    "g_effect",
    "GradientAscent",
    "GradientDifference",
    "NegativePreferenceOptimization",
    "WeightedGradientAscent",
    "TokenwiseNPO",
    "WeightedTokenwiseNPO",
    "sample_log_likelihood",
]


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0; got {value}")
    return float(value)


def _non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0; got {value}")
    return float(value)


def _retain(model, method: UnlearningMethod, retain: Batch | None):
    if retain is None or method.retain_weight == 0:
        return None
    return cross_entropy(model, retain)


class GradientAscent(UnlearningMethod):
    """GA: ascend the forget log-likelihood, ``L = mean_i log p_i`` (no retain term)."""

    name = "GA"
    paper = "Rethinking LLM Unlearning Objectives (ICLR 2025), L_GA"

    def __init__(self, retain_weight: float = 0.0):
        super().__init__(retain_weight)

    def objective(self, model, reference, forget, retain):
        logits, targets, weights = forward_elements(model, forget)
        loss = weighted_mean(element_log_probs(logits, targets), weights)
        return Objective(loss, _retain(model, self, retain))


class GradientDifference(GradientAscent):
    """GD: GA on the forget data plus the retain cross-entropy."""

    name = "GD"

    def __init__(self, retain_weight: float = 1.0):
        super().__init__(retain_weight)


class WeightedGradientAscent(UnlearningMethod):
    """WGA: ``L = mean_i sg(p_i^alpha) log p_i``; ``alpha >= 0`` (0 = GA)."""

    name = "WGA"
    paper = "Rethinking LLM Unlearning Objectives (ICLR 2025), sec. 5, WGA"

    def __init__(self, alpha: float = 1.0, retain_weight: float = 1.0):
        super().__init__(retain_weight)
        self.alpha = _non_negative("alpha", alpha)

    def objective(self, model, reference, forget, retain):
        logits, targets, weights = forward_elements(model, forget)
        log_p = element_log_probs(logits, targets)
        factor = torch.exp(self.alpha * log_p).detach()
        loss = weighted_mean(factor * log_p, weights)
        return Objective(loss, _retain(model, self, retain))


def sample_log_likelihood(logits, targets, weights, batch_size: int) -> torch.Tensor:
    """``log p_s = sum_{i in s} w_i log p_i`` per leading-axis sample: ``(M,) -> (B,)``."""
    log_p = element_log_probs(logits, targets) * weights
    return log_p.reshape(batch_size, -1).sum(dim=1)


class NegativePreferenceOptimization(UnlearningMethod):
    """NPO at the sample level (a sequence / an image / a point):
    ``L = (2/beta) mean_s softplus(beta (log p_s - log p_s^ref))``."""

    name = "NPO"
    paper = "Rethinking LLM Unlearning Objectives (ICLR 2025), L_NPO (Zhang et al. 2024)"

    def __init__(self, beta: float = 0.1, retain_weight: float = 1.0):
        super().__init__(retain_weight)
        self.beta = _positive("beta", beta)

    def objective(self, model, reference, forget, retain):
        logits, targets, weights = forward_elements(model, forget)
        count = _leading(forget)
        log_p = sample_log_likelihood(logits, targets, weights, count)
        with torch.no_grad():
            ref_logits, _, _ = forward_elements(reference, forget)
            log_ref = sample_log_likelihood(ref_logits, targets, weights, count)
        loss = (2.0 / self.beta) * F.softplus(self.beta * (log_p - log_ref)).mean()
        return Objective(loss, _retain(model, self, retain))


def _leading(batch: Batch) -> int:
    return int(batch.targets.shape[0]) if batch.targets.ndim > 0 else 1


class TokenwiseNPO(UnlearningMethod):
    """TNPO: ``L = (2/beta) mean_i w_i softplus(beta (log p_i - log p_i^ref))`` with
    ``w_i = 1`` (TNPO) or ``sg(p_i^alpha)`` (WTNPO, ``alpha > 0``)."""

    name = "TNPO"
    paper = "Rethinking LLM Unlearning Objectives (ICLR 2025), sec. 5, TNPO"

    def __init__(self, beta: float = 0.1, alpha: float = 0.0, retain_weight: float = 1.0):
        super().__init__(retain_weight)
        self.beta = _positive("beta", beta)
        self.alpha = _non_negative("alpha", alpha)

    def objective(self, model, reference, forget, retain):
        logits, targets, weights = forward_elements(model, forget)
        log_p = element_log_probs(logits, targets)
        with torch.no_grad():
            ref_logits, _, _ = forward_elements(reference, forget)
            log_ref = element_log_probs(ref_logits, targets)
        terms = (2.0 / self.beta) * F.softplus(self.beta * (log_p - log_ref))
        if self.alpha > 0:
            terms = torch.exp(self.alpha * log_p).detach() * terms
        return Objective(weighted_mean(terms, weights), _retain(model, self, retain))


class WeightedTokenwiseNPO(TokenwiseNPO):
    """WTNPO: TNPO with the WGA weights ``sg(p_i^alpha)`` (default ``alpha = 1``)."""

    name = "WTNPO"
    paper = "Rethinking LLM Unlearning Objectives (ICLR 2025), sec. 5, WTNPO"

    def __init__(self, beta: float = 0.1, alpha: float = 1.0, retain_weight: float = 1.0):
        super().__init__(beta=beta, alpha=_positive("alpha", alpha), retain_weight=retain_weight)


class GEffect(dict):
    """``{"forget": e(D_u), "retain": e(D_r), "forget_layers": {name: e}, "retain_layers":
    {name: e}}`` (floats): the G-effects of one objective at the current weights."""


def g_effect(model, method, forget, retain, reference=None, include_retain_term=True) -> GEffect:
    """The G-effect of ``method``'s objective on the forget and the retain risk.

    Parameters
    ----------
    model : torch.nn.Module, inputs -> logits.
    method : an :class:`UnlearningMethod` (or a registry name).
    forget, retain : one batch each (:class:`~hyplex.models.unlearning.toolkit.Batch` or tuple).
    reference : the frozen original (NPO-type objectives); default ``model`` itself.
    include_retain_term : whether the objective's gradient includes its retain regulariser.

    Returns
    -------
    GEffect
        ``e = grad R . grad L`` (unitless); ``e_forget < 0`` means the step unlearns,
        ``e_retain < 0`` that it damages the retain data.
    """
    from hyplex.models.unlearning.toolkit import build_method

    method = build_method(method)
    forget, retain = as_batch(forget), as_batch(retain)
    reference = model if reference is None else reference
    parameters = trainable_parameters(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    parts = method.objective(model, reference, forget, retain)
    loss = parts.forget
    if include_retain_term and parts.retain is not None and method.retain_weight > 0:
        loss = loss + method.retain_weight * parts.retain
    g_loss = flat_gradient(loss, parameters)
    result = GEffect()
    for key, batch in (("forget", forget), ("retain", retain)):
        g_risk = flat_gradient(cross_entropy(model, batch), parameters)
        product = g_risk * g_loss
        result[key] = float(product.sum())
        layers, offset = {}, 0
        for name, p in zip(names, parameters, strict=True):
            layers[name] = float(product[offset : offset + p.numel()].sum())
            offset += p.numel()
        result[f"{key}_layers"] = layers
    return result
