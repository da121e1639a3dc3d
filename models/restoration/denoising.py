"""Denoising low-light hyperspectral cubes: the conditional flow as a denoiser, and a baseline.

HIDFlowNet [HIDFlowNet] was built for this job: learn ``p(clean | noisy)`` and restore by the
posterior mean (or mode), so the same :class:`~hyplex.models.restoration.conditional_flow.
ConditionalFlowDecoder` that decodes barcodes denoises a cube when its condition is the noisy
cube itself (``in_channels = n_bands``).  The noise model is the camera's at short exposure:
shot noise (Poisson in photo-electrons) plus Gaussian read noise (EMVA 1288 rel. 4.0, eq. 6
and 12; the dark signal is taken as subtracted)::

    e_l   ~ Poisson(R_l * n_white) + N(0, sigma_read^2)        electrons, band l
    R~_l  = e_l / n_white                                       noisy apparent reflectance

with ``n_white`` the electrons a white reflector gives per band (lower = darker scene).

:class:`PlainDenoiser` is the plain baseline the flow is compared with: a DnCNN-style residual
CNN [DnCNN] (predicts the noise, trained by mean squared error), of similar size.

References
----------
[HIDFlowNet] Q. Wang, L. Pang, X. Cao, Z. Tian, D. Meng, "HIDFlowNet: A Flow-Based Deep
    Network for Hyperspectral Image Denoising", arXiv:2306.17797, section 3.
[DnCNN] K. Zhang, W. Zuo, Y. Chen, D. Meng, L. Zhang, "Beyond a Gaussian Denoiser: Residual
    Learning of Deep CNN for Image Denoising", IEEE TIP 26(7), 2017, eq. (1) (residual loss).
[EMVA1288] EMVA Standard 1288, release 4.0 (2021), eq. (6), (12).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hyplex.models.data import random_crops
from hyplex.models.restoration.conditional_flow import ConditionalFlowDecoder

__all__ = [
    "DenoiserTraining",
    "PlainDenoiser",
    "flow_denoiser",
    "low_light_cube",
    "train_denoiser",
]


def low_light_cube(
    cube: torch.Tensor,
    white_electrons: float,
    read_noise_electrons: float = 2.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A noisy low-light capture of ``cube`` (shot + read noise, see the module docstring).

    Parameters
    ----------
    cube : torch.Tensor, (..., L, H, W)
        Apparent reflectance in [0, 1] (unitless).
    white_electrons : float
        Photo-electrons a white reflector collects per band and pixel (> 0; e.g. 20 is dark,
        1000 is well lit).
    read_noise_electrons : float
        Read noise standard deviation, electrons (>= 0).
    generator : torch.Generator, optional
        Draws the noise (on the cube's device).

    Returns
    -------
    torch.Tensor
        Noisy reflectance, same shape and dtype as ``cube`` (may leave [0, 1]).
    """
    if not white_electrons > 0:
        raise ValueError(f"white_electrons must be > 0; got {white_electrons}")
    if not read_noise_electrons >= 0:
        raise ValueError(f"read_noise_electrons must be >= 0; got {read_noise_electrons}")
    if not isinstance(cube, torch.Tensor) or cube.ndim < 3:
        raise ValueError("cube must be a torch tensor (..., L, H, W)")
    mean = cube.clamp(min=0.0).double() * float(white_electrons)
    electrons = torch.poisson(mean, generator=generator)
    read = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return ((electrons + read_noise_electrons * read) / white_electrons).to(cube.dtype)


class PlainDenoiser(nn.Module):
    """DnCNN-style residual denoiser [DnCNN]: ``clean = noisy - CNN(noisy)``.

    Parameters
    ----------
    n_bands : int
        Bands ``L`` in and out.
    width : int
        Hidden channels.
    depth : int
        3x3 convolution layers (>= 2).

    Notes
    -----
    ``forward``: ``(B, L, H, W) -> (B, L, H, W)``.
    """

    def __init__(self, n_bands: int, width: int = 48, depth: int = 5):
        super().__init__()
        for name, value, low in (("n_bands", n_bands, 1), ("width", width, 1), ("depth", depth, 2)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}; got {value!r}")
        self.config = {"n_bands": n_bands, "width": width, "depth": depth}
        self.n_bands = n_bands
        layers = [nn.Conv2d(n_bands, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, n_bands, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        if noisy.ndim != 4 or noisy.shape[1] != self.n_bands:
            raise ValueError(
                f"noisy must have shape (B, {self.n_bands}, H, W); got {tuple(noisy.shape)}"
            )
        return noisy - self.net(noisy)


def flow_denoiser(n_bands: int, **config) -> ConditionalFlowDecoder:
    """The conditional flow as a denoiser: condition = the noisy cube (``in_channels = L``).

    ``config``: further :class:`ConditionalFlowDecoder` keyword arguments.  Train it with
    :func:`~hyplex.models.restoration.conditional_flow.train_flow` on (noisy, clean) pairs and
    denoise with ``model(noisy)`` (mode) or ``model.posterior(noisy).mean``.
    """
    return ConditionalFlowDecoder(in_channels=n_bands, n_bands=n_bands, **config)


@dataclass(frozen=True)
class DenoiserTraining:
    """Settings of :func:`train_denoiser` (steps, patches per step, patch side in pixels,
    Adam step size, seed of the patch draws)."""

    steps: int = 300
    batch_size: int = 8
    patch_size: int = 16
    learning_rate: float = 2e-3
    seed: int = 0


def train_denoiser(model: nn.Module, noisy: torch.Tensor, clean: torch.Tensor,
                   settings: DenoiserTraining = DenoiserTraining()) -> list[float]:  # fmt: skip
    """Fit a plain denoiser by mean squared error on random patches; returns the losses.

    Parameters
    ----------
    model : torch.nn.Module
        ``(B, L, h, w) -> (B, L, h, w)``.
    noisy, clean : torch.Tensor, (N, L, H, W)
        Matching noisy and clean cubes.
    """
    if noisy.shape != clean.shape or noisy.ndim != 4:
        raise ValueError(
            f"noisy and clean must be (N, L, H, W) of one shape; got {tuple(noisy.shape)} and "
            f"{tuple(clean.shape)}"
        )
    size = min(settings.patch_size, *clean.shape[-2:])
    device = next(model.parameters()).device
    rng = np.random.default_rng(settings.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    losses = []
    model.train()
    for _ in range(settings.steps):
        x, y = random_crops(rng, (noisy, clean), settings.batch_size, size)
        loss = (model(x.to(device)) - y.to(device)).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
