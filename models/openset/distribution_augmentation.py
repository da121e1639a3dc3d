"""DAL: outlier exposure on the worst outlier distribution in a Wasserstein ball (embeddings).

Q. Wang, Z. Fang, Y. Zhang, F. Liu, Y. Li, B. Han, "Learning to Augment Distributions for
Out-of-distribution Detection", NeurIPS 2023 (code: github.com/tmlr-group/DAL).

The open-world error of OE is bounded by the discrepancy between the auxiliary and the real
OOD distributions. DAL trains against every distribution in a Wasserstein ball around the
auxiliary outlier distribution ``D_aux``, in the embedding space ``e = phi(x)`` of the
penultimate layer (section 4)::

    min_theta  L_CE(theta; D_in) + lambda sup_{D : W(D, D_aux_e) <= rho} E_{e ~ D} L_OE(h(e))

where ``h`` is the classifier on the embeddings. The supremum is taken through its
Lagrangian (the Wasserstein-DRO dual, the paper's eq. (5)-(6)): each outlier embedding
``e`` moves to ``e + delta`` maximising ``L_OE(h(e + delta)) - gamma ||delta||_1 / D``, by
``n_iterations`` normalised gradient-ascent steps of size ``strength`` from a tiny random
start; the multiplier ``gamma`` (the transport-cost price) is then updated by dual ascent,
``gamma <- clip(gamma - beta (rho - mean ||delta||_1 / D), 0, gamma_max)``, so that the
mean transport cost stays near the ball's radius ``rho``. The model is trained with OE on the
moved embeddings ``h(e + delta)`` (gradients flow to ``phi`` through ``e``).

Here the embedding is the per-pixel feature vector that feeds the segmenter's 1x1 head
(:func:`~.outlier_exposure.features_and_logits`), and the outliers are the planted auxiliary
pixels. With ``strength = 0`` it is OE. Scores: MSP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hyplex.models.openset.outlier_exposure import (
    OutlierBatch,
    OutlierExposureDetector,
    OutlierObjective,
    features_and_logits,
    pixels,
    uniform_cross_entropy,
)

__all__ = ["WassersteinOutlierAugmentation", "DistributionAugmentationDetector", "worst_case_shift"]


def worst_case_shift(
    head: nn.Conv2d,
    embeddings: torch.Tensor,
    gamma: float,
    strength: float,
    n_iterations: int,
    generator=None,
) -> torch.Tensor:
    """The transport ``delta (N, D)`` of outlier embeddings ``(N, D)`` that maximises
    ``L_OE(h(e + delta)) - gamma mean|delta|`` by normalised gradient ascent (DAL, eq. (6)).

    ``head`` is the segmenter's 1x1 classifier convolution (applied as a linear map).
    """
    e = embeddings.detach()
    weight = head.weight.reshape(head.out_channels, -1)
    noise = torch.rand(e.shape, generator=generator).to(e) * 1e-4
    delta = noise
    for _ in range(int(n_iterations)):
        delta = delta.detach().requires_grad_(True)
        logits = F.linear(e + delta, weight, head.bias)
        cost = delta.abs().mean(-1).mean()
        objective = uniform_cross_entropy(logits).mean() - gamma * cost
        (grad,) = torch.autograd.grad(objective, [delta])
        grad = grad / (grad.norm(dim=-1, keepdim=True) + 1e-12)
        delta = delta.detach() + strength * grad
    return delta.detach()


class WassersteinOutlierAugmentation(OutlierObjective):
    """DAL's step objective (see the module docstring).

    Parameters
    ----------
    weight : lambda, the OE weight.
    rho : the Wasserstein ball's radius (mean absolute transport per embedding dimension).
    strength : ascent step size in embedding units; ``n_iterations`` ascent steps.
    beta : dual step of ``gamma``; ``gamma_max`` its upper bound (also its start, 0.01 in the
        reference code).
    """

    name = "DAL"

    def __init__(
        self,
        weight=0.5,
        rho=0.01,
        strength=0.01,
        n_iterations=5,
        beta=0.5,
        gamma_max=1.0,
        gamma_start=0.01,
    ):
        super().__init__(weight)
        self.rho, self.strength, self.n_iterations = float(rho), float(strength), int(n_iterations)
        self.beta, self.gamma_max = float(beta), float(gamma_max)
        self.gamma = float(gamma_start)
        self.last_cost = 0.0

    def loss(self, model: nn.Module, batch: OutlierBatch):
        if not batch.unknown.any() or self.weight == 0:
            return super().loss(model, batch)
        features, logits = features_and_logits(model, batch.barcodes)
        ce = self.cross_entropy(logits, batch)
        embeddings = pixels(features, batch.unknown)
        delta = worst_case_shift(
            model.head, embeddings, self.gamma, self.strength, self.n_iterations, batch.generator
        )
        cost = float(delta.abs().mean())
        self.gamma = min(max(self.gamma - self.beta * (self.rho - cost), 0.0), self.gamma_max)
        self.last_cost = cost
        weight = model.head.weight.reshape(model.head.out_channels, -1)
        moved = F.linear(embeddings + delta, weight, model.head.bias)
        oe = uniform_cross_entropy(moved).mean()
        stats = {"ce": ce.item(), "outlier": oe.item(), "gamma": self.gamma, "transport": cost}
        return ce + self.weight * oe, stats


class DistributionAugmentationDetector(OutlierExposureDetector):
    """DAL: fine-tune with :class:`WassersteinOutlierAugmentation`, score with MSP.

    Options (defaults): those of OE plus ``rho`` 0.01, ``strength`` 0.01, ``n_iterations``
    5, ``beta`` 0.5, ``gamma_max`` 1 (the reference code's values; it uses 10 iterations).
    """

    method = "DAL"
    defaults = {
        **OutlierExposureDetector.defaults,
        "rho": 0.01,
        "strength": 0.01,
        "n_iterations": 5,
        "beta": 0.5,
        "gamma_max": 1.0,
    }

    def objective(self) -> OutlierObjective:
        o = self.options
        return WassersteinOutlierAugmentation(
            o["outlier_weight"],
            o["rho"],
            o["strength"],
            int(o["n_iterations"]),
            o["beta"],
            o["gamma_max"],
        )
