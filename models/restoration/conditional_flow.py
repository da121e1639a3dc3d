"""Conditional normalising flow decoder: p(cube | barcodes), with posterior samples and std.

HIDFlowNet [HIDFlowNet] treats restoration as sampling from the conditional distribution of the
clean hyperspectral image ``X`` given its degraded observation ``Y`` instead of one
deterministic map.  It has two parts (section 3 of the paper):

* a non-invertible **conditional encoder** ``c = E(Y)`` that extracts the global, low-frequency
  content (down-sampling and long-range attention), and
* an **invertible decoder**: a stack of invertible conditional blocks (ICBs), each an invertible
  1x1 convolution and conditional affine couplings, mapping ``X <-> z`` given ``c``.

Training minimises the negative log-likelihood from the change of variables,

    -log p(X | Y) = -log N(z; 0, I) - sum_k log|det dF_k/dh_{k-1}|,   z = F(X; c)    (1)

plus a reconstruction term on the decode of the latent mode ``z = 0`` (the paper adds an L1
loss to the NLL; our weight is ``reconstruction_weight``)::

    L = NLL + lambda * |F^{-1}(0; c) - X|_1                                          (2)

Sampling draws ``z ~ N(0, T^2 I)`` and inverts: ``X = F^{-1}(z; c)``.  In hyplex ``Y`` is the
metasurface barcode map ``(B, F, h, w)`` (9 filters for 34 or 204 bands, so the posterior is
wide where the filters cannot tell spectra apart) or, for denoising, a noisy low-light cube
``(B, L, h, w)`` (:mod:`hyplex.models.restoration.denoising`).  The flow acts along the band
axis per pixel (couplings see a 3x3 neighbourhood of the conditioning half), so the Jacobian is
block-diagonal over pixels and ``log|det|`` is exact and cheap:

    invertible 1x1 convolution (Glow [Glow] section 3.2):  h * w * log|det W|
    conditional affine injector (SRFlow [SRFlow] section 3.3): sum s(c)
    conditional affine coupling (RealNVP [RealNVP] eq. 6-7): sum s(x_a, c)

What is not reproduced: HIDFlowNet's encoder uses transformer blocks at several down-sampled
scales and multi-scale squeeze/split of the latent; here the encoder is one down-sampled branch
plus the MST++ spectral-wise attention block already used by the decoders
(:class:`hyplex.models.layers.SpectralAttentionBlock`), and the latent is not split (L is only
34-204 values per pixel).  Added here: the encoder also predicts a coarse cube ``mu(c)`` and the
flow starts with the volume-preserving shift ``cube - mu(c)`` (log-det 0), so the invertible
blocks model the residual, and ``mu(c)`` gets the reconstruction term directly (in one
exploratory run on the benchmark's seed-0 data this raised the mode's PSNR by about 1.5 dB;
the flow still trails the MST-class decoder: see ``benchmarks/learning_flow_translation.py
--quick`` and the README for the 3-seed figures).

References
----------
[HIDFlowNet] Q. Wang, L. Pang, X. Cao, Z. Tian, D. Meng, "HIDFlowNet: A Flow-Based Deep
    Network for Hyperspectral Image Denoising", arXiv:2306.17797 (Information Fusion 125,
    2026): section 3 (conditional encoder, invertible conditional blocks, NLL + reconstruction
    loss).
[Glow] D. P. Kingma, P. Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
    NeurIPS 2018, section 3.2 and Table 1.
[SRFlow] A. Lugmayr et al., "SRFlow: Learning the Super-Resolution Space with Normalizing
    Flow", ECCV 2020, section 3.3 (affine injector).
[RealNVP] L. Dinh, J. Sohl-Dickstein, S. Bengio, "Density estimation using Real NVP", ICLR
    2017, eq. (6)-(7).
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
    ``log|det| = sum s`` over bands and pixels."""

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


