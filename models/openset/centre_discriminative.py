"""CEDL: a centre-based radial logit for pixel anomaly heads, trained with BCE.

Reference
---------
[CEDL] Z. Zamanzadeh Darban, Q. Wang, C. C. Aggarwal, G. I. Webb, E. Abbasnejad, M. Salehi,
       "CEDL: Centre-Enhanced Discriminative Learning for Anomaly Detection",
       arXiv:2511.12388 (2025), Sec. 3 (the radial reparameterisation of the logit).

The plain supervised head (:class:`~.anomaly_head.BCEAnomalyHead`) scores ``s = w . r + b``:
"normal" is a half-space of the representation space, and an unseen anomaly type that lands
on the normal side of the seen anomalies' hyperplane scores as normal. CEDL keeps the BCE
objective but reparameterises the logit as the radial distance of the representation ``r``
(dimension ``D``) from a learnable centre ``c``::

    a(r) = alpha / sqrt(D) * || r - c ||_2          (radial distance, scaled by the dimension)
    s(r) = a(r) - beta                              (the logit; sigmoid(s) = P(anomaly))
    L    = BCE(sigmoid(s), y),   y = 1 for anomalies

so minimising BCE on normals pulls them *towards* ``c`` (a compact normal ball) and on seen
anomalies pushes them out of it. "Normal" is then a bounded region, and anything far from the
centre in *any* direction, seen type or not, scores high. ``alpha > 0`` (a softplus of a free
parameter) sets the slope, ``beta`` the radius of the decision sphere (the offset that lets
``sigmoid`` reach below 1/2); ``c`` is initialised at the mean representation of the normal
training barcodes, as Deep SVDD does, and then learned with the rest. The anomaly score is
the logit, a monotone function of ``||r - c||``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hyplex.models.openset.anomaly_head import (
    AnomalyHead,
    AnomalyHeadDetector,
    BCEAnomalyDetector,
)

# BCEAnomalyDetector (the plain head CEDL is measured against) is registered from here.
__all__ = ["BCEAnomalyDetector", "CEDLAnomalyHead", "CentreDiscriminativeDetector", "radial_logit"]


def radial_logit(
    representation: torch.Tensor, centre: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """CEDL's logit ``alpha / sqrt(D) * ||r - c||_2 - beta``.

    Parameters
    ----------
    representation : torch.Tensor, (N, D)
    centre : torch.Tensor, (D,)
    alpha, beta : torch.Tensor, scalars
        Slope (> 0) and offset.

    Returns
    -------
    torch.Tensor, (N,)
    """
    if representation.ndim != 2 or centre.shape != representation.shape[1:]:
        raise ValueError(
            f"representation must be (N, D) and centre (D,); got {tuple(representation.shape)} "
            f"and {tuple(centre.shape)}"
        )
    dimension = representation.shape[1]
    # eps inside the root keeps the gradient finite at r = c
    distance = torch.sqrt(((representation - centre) ** 2).sum(dim=1) + 1e-12)
    return alpha / math.sqrt(dimension) * distance - beta


class CEDLAnomalyHead(AnomalyHead):
    """Pixel anomaly head with CEDL's radial logit (see the module docstring).

    Parameters
    ----------
    in_channels, hidden, embedding_dim
        As :class:`~.anomaly_head.AnomalyHead`.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int = 64,
        embedding_dim: int = 16,
        shape_normalise: bool = True,
    ):
        super().__init__(in_channels, hidden, embedding_dim, shape_normalise)
        self.centre = nn.Parameter(torch.zeros(embedding_dim))
        self.raw_alpha = nn.Parameter(torch.tensor(math.log(math.e - 1.0)))  # softplus -> 1
        self.beta = nn.Parameter(torch.tensor(1.0))

    @property
    def alpha(self) -> torch.Tensor:
        return F.softplus(self.raw_alpha)

    @torch.no_grad()
    def initialise_from(self, normal_points: torch.Tensor) -> None:
        """Centre at the mean normal representation, offset at the median scaled radius."""
        representation = self.represent(normal_points[:65536])
        self.centre.copy_(representation.mean(0))
        self.raw_alpha.fill_(math.log(math.e - 1.0))
        distance = radial_logit(representation, self.centre, self.alpha, torch.zeros(()))
        self.beta.copy_(2.0 * distance.median())

    def logit(self, representation: torch.Tensor) -> torch.Tensor:
        return radial_logit(representation, self.centre, self.alpha, self.beta)


class CentreDiscriminativeDetector(AnomalyHeadDetector):
    """CEDL's head (:class:`CEDLAnomalyHead`) beside a frozen segmenter (registry ``CEDL``)."""

    method = "CEDL"
    head_class = CEDLAnomalyHead
