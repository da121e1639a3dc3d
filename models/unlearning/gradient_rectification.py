"""GRU: gradient rectified unlearning, the forget gradient projected off the retain gradient.

Y. Wang, Q. Wang, F. Liu, W. Huang, Y. Du, X. Du, B. Han, "GRU: Mitigating the Trade-off
between Unlearning and Retention for LLMs", ICML 2025 (arXiv:2503.09117), sec. 3.

The unlearning update should change the model as little as possible away from the forget
gradient ``g_u`` while not increasing the retain risk to first order: minimise
``||g - g_u||^2`` subject to ``<g, g_r> >= 0``. Its closed form (sec. 3.1) is::

    g = g_u - (<g_u, g_r> / ||g_r||^2) g_r     if <g_u, g_r> < 0
    g = g_u                                      otherwise

(the component of ``g_u`` along ``g_r`` is removed only when the two conflict). The retain
gradient is an exponential moving average over steps (sec. 3.2, realisations:
``g_r <- gamma g_r + (1 - gamma) grad R(D_r)``), which the paper uses to steady the
reference direction from small batches. ``g_u`` is the gradient of a base objective from the
registry (default WGA), *without* its retain term; the retain cross-entropy's own gradient
(weight ``retain_weight``) is added after the rectification (it cannot conflict with itself).
"""

from __future__ import annotations

import math

import torch

from hyplex.models.unlearning.toolkit import (
    UnlearningMethod,
    build_method,
    cross_entropy,
    flat_gradient,
)

__all__ = ["rectify", "GradientRectifiedUnlearning"]


def rectify(forget_gradient: torch.Tensor, retain_gradient: torch.Tensor) -> torch.Tensor:
    """GRU's closed-form projection (sec. 3.1).

    Parameters
    ----------
    forget_gradient : (P,) gradient of the unlearning objective ``g_u``.
    retain_gradient : (P,) retain-risk gradient ``g_r`` (an EMA in practice).

    Returns
    -------
    torch.Tensor, (P,)
        ``g_u`` minus its component along ``g_r`` when ``<g_u, g_r> < 0``, else ``g_u``.
    """
    if forget_gradient.shape != retain_gradient.shape or forget_gradient.ndim != 1:
        raise ValueError(
            "gradients must be flat vectors of one shape (P,); got "
            f"{tuple(forget_gradient.shape)} and {tuple(retain_gradient.shape)}"
        )
    dot = torch.dot(forget_gradient, retain_gradient)
    norm2 = torch.dot(retain_gradient, retain_gradient)
    if dot >= 0 or norm2 <= 0:
        return forget_gradient
    return forget_gradient - (dot / norm2) * retain_gradient


class GradientRectifiedUnlearning(UnlearningMethod):
    """GRU around a base objective (``base``: a registry name, default ``"WGA"``).

    Parameters
    ----------
    base : the objective whose forget gradient is rectified.
    gamma : EMA factor of the retain gradient, in [0, 1) (0 = the current batch only).
    retain_weight : weight of the retain cross-entropy added after rectification.
    **base_options : options of the base objective (e.g. ``alpha``, ``beta``).
    """

    name = "GRU"
    paper = "GRU: Mitigating the Trade-off between Unlearning and Retention for LLMs (ICML 2025)"

    def __init__(self, base: str = "WGA", gamma: float = 0.8, retain_weight: float = 1.0,
                 **base_options):  # fmt: skip
        super().__init__(retain_weight)
        if base == "GRU":
            raise ValueError("GRU's base must be another objective, not GRU")
        if not (isinstance(gamma, int | float) and math.isfinite(gamma) and 0 <= gamma < 1):
            raise ValueError(f"gamma must be in [0, 1); got {gamma!r}")
        self.base = build_method(base, retain_weight=0.0, **base_options)
        self.gamma = float(gamma)
        self.retain_average = None
        self.conflicts = 0

    def objective(self, model, reference, forget, retain):
        return self.base.objective(model, reference, forget, retain)

    def prepare(self, model, reference, forget, retain, optimizer) -> None:
        self.retain_average, self.conflicts = None, 0

    def step(self, model, reference, forget, retain, optimizer) -> dict:
        if retain is None:
            raise ValueError("GRU needs retain data (its reference gradient)")
        parameters = optimizer.parameters
        parts = self.base.objective(model, reference, forget, None)
        g_forget = flat_gradient(parts.forget, parameters)
        retain_loss = cross_entropy(model, retain)
        g_retain = flat_gradient(retain_loss, parameters)
        if self.retain_average is None:
            self.retain_average = g_retain.clone()
        else:
            self.retain_average.mul_(self.gamma).add_(g_retain, alpha=1 - self.gamma)
        conflict = bool(torch.dot(g_forget, self.retain_average) < 0)
        self.conflicts += conflict
        update = rectify(g_forget, self.retain_average) + self.retain_weight * g_retain
        optimizer.step_flat(update)
        return {
            "forget_loss": float(parts.forget.detach()),
            "retain_loss": float(retain_loss.detach()),
            "conflict": float(conflict),
        }
