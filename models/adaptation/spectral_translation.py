"""Unpaired translation of twin barcodes into captured-looking barcodes (SDA-GAN).

A decoder trained on the digital twin meets another camera when it is deployed: the filters
as fabricated (shifted, broadened, scaled), another illuminant, and more noise.  Captured
frames of that camera are plentiful but carry no cubes or labels, and no captured frame shows
the same scene as a twin frame, so the mapping twin -> captured is learned *unpaired*, as in
SDA-GAN [SDA-GAN]: two generators ``G: twin -> captured`` and ``H: captured -> twin`` with
spectral-domain (FFT) attention in each generator
(:class:`~hyplex.models.restoration.spectral_attention.FrequencyAttention`), two patch
discriminators, and CycleGAN's objective [CycleGAN] eq. (1)-(3) with the least-squares GAN loss
[LSGAN] and the identity term of [CycleGAN] section 5.2::

    L_GAN(G, D_c) = E_c (D_c(c) - 1)^2 + E_t D_c(G(t))^2             (discriminator)
                    E_t (D_c(G(t)) - 1)^2                             (generator)
    L_cyc         = E_t |H(G(t)) - t|_1 + E_c |G(H(c)) - c|_1
    L_id          = E_c |G(c) - c|_1 + E_t |H(t) - t|_1
    L_G           = L_GAN(G) + L_GAN(H) + lambda_cyc L_cyc + lambda_id L_id

The translated twin barcodes ``G(t)`` keep the twin's cubes and labels, so decoders trained on
them are trained "in the captured domain"; they are evaluated on captured barcodes of held-out
scenes (benchmark: ``benchmarks/learning_flow_translation.py``).

The generator works on barcode maps ``(B, F, h, w)``: ``G(t) = t + conv(FFT-attention(conv(t)))``
(a residual, so an untrained generator is near the identity), with a per-filter affine
``a_f t_f + b_f`` in front because a fabricated filter under another lamp mainly changes each
barcode channel's gain.

What is not reproduced: SDA-GAN's ResNet generators and face data; the spatial attention
branch.  Discriminators are 3-layer PatchGANs on barcode maps.

References
----------
[SDA-GAN] Q. Wang, M. Makarenko, "SDA-GAN: Unsupervised Image Translation Using Spectral Domain
    Attention-Guided Generative Adversarial Network", arXiv:2110.02873 (2021), section 3.
[CycleGAN] J.-Y. Zhu, T. Park, P. Isola, A. A. Efros, "Unpaired Image-to-Image Translation
    using Cycle-Consistent Adversarial Networks", ICCV 2017, eq. (1)-(3), section 5.2.
[LSGAN] X. Mao et al., "Least Squares Generative Adversarial Networks", ICCV 2017, eq. (9).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hyplex.models.data import random_crops
from hyplex.models.restoration.spectral_attention import FrequencyAttention

__all__ = [
    "BarcodeTranslator",
    "PatchDiscriminator",
    "TranslationTraining",
    "UnpairedBarcodeTranslation",
]


class BarcodeTranslator(nn.Module):
    """Generator ``(B, F, h, w) -> (B, F, h, w)`` with FFT-domain attention (see the module
    docstring).

    Parameters
    ----------
    n_filters : int
        Barcode length ``F``.
    width : int
        Hidden channels.
    fft_attention : bool
        Use the SDA-GAN spectral attention (False gives the plain CycleGAN generator, for
        ablation).
    """

    def __init__(self, n_filters: int, width: int = 32, fft_attention: bool = True):
        super().__init__()
        if not isinstance(n_filters, int) or n_filters < 1:
            raise ValueError(f"n_filters must be a positive int; got {n_filters!r}")
        self.config = {"n_filters": n_filters, "width": int(width), "fft_attention": fft_attention}
        self.n_filters = n_filters
        self.log_gain = nn.Parameter(torch.zeros(n_filters))
        self.offset = nn.Parameter(torch.zeros(n_filters))
        self.inner = nn.Conv2d(n_filters, width, 3, padding=1, padding_mode="replicate")
        self.attention = FrequencyAttention(width) if fft_attention else nn.Identity()
        self.mix = nn.Conv2d(width, width, 1)
        self.outer = nn.Conv2d(width, n_filters, 3, padding=1, padding_mode="replicate")
        nn.init.zeros_(self.outer.weight)
        nn.init.zeros_(self.outer.bias)

    def forward(self, barcodes: torch.Tensor) -> torch.Tensor:
        if barcodes.ndim != 4 or barcodes.shape[1] != self.n_filters:
            raise ValueError(
                f"barcodes must have shape (B, {self.n_filters}, h, w); got {tuple(barcodes.shape)}"
            )
        scaled = barcodes * self.log_gain.exp()[:, None, None] + self.offset[:, None, None]
        features = F.gelu(self.mix(self.attention(F.gelu(self.inner(scaled)))))
        return scaled + self.outer(features)


class PatchDiscriminator(nn.Module):
    """PatchGAN critic on barcode maps: ``(B, F, h, w) -> (B, 1, h/2, w/2)`` real-scores."""

    def __init__(self, n_filters: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(n_filters, width, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 1, 3, padding=1),
        )

    def forward(self, barcodes: torch.Tensor) -> torch.Tensor:
        return self.net(barcodes)


@dataclass(frozen=True)
class TranslationTraining:
    """Settings of :meth:`UnpairedBarcodeTranslation.fit`.

    Attributes
    ----------
    steps : alternating generator/discriminator Adam steps.
    batch_size : patches per domain and step.
    patch_size : patch side, barcode pixels.
    learning_rate : Adam step size (betas 0.5, 0.999 as [CycleGAN]).
    cycle_weight, identity_weight : ``lambda_cyc``, ``lambda_id``.  ``lambda_id`` defaults to
        0: the identity term asks ``G(c) = c``, which contradicts the per-filter gain change
        that separates the two cameras ([CycleGAN] uses it only to keep photo colours).
    seed : draws the patches.
    """

    steps: int = 400
    batch_size: int = 8
    patch_size: int = 16
    learning_rate: float = 2e-3
    cycle_weight: float = 10.0
    identity_weight: float = 0.0
    seed: int = 0


def _patches(maps, rng, count, size, device):
    return random_crops(rng, (maps,), count, size)[0].to(device)


class UnpairedBarcodeTranslation(nn.Module):
    """Cycle-consistent twin <-> captured barcode translation with FFT attention [SDA-GAN].

    Parameters
    ----------
    n_filters : int
        Barcode length ``F`` (9 for Hyplex).
    width : int
        Hidden channels of generators and discriminators.
    fft_attention : bool
        Spectral-domain attention in the generators.

    Notes
    -----
    ``fit(twin, captured)`` takes unpaired barcode maps ``(N, F, H, W)`` of each domain;
    ``forward(twin)`` / :meth:`to_captured` gives ``G(twin)``, :meth:`to_twin` ``H(captured)``.
    """

    def __init__(self, n_filters: int, width: int = 32, fft_attention: bool = True):
        super().__init__()
        self.to_captured_generator = BarcodeTranslator(n_filters, width, fft_attention)
        self.to_twin_generator = BarcodeTranslator(n_filters, width, fft_attention)
        self.captured_critic = PatchDiscriminator(n_filters, width)
        self.twin_critic = PatchDiscriminator(n_filters, width)
        self.n_filters = n_filters

    def forward(self, twin: torch.Tensor) -> torch.Tensor:
        return self.to_captured_generator(twin)

    def to_captured(self, twin: torch.Tensor) -> torch.Tensor:
        """``G(twin)``: ``(B, F, h, w)`` twin barcodes as the captured camera would give them."""
        return self.to_captured_generator(twin)

    def to_twin(self, captured: torch.Tensor) -> torch.Tensor:
        """``H(captured)``: ``(B, F, h, w)``."""
        return self.to_twin_generator(captured)

    def fit(self, twin: torch.Tensor, captured: torch.Tensor,
            settings: TranslationTraining = TranslationTraining(),
            progress: bool = False) -> list[dict]:  # fmt: skip
        """Train both generators and critics on unpaired maps; returns per-step loss parts.

        Parameters
        ----------
        twin : torch.Tensor, (N_t, F, H, W)
            Twin barcodes (scenes with cubes and labels).
        captured : torch.Tensor, (N_c, F, H', W')
            Captured barcodes of other scenes (no labels needed).
        settings : TranslationTraining
        progress : bool
            Show a tqdm bar.
        """
        for name, maps in (("twin", twin), ("captured", captured)):
            if maps.ndim != 4 or maps.shape[1] != self.n_filters:
                raise ValueError(
                    f"{name} barcodes must have shape (N, {self.n_filters}, H, W); got "
                    f"{tuple(maps.shape)}"
                )
        size = min(settings.patch_size, *twin.shape[-2:], *captured.shape[-2:])
        device = next(self.parameters()).device
        rng = np.random.default_rng(settings.seed)
        generators = [
            *self.to_captured_generator.parameters(),
            *self.to_twin_generator.parameters(),
        ]
        critics = [*self.captured_critic.parameters(), *self.twin_critic.parameters()]
        betas = (0.5, 0.999)
        generator_optimizer = torch.optim.Adam(generators, lr=settings.learning_rate, betas=betas)
        critic_optimizer = torch.optim.Adam(critics, lr=settings.learning_rate, betas=betas)
        steps = range(settings.steps)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="translation", unit="step")
        history = []
        self.train()
        for _ in steps:
            t = _patches(twin, rng, settings.batch_size, size, device)
            c = _patches(captured, rng, settings.batch_size, size, device)
            fake_c, fake_t = self.to_captured_generator(t), self.to_twin_generator(c)
            adversarial = (self.captured_critic(fake_c) - 1).pow(2).mean() + (
                self.twin_critic(fake_t) - 1
            ).pow(2).mean()
            cycle = (self.to_twin_generator(fake_c) - t).abs().mean() + (
                self.to_captured_generator(fake_t) - c
            ).abs().mean()
            identity = (self.to_captured_generator(c) - c).abs().mean() + (
                self.to_twin_generator(t) - t
            ).abs().mean()
            total = adversarial + settings.cycle_weight * cycle
            total = total + settings.identity_weight * identity
            generator_optimizer.zero_grad(set_to_none=True)
            total.backward()
            generator_optimizer.step()
            critic_loss = 0.5 * (
                (self.captured_critic(c) - 1).pow(2).mean()
                + self.captured_critic(fake_c.detach()).pow(2).mean()
                + (self.twin_critic(t) - 1).pow(2).mean()
                + self.twin_critic(fake_t.detach()).pow(2).mean()
            )
            critic_optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            critic_optimizer.step()
            history.append(
                {
                    "adversarial": float(adversarial.detach()),
                    "cycle": float(cycle.detach()),
                    "identity": float(identity.detach()),
                    "critic": float(critic_loss.detach()),
                }
            )
        self.eval()
        return history
