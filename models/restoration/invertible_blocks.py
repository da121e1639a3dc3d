"""Invertible layers of the conditional flow decoder, each with an exact log-determinant.

Every layer maps ``h (B, L, h, w) <-> h'`` per pixel along the band axis (the networks that
produce scales and shifts see a 3x3 neighbourhood of their inputs), so the Jacobian is
block-diagonal over pixels and ``log|det|`` is a sum of per-pixel terms:

    invertible 1x1 convolution (Glow [Glow] section 3.2, Table 1):   h * w * log|det W|
    conditional affine injector (SRFlow [SRFlow] section 3.3):       sum s(c)
    conditional affine coupling (RealNVP [RealNVP] eq. 6-7):         sum s(x_a, c)
    band flip (a permutation):                                       0

Each layer's ``forward(x, [condition,] reverse=False)`` returns ``(y, logdet)`` with
``logdet`` of shape ``(B,)``; ``reverse=True`` runs the inverse and returns ``-logdet``.
The networks' last convolutions start at zero, so an untrained block is the identity
(Glow's zero initialisation).  These are the invertible conditional blocks (ICBs) of
[HIDFlowNet] section 3, assembled by
:class:`hyplex.models.restoration.conditional_flow.ConditionalFlowDecoder`.

References
----------
[HIDFlowNet] Q. Wang, L. Pang, X. Cao, Z. Tian, D. Meng, "HIDFlowNet: A Flow-Based Deep
    Network for Hyperspectral Image Denoising", arXiv:2306.17797, section 3.
[Glow] D. P. Kingma, P. Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
    NeurIPS 2018, section 3.2 and Table 1.
[SRFlow] A. Lugmayr et al., "SRFlow: Learning the Super-Resolution Space with Normalizing
    Flow", ECCV 2020, section 3.3 (affine injector).
[RealNVP] L. Dinh, J. Sohl-Dickstein, S. Bengio, "Density estimation using Real NVP", ICLR
    2017, eq. (6)-(7).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "BandFlip",
    "ConditionalAffineCoupling",
    "ConditionalAffineInjector",
    "InvertibleConv1x1",
    "is_conditional",
]


class InvertibleConv1x1(nn.Module):
    """Invertible 1x1 convolution over the band axis [Glow] section 3.2.

    ``y = W x`` at every pixel, ``W`` (L, L) initialised as a random rotation (from the torch
    default generator, like every ``nn`` initialiser; seed with ``torch.manual_seed``).
    ``log|det dy/dx| = h * w * log|det W|`` per image.
    """

    def __init__(self, channels: int):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))
        self.weight = nn.Parameter(q.to(torch.float32))

    def forward(self, x: torch.Tensor, reverse: bool = False):
        height, width = x.shape[-2:]
        weight = self.weight.double()
        logdet = height * width * torch.linalg.slogdet(weight)[1].to(x.dtype)
        if reverse:
            weight = torch.linalg.inv(weight)
        y = torch.einsum("ij,bjhw->bihw", weight.to(x.dtype), x)
        return y, (-logdet if reverse else logdet).expand(x.shape[0])


def _conv_net(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    net = nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(hidden, hidden, 1),
        nn.GELU(),
        nn.Conv2d(hidden, out_channels, 3, padding=1),
    )
    nn.init.zeros_(net[-1].weight)  # every block starts as the identity (Glow's zero init)
    nn.init.zeros_(net[-1].bias)
    return net


class ConditionalAffineInjector(nn.Module):
    """``y = x * exp(s(c)) + t(c)``: conditioning enters every band [SRFlow] section 3.3;
    ``log|det| = sum s`` over bands and pixels (``s`` soft-clamped to ``+-max_log_scale``)."""

    def __init__(self, channels: int, condition_channels: int, hidden: int, max_log_scale: float):
        super().__init__()
        self.net = _conv_net(condition_channels, hidden, 2 * channels)
        self.max_log_scale = float(max_log_scale)

    def forward(self, x, condition, reverse: bool = False):
        raw_scale, shift = self.net(condition).chunk(2, dim=1)
        log_scale = self.max_log_scale * torch.tanh(raw_scale / self.max_log_scale)
        logdet = log_scale.flatten(1).sum(1)
        if reverse:
            return (x - shift) * torch.exp(-log_scale), -logdet
        return x * torch.exp(log_scale) + shift, logdet


class ConditionalAffineCoupling(nn.Module):
    """Conditional affine coupling [RealNVP] eq. (6)-(7) with the condition ``c`` as input.

    ``x = (x_a, x_b)`` split along bands; ``(s, t) = NN(x_a, c)``;
    ``y_a = x_a``, ``y_b = x_b * exp(s) + t``; ``log|det| = sum s``.  The scale is soft-clamped
    to ``+-max_log_scale`` so that an untrained or diverging net stays invertible in float32.
    """

    def __init__(self, channels: int, condition_channels: int, hidden: int, max_log_scale: float):
        super().__init__()
        if channels < 2:
            raise ValueError(f"a coupling needs at least 2 bands; got {channels}")
        self.split = channels // 2
        self.net = _conv_net(self.split + condition_channels, hidden, 2 * (channels - self.split))
        self.max_log_scale = float(max_log_scale)

    def forward(self, x, condition, reverse: bool = False):
        x_a, x_b = x[:, : self.split], x[:, self.split :]
        raw_scale, shift = self.net(torch.cat([x_a, condition], dim=1)).chunk(2, dim=1)
        log_scale = self.max_log_scale * torch.tanh(raw_scale / self.max_log_scale)
        logdet = log_scale.flatten(1).sum(1)
        if reverse:
            y_b = (x_b - shift) * torch.exp(-log_scale)
            return torch.cat([x_a, y_b], dim=1), -logdet
        return torch.cat([x_a, x_b * torch.exp(log_scale) + shift], dim=1), logdet


class BandFlip(nn.Module):
    """Reverses the band order (volume-preserving) so the next coupling updates the other
    half."""

    def forward(self, x: torch.Tensor, reverse: bool = False):
        return x.flip(1), torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)


def is_conditional(layer: nn.Module) -> bool:
    """Whether ``layer`` takes the condition (``layer(x, condition, reverse)``)."""
    return isinstance(layer, (ConditionalAffineCoupling, ConditionalAffineInjector))