class _ConditionalEncoder(nn.Module):
    """``Y (B, C_in, h, w) -> c (B, width, h, w)``: a full-resolution branch plus a 2x
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
    lower, upper : 5 % and 95 % sample quantiles (the 90 % central interval).
    """

    mean: torch.Tensor
    std: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor


class ConditionalFlowDecoder(nn.Module):
    """HIDFlowNet-style conditional flow decoder ``p(cube | barcodes)`` [HIDFlowNet].

    Parameters
    ----------
    in_channels : int
        Channels of the condition: the barcode length ``F`` (9 for Hyplex) or, for
        denoising, the bands ``L`` of the noisy cube.
    n_bands : int
        Bands ``L`` of the cube modelled.
    width : int
        Conditional-encoder feature channels.
    hidden : int
        Hidden channels of each coupling / injector network.
    n_blocks : int
        Invertible conditional blocks, each ``injector -> 1x1 conv -> coupling -> band flip
        -> coupling``.
    n_heads : int
        Heads of the encoder's spectral-wise attention (must divide ``width``).
    max_log_scale : float
        Soft clamp of every log-scale (invertibility in float32).
    reconstruction_weight : float
        ``lambda`` of eq. (2), used by :meth:`loss`.  10 was chosen over 1 and 30 by
        exploratory runs on the benchmark's seed-0 data (not a held-out selection; the
        toy test uses 1, where the likelihood must dominate).

    Notes
    -----
    ``forward(barcodes)`` returns the decode of the latent mode ``F^{-1}(0; c)`` so the flow
    drops into every place a reconstructor goes (``build_reconstructor("flow", ...)``, design
    bundles, the video engine); :meth:`posterior` gives samples, mean and std.
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
    ):
        super().__init__()
        in_channels = _check_positive_int("in_channels", in_channels)
        n_bands = _check_positive_int("n_bands", n_bands)
        width = _check_positive_int("width", width)
        hidden = _check_positive_int("hidden", hidden)
        n_blocks = _check_positive_int("n_blocks", n_blocks)
        n_heads = _check_positive_int("n_heads", n_heads)
        if n_bands < 2:
            raise ValueError(f"n_bands must be >= 2 for the couplings; got {n_bands}")
        if width % n_heads:
            raise ValueError(f"width must be divisible by n_heads; got {width} and {n_heads}")
        if not max_log_scale > 0:
            raise ValueError(f"max_log_scale must be > 0; got {max_log_scale}")
        if not reconstruction_weight >= 0:
            raise ValueError(f"reconstruction_weight must be >= 0; got {reconstruction_weight}")
        self.config = {
            "in_channels": in_channels,
            "n_bands": n_bands,
            "width": width,
            "hidden": hidden,
            "n_blocks": n_blocks,
            "n_heads": n_heads,
            "max_log_scale": float(max_log_scale),
            "reconstruction_weight": float(reconstruction_weight),
        }
        self.in_channels, self.n_bands = in_channels, n_bands
        self.reconstruction_weight = float(reconstruction_weight)
        self.encoder = _ConditionalEncoder(in_channels, width, n_heads)
        self.mean_head = nn.Conv2d(width, n_bands, 3, padding=1)
        layers = []
        for _ in range(n_blocks):
            layers.append(ConditionalAffineInjector(n_bands, width, hidden, max_log_scale))
            layers.append(InvertibleConv1x1(n_bands))
            layers.append(ConditionalAffineCoupling(n_bands, width, hidden, max_log_scale))
            layers.append(_BandFlip())
            layers.append(ConditionalAffineCoupling(n_bands, width, hidden, max_log_scale))
        self.layers = nn.ModuleList(layers)

    # -- the flow ------------------------------------------------------------------------
    def condition(self, barcodes: torch.Tensor) -> torch.Tensor:
        """Conditional-encoder features ``(B, width, h, w)`` of barcode maps ``(B, F, h, w)``."""
        maps, _ = as_barcode_maps(barcodes, self.in_channels, self)
        return self.encoder(maps)

    def to_latent(self, cube: torch.Tensor, condition: torch.Tensor):
        """``z = F(cube; c)`` and ``log|det dz/dcube|`` per image ``(B,)`` (eq. 1)."""
        logdet = torch.zeros(cube.shape[0], dtype=cube.dtype, device=cube.device)
        h = cube - self.mean_head(condition)  # volume-preserving conditional shift
        for layer in self.layers:
            h, part = layer(h, condition) if _conditional(layer) else layer(h)
            logdet = logdet + part
        return h, logdet

    def from_latent(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``cube = F^{-1}(z; c)`` (``z`` and the result ``(B, L, h, w)``)."""
        h = z
        for layer in reversed(self.layers):
            h, _ = layer(h, condition, reverse=True) if _conditional(layer) else layer(h, True)
        return h + self.mean_head(condition)

    def nll(self, barcodes: torch.Tensor, cube: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood ``-log p(cube | barcodes)`` of eq. (1), in nats per value
        (averaged over images, pixels and bands; cube in its own unit, e.g. reflectance).

        Parameters
        ----------
        barcodes : torch.Tensor, (B, F, h, w)
        cube : torch.Tensor, (B, L, h, w)
        """
        condition = self.condition(barcodes)
        cube = self._check_cube(cube, condition)
        z, logdet = self.to_latent(cube, condition)
        values = z[0].numel()
        log_base = -0.5 * (z.pow(2).flatten(1).sum(1) + values * _LOG_2PI)
        return -(log_base + logdet).mean() / values

    def loss(self, barcodes: torch.Tensor, cube: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Training objective of eq. (2): ``NLL + lambda * L1(F^{-1}(0; c), cube)``.

        The coarse cube ``mu(c)`` of the encoder gets the same L1 term directly
        (``+ lambda * L1(mu(c), cube)``), so the encoder learns the low-frequency estimate as a
        regression network would ([HIDFlowNet] section 3 assigns the low frequencies to the
        encoder and the details to the invertible blocks).

        Returns ``(total, {"nll": float, "l1": float})``.
        """
        condition = self.condition(barcodes)
        cube = self._check_cube(cube, condition)
        z, logdet = self.to_latent(cube, condition)
        values = z[0].numel()
        nll = -(-0.5 * (z.pow(2).flatten(1).sum(1) + values * _LOG_2PI) + logdet).mean() / values
        mode = self.from_latent(torch.zeros_like(cube), condition)
        l1 = (mode - cube).abs().mean() + (self.mean_head(condition) - cube).abs().mean()
        total = nll + self.reconstruction_weight * l1
        return total, {"nll": float(nll.detach()), "l1": float(l1.detach())}

    def forward(self, barcodes: torch.Tensor) -> torch.Tensor:
        """Decode of the latent mode ``F^{-1}(0; c)``: ``(B, F, h, w) -> (B, L, h, w)``;
        points ``(N, F) -> (N, L)``; any real dtype, cast to the module's."""
        maps, points = as_barcode_maps(barcodes, self.in_channels, self)
        condition = self.encoder(maps)
        shape = (maps.shape[0], self.n_bands, *maps.shape[-2:])
        zero = torch.zeros(shape, dtype=condition.dtype, device=condition.device)
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
            Latent standard deviation ``T`` (1 samples the learned posterior).
        """
        n_samples = _check_positive_int("n_samples", n_samples)
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0; got {temperature}")
        maps, points = as_barcode_maps(barcodes, self.in_channels, self)
        condition = self.encoder(maps)
        shape = (maps.shape[0], self.n_bands, *maps.shape[-2:])
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
    ) -> PosteriorSummary:
        """Posterior mean, std and 90 % interval from ``n_samples`` samples (see
        :class:`PosteriorSummary`; shapes ``(B, L, h, w)``)."""
        if _check_positive_int("n_samples", n_samples) < 2:
            raise ValueError(f"n_samples must be >= 2 for a standard deviation; got {n_samples}")
        draws = self.sample(barcodes, n_samples, generator).float()  # quantile needs float32+
        levels = torch.tensor([0.05, 0.95], dtype=draws.dtype, device=draws.device)
        quantiles = torch.quantile(draws, levels, dim=0)
        return PosteriorSummary(draws.mean(0), draws.std(0), quantiles[0], quantiles[1])

    def _check_cube(self, cube: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        expected = (condition.shape[0], self.n_bands, *condition.shape[-2:])
        if not isinstance(cube, torch.Tensor) or tuple(cube.shape) != expected:
            got = tuple(cube.shape) if hasattr(cube, "shape") else type(cube).__name__
            raise ValueError(f"cube must have shape (B, L, h, w) = {expected}; got {got}")
        return cube.to(condition.dtype)


class _BandFlip(nn.Module):
    """Reverses the band order (volume-preserving) so the next coupling updates the other
    half."""

    def forward(self, x: torch.Tensor, reverse: bool = False):
        return x.flip(1), torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)


def _conditional(layer: nn.Module) -> bool:
    return isinstance(layer, (ConditionalAffineCoupling, ConditionalAffineInjector))


def flow_loss(model: ConditionalFlowDecoder, barcodes, cube) -> tuple[torch.Tensor, dict]:
    """Eq. (2) of ``model`` on one batch (``barcodes (B, F, h, w)``, ``cube (B, L, h, w)``)."""
    return model.loss(barcodes, cube)


@dataclass(frozen=True)
class FlowTraining:
    """Settings of :func:`train_flow`.

    Attributes
    ----------
    steps : Adam steps.
    batch_size : patches per step.
    patch_size : patch side, pixels (``<=`` the maps' side).
    learning_rate : Adam step size.
    seed : draws the patches.
    """

    steps: int = 300
    batch_size: int = 8
    patch_size: int = 16
    learning_rate: float = 2e-3
    seed: int = 0


def train_flow(model: ConditionalFlowDecoder, conditions, cubes, settings=FlowTraining(),
               progress: bool = False) -> list[dict]:  # fmt: skip
    """Fit ``model`` by eq. (2) on random patches; returns the per-step loss parts.

    Parameters
    ----------
    model : ConditionalFlowDecoder
    conditions : torch.Tensor, (N, C_in, H, W)
        Barcode maps (or noisy cubes, for denoising).
    cubes : torch.Tensor, (N, L, H, W)
        Matching clean cubes.
    settings : FlowTraining
    progress : bool
        Show a tqdm bar.
    """
    if conditions.ndim != 4 or cubes.ndim != 4 or conditions.shape[0] != cubes.shape[0]:
        raise ValueError(
            "conditions (N, C, H, W) and cubes (N, L, H, W) must be 4-D with the same N; got "
            f"{tuple(conditions.shape)} and {tuple(cubes.shape)}"
        )
    if conditions.shape[-2:] != cubes.shape[-2:]:
        raise ValueError(
            f"conditions and cubes need the same H, W; got {tuple(conditions.shape[-2:])} and "
            f"{tuple(cubes.shape[-2:])}"
        )
    size = min(settings.patch_size, *cubes.shape[-2:])
    device = next(model.parameters()).device
    rng = np.random.default_rng(settings.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    history = []
    steps = range(settings.steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="flow", unit="step")
    model.train()
    for _ in steps:
        index = rng.integers(0, cubes.shape[0], settings.batch_size)
        top = rng.integers(0, cubes.shape[-2] - size + 1, settings.batch_size)
        left = rng.integers(0, cubes.shape[-1] - size + 1, settings.batch_size)
        corners = list(zip(index, top, left, strict=True))
        batch_y = torch.stack([conditions[i, :, t : t + size, s : s + size] for i, t, s in corners])
        batch_x = torch.stack([cubes[i, :, t : t + size, s : s + size] for i, t, s in corners])
        batch_y, batch_x = batch_y.to(device), batch_x.to(device)
        total, parts = model.loss(batch_y, batch_x)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        history.append(parts)
    model.eval()
    return history
