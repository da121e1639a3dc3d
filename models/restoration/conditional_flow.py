"""Conditional normalising flow decoder: p(cube | barcodes), with posterior samples and std.

HIDFlowNet [HIDFlowNet] treats restoration as sampling from the conditional distribution of
the clean hyperspectral image ``X`` given its degraded observation ``Y`` instead of one
deterministic map.  It has two parts (section 3 of the paper):

* a non-invertible **conditional encoder** ``c = E(Y)`` that extracts the global, low-frequency
  content (down-sampling and long-range attention), and
* an **invertible decoder**: a stack of invertible conditional blocks (ICBs), each an invertible
  1x1 convolution and conditional affine couplings, mapping ``X <-> z`` given ``c``
  (:mod:`hyplex.models.restoration.invertible_blocks`).

Here the conditional encoder has two branches: the MST-class reconstructor of
:class:`hyplex.models.reconstruction.SpectralTransformer` (the paper's "strong deterministic
encoder"; its estimate ``mu(Y)`` is the low-frequency content) and a light feature branch
(full-resolution and 2x down-sampled convolutions + a spectral-wise attention block);
``c = [features(Y), mu(Y)]``.  The flow models the *residual* of the estimate::

    X = mu(Y) + s * G^{-1}(z; c),      z ~ N(0, I)                                  (1)

with ``G`` the ICB stack and ``s`` a per-band scale (a diagonal affine flow layer,
``log|det| = -h w sum_l log s_l`` on the way to ``z``).  Training minimises the negative
log-likelihood of the change of variables,

    -log p(X | Y) = -log N(z; 0, I) - log|det dz/dX|,   z = G((X - mu) / s; c)      (2)

plus the paper's L1 reconstruction term on the decode of the latent mode ``z = 0``, plus the
L1 regression loss of ``mu`` itself::

    L = NLL + lambda |mu + s G^{-1}(0; c) - X|_1 + |mu - X|_1                      (3)

``mu`` is detached inside the flow terms, so it is trained by its L1 loss alone, exactly as
the plain MST-class decoder is trained (same architecture, same steps and batches give the same
weights: tested).  With the flow at the identity the posterior mean *is* ``mu``; a trained flow
moves it only by the learned mean of the residual.  The flow supplies the uncertainty.

**Calibration** (not in [HIDFlowNet]): a flow fitted on training scenes learns the training
residuals, which are smaller than held-out ones, so its intervals are too narrow.  The per-band
scale ``s`` is therefore fitted after training on a held-out *calibration* split
(:func:`hyplex.models.restoration.posterior_calibration.calibrate_band_scale`), in the
spirit of recalibrated regression [Kuleshov] and split conformal prediction [Conformal]:
for each value the smallest scale at which the sampled central interval covers it is its
score, and ``s_l`` is the ``ceil((n + 1) level) / n`` empirical quantile of the scores of band
``l``, so that a fraction ``level`` of the calibration values lie inside their interval (at
least ``level`` for exchangeable data).
Sampling draws ``z ~ N(0, T^2 I)`` (``T`` the latent temperature of [Glow] section 5, 1 by
default) and inverts eq. (1).

In hyplex ``Y`` is the metasurface barcode map ``(B, F, h, w)`` (9 filters for 34 or 204
bands, so the posterior is wide where the filters cannot tell spectra apart) or, for
denoising, a noisy low-light cube ``(B, L, h, w)`` (:mod:`hyplex.models.restoration.denoising`).

What is not reproduced: HIDFlowNet's encoder uses transformer blocks at several down-sampled
scales and multi-scale squeeze/split of the latent; here the latent is not split (L is only
34-204 values per pixel).  Figures: ``benchmarks/learning_flow_translation.py --quick`` and the
README.

References
----------
[HIDFlowNet] Q. Wang, L. Pang, X. Cao, Z. Tian, D. Meng, "HIDFlowNet: A Flow-Based Deep
    Network for Hyperspectral Image Denoising", arXiv:2306.17797 (Information Fusion 125,
    2026): section 3 (conditional encoder, invertible conditional blocks, NLL + reconstruction
    loss).
[Glow] D. P. Kingma, P. Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
    NeurIPS 2018, sections 3.2 and 5 (temperature).
[Kuleshov] V. Kuleshov, N. Fenner, S. Ermon, "Accurate Uncertainties for Deep Learning Using
    Calibrated Regression", ICML 2018, section 3 (recalibration on a held-out set).
[Conformal] J. Lei, M. G'Sell, A. Rinaldo, R. Tibshirani, L. Wasserman, "Distribution-Free
    Predictive Inference for Regression", JASA 2018, section 2.2 (split conformal, the
    ``ceil((n + 1)(1 - alpha))``-th smallest score).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hyplex.models.decoder_input import as_barcode_maps, restore_points
from hyplex.models.layers import SpectralAttentionBlock
from hyplex.models.restoration.flow_training import FlowTraining, train_flow
from hyplex.models.restoration.invertible_blocks import (
    BandFlip,
    ConditionalAffineCoupling,
    ConditionalAffineInjector,
    InvertibleConv1x1,
    is_conditional,
)

__all__ = [
    "ConditionalAffineCoupling",
    "ConditionalFlowDecoder",
    "FlowTraining",
    "InvertibleConv1x1",
    "PosteriorSummary",
    "flow_loss",
    "train_flow",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _check_positive_int(name: str, value) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def _check_level(level) -> float:
    if not isinstance(level, (int, float)) or not 0.0 < level < 1.0:
        raise ValueError(f"level must be a float in (0, 1); got {level!r}")
    return float(level)


class _FeatureEncoder(nn.Module):
    """``Y (B, C_in, h, w) -> (B, width, h, w)``: a full-resolution branch plus a 2x
    down-sampled one (the global, low-frequency content of [HIDFlowNet] section 3), fused and
    passed through a spectral-wise attention block."""

    def __init__(self, in_channels: int, width: int, n_heads: int):
        super().__init__()
        self.full = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.GELU())
        self.low = nn.Sequential(
            nn.AvgPool2d(2, ceil_mode=True),
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1),
        )
        self.fuse = nn.Conv2d(2 * width, width, 1)
        self.attention = SpectralAttentionBlock(width, n_heads)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        low = F.interpolate(self.low(y), size=y.shape[-2:], mode="bilinear", align_corners=False)
        return self.attention(self.fuse(torch.cat([self.full(y), low], dim=1)))


@dataclass(frozen=True)
class PosteriorSummary:
    """Monte-Carlo summary of ``p(cube | barcodes)``; every field is ``(B, L, h, w)`` (or
    ``(N, L)`` for point input), in the cube's unit (reflectance).

    Attributes
    ----------
    mean : posterior mean (average of the samples).
    std : per-pixel, per-band standard deviation of the samples.
    lower, upper : ``(1 - level) / 2`` and ``(1 + level) / 2`` sample quantiles (the central
        interval; 5 % and 95 % for the default ``level = 0.9``).
    """

    mean: torch.Tensor
    std: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor


class ConditionalFlowDecoder(nn.Module):
    """HIDFlowNet-style conditional flow decoder ``p(cube | barcodes)`` [HIDFlowNet], eq. (1).

    Parameters
    ----------
    in_channels : int
        Channels of the condition: the barcode length ``F`` (9 for Hyplex) or, for
        denoising, the bands ``L`` of the noisy cube.
    n_bands : int
        Bands ``L`` of the cube modelled.
    width : int
        Feature-branch channels of the conditional encoder.
    hidden : int
        Hidden channels of each coupling / injector network.
    n_blocks : int
        Invertible conditional blocks, each ``injector -> 1x1 conv -> coupling -> band flip
        -> coupling``.
    n_heads : int
        Heads of the feature branch's spectral-wise attention (must divide ``width``).
    max_log_scale : float
        Soft clamp of every log-scale (invertibility in float32).
    reconstruction_weight : float
        ``lambda`` of eq. (3) (L1 of the latent-mode decode).
    mean_width, mean_blocks, mean_stages : int
        ``width``, ``n_blocks``, ``n_stages`` of the MST-class estimator ``mu``
        (:class:`hyplex.models.reconstruction.SpectralTransformer`; the defaults are its own,
        so ``build_reconstructor("flow")`` holds the ``"mst"`` decoder).

    Attributes
    ----------
    band_scale : torch.Tensor, (L,)
        The per-band scale ``s`` of eq. (1) (a buffer, saved with the weights): 1 until
        :func:`~hyplex.models.restoration.posterior_calibration.calibrate_band_scale` fits it
        on a calibration split.

    Notes
    -----
    ``forward(barcodes)`` returns the decode of the latent mode ``mu + s G^{-1}(0; c)`` so the
    flow drops into every place a reconstructor goes (``build_reconstructor("flow", ...)``,
    design bundles, the video engine); :meth:`posterior` gives samples, mean and std.
    """

    def __init__(
        self,
        in_channels: int,
        n_bands: int,
        width: int = 32,
        hidden: int = 48,
        n_blocks: int = 3,
        n_heads: int = 1,
        max_log_scale: float = 3.0,
        reconstruction_weight: float = 10.0,
        mean_width: int = 32,
        mean_blocks: int = 2,
        mean_stages: int = 2,
    ):
        # the registry of hyplex.models.reconstruction imports this module: import it lazily
        from hyplex.models.reconstruction import SpectralTransformer

        super().__init__()
        names = ("in_channels", "n_bands", "width", "hidden", "n_blocks", "n_heads")
        names += ("mean_width", "mean_blocks", "mean_stages")
        values = (in_channels, n_bands, width, hidden, n_blocks, n_heads)
        values += (mean_width, mean_blocks, mean_stages)
        checked = {
            name: _check_positive_int(name, v) for name, v in zip(names, values, strict=True)
        }
        if checked["n_bands"] < 2:
            raise ValueError(f"n_bands must be >= 2 for the couplings; got {n_bands}")
        if width % n_heads:
            raise ValueError(f"width must be divisible by n_heads; got {width} and {n_heads}")
        if not max_log_scale > 0:
            raise ValueError(f"max_log_scale must be > 0; got {max_log_scale}")
        if not reconstruction_weight >= 0:
            raise ValueError(f"reconstruction_weight must be >= 0; got {reconstruction_weight}")
        self.config = {
            **checked,
            "max_log_scale": float(max_log_scale),
            "reconstruction_weight": float(reconstruction_weight),
        }
        self.in_channels, self.n_bands = checked["in_channels"], checked["n_bands"]
        self.reconstruction_weight = float(reconstruction_weight)
        # built first, so that under one torch seed it starts as a SpectralTransformer would
        self.mean_decoder = SpectralTransformer(
            in_channels, n_bands, width=mean_width, n_blocks=mean_blocks, n_stages=mean_stages
        )
        self.encoder = _FeatureEncoder(in_channels, width, n_heads)
        self.register_buffer("band_scale", torch.ones(n_bands))
        condition_channels = width + n_bands
        layers = []
        for _ in range(n_blocks):
            layers.append(ConditionalAffineInjector(n_bands, condition_channels, hidden,
                                                    max_log_scale))  # fmt: skip
            layers.append(InvertibleConv1x1(n_bands))
            layers.append(ConditionalAffineCoupling(n_bands, condition_channels, hidden,
                                                    max_log_scale))  # fmt: skip
            layers.append(BandFlip())
            layers.append(ConditionalAffineCoupling(n_bands, condition_channels, hidden,
                                                    max_log_scale))  # fmt: skip
        self.layers = nn.ModuleList(layers)

    # -- the flow ------------------------------------------------------------------------
    def condition(self, barcodes: torch.Tensor) -> torch.Tensor:
        """``c = [features(Y), mu(Y)]``, ``(B, width + L, h, w)``, of barcode maps
        ``(B, F, h, w)``; the last ``L`` channels are the estimate ``mu`` (:meth:`estimate`)."""
        maps, _ = as_barcode_maps(barcodes, self.in_channels, self)
        mean = self.mean_decoder(maps).contiguous()
        return torch.cat([self.encoder(maps), mean], dim=1)

    def estimate(self, condition: torch.Tensor) -> torch.Tensor:
        """The MST-class estimate ``mu`` ``(B, L, h, w)`` inside a condition."""
        return condition[:, -self.n_bands :]

    def flow_parameters(self) -> list[nn.Parameter]:
        """The parameters of everything but ``mu`` (the feature branch and the ICBs)."""
        return [p for n, p in self.named_parameters() if not n.startswith("mean_decoder.")]

    def to_latent(self, cube: torch.Tensor, condition: torch.Tensor):
        """``z = G((cube - mu) / s; c)`` and ``log|det dz/dcube|`` per image ``(B,)`` (eq. 2)."""
        scale = self.band_scale.to(cube.dtype).view(1, -1, 1, 1)
        h = (cube - self.estimate(condition)) / scale
        logdet = -cube.shape[-2] * cube.shape[-1] * torch.log(scale).sum()
        logdet = logdet.expand(cube.shape[0])
        for layer in self.layers:
            h, part = layer(h, condition) if is_conditional(layer) else layer(h)
            logdet = logdet + part
        return h, logdet

    def residual_from_latent(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``G^{-1}(z; c)`` ``(B, L, h, w)``: the residual before the band scale."""
        h = z
        for layer in reversed(self.layers):
            h, _ = layer(h, condition, reverse=True) if is_conditional(layer) else layer(h, True)
        return h

    def from_latent(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``cube = mu + s G^{-1}(z; c)`` (eq. 1; ``z`` and the result ``(B, L, h, w)``)."""
        scale = self.band_scale.to(z.dtype).view(1, -1, 1, 1)
        return self.estimate(condition) + scale * self.residual_from_latent(z, condition)

    def _flow_condition(self, barcodes, cube):
        """The condition with ``mu`` detached (trained by its L1 alone) and the checked cube."""
        condition = self.condition(barcodes)
        cube = self._check_cube(cube, condition)
        mean = self.estimate(condition)
        return torch.cat([condition[:, : -self.n_bands], mean.detach()], 1), mean, cube

    def _nll(self, condition, cube) -> torch.Tensor:
        z, logdet = self.to_latent(cube, condition)
        values = z[0].numel()
        log_base = -0.5 * (z.pow(2).flatten(1).sum(1) + values * _LOG_2PI)
        return -(log_base + logdet).mean() / values

    def nll(self, barcodes: torch.Tensor, cube: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood ``-log p(cube | barcodes)`` of eq. (2), in nats per value
        (averaged over images, pixels and bands; cube in its own unit, e.g. reflectance).

        Parameters
        ----------
        barcodes : torch.Tensor, (B, F, h, w)
        cube : torch.Tensor, (B, L, h, w)
        """
        condition, _, cube = self._flow_condition(barcodes, cube)
        return self._nll(condition, cube)

    def loss(self, barcodes: torch.Tensor, cube: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Training objective of eq. (3): ``NLL + lambda L1(mode, cube) + L1(mu, cube)``.

        Returns ``(total, {"nll": float, "l1": float, "l1_mean": float})`` (``l1``: the mode's).
        """
        condition, mean, cube = self._flow_condition(barcodes, cube)
        nll = self._nll(condition, cube)
        mode = self.from_latent(torch.zeros_like(cube), condition)
        l1 = (mode - cube).abs().mean()
        l1_mean = (mean - cube).abs().mean()
        total = nll + self.reconstruction_weight * l1 + l1_mean
        parts = {"nll": nll, "l1": l1, "l1_mean": l1_mean}
        return total, {name: float(value.detach()) for name, value in parts.items()}

    def forward(self, barcodes: torch.Tensor) -> torch.Tensor:
        """Decode of the latent mode ``mu + s G^{-1}(0; c)``: ``(B, F, h, w) -> (B, L, h, w)``;
        points ``(N, F) -> (N, L)``; any real dtype, cast to the module's."""
        maps, points = as_barcode_maps(barcodes, self.in_channels, self)
        condition = self.condition(maps)
        zero = torch.zeros_like(self.estimate(condition))
        return restore_points(self.from_latent(zero, condition), points)

    def sample(
        self,
        barcodes: torch.Tensor,
        n_samples: int = 16,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Posterior samples ``(n_samples, B, L, h, w)`` (``(n_samples, N, L)`` for points).

        Parameters
        ----------
        barcodes : torch.Tensor, (B, F, h, w) or (N, F)
        n_samples : int
        generator : torch.Generator, optional
            Draws the latents (on the model's device); seed it for repeatable samples.
        temperature : float
            Latent standard deviation ``T`` (1 samples the learned, calibrated posterior).
        """
        n_samples = _check_positive_int("n_samples", n_samples)
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0; got {temperature}")
        maps, points = as_barcode_maps(barcodes, self.in_channels, self)
        condition = self.condition(maps)
        shape = self.estimate(condition).shape
        draws = []
        for _ in range(n_samples):
            z = torch.randn(shape, generator=generator, dtype=condition.dtype, device=maps.device)
            draws.append(restore_points(self.from_latent(temperature * z, condition), points))
        return torch.stack(draws)

    @torch.no_grad()
    def posterior(
        self,
        barcodes: torch.Tensor,
        n_samples: int = 32,
        generator: torch.Generator | None = None,
        level: float = 0.9,
    ) -> PosteriorSummary:
        """Posterior mean, std and central ``level`` interval from ``n_samples`` samples (see
        :class:`PosteriorSummary`; shapes ``(B, L, h, w)``)."""
        if _check_positive_int("n_samples", n_samples) < 2:
            raise ValueError(f"n_samples must be >= 2 for a standard deviation; got {n_samples}")
        level = _check_level(level)
        draws = self.sample(barcodes, n_samples, generator).float()  # quantile needs float32+
        tails = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
        quantiles = torch.quantile(draws, torch.tensor(tails, device=draws.device), dim=0)
        return PosteriorSummary(draws.mean(0), draws.std(0), quantiles[0], quantiles[1])

    def _check_cube(self, cube: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        expected = (condition.shape[0], self.n_bands, *condition.shape[-2:])
        if not isinstance(cube, torch.Tensor) or tuple(cube.shape) != expected:
            got = tuple(cube.shape) if hasattr(cube, "shape") else type(cube).__name__
            raise ValueError(f"cube must have shape (B, L, h, w) = {expected}; got {got}")
        return cube.to(condition.dtype)


def flow_loss(model: ConditionalFlowDecoder, barcodes, cube) -> tuple[torch.Tensor, dict]:
    """Eq. (3) of ``model`` on one batch (``barcodes (B, F, h, w)``, ``cube (B, L, h, w)``)."""
    return model.loss(barcodes, cube)
