"""GenIAS: a VAE over reflectance spectra whose learned latent perturbation makes realistic
anomalous spectra, a source of synthetic anomalies for the open-set heads.

Reference
---------
[GenIAS] Z. Zamanzadeh Darban, Q. Wang, G. I. Webb, S. Pan, C. C. Aggarwal, M. Salehi,
         "GenIAS: Generator for Instantiating Anomalies in time Series", arXiv:2502.08262
         (v2, ICML 2025), Sec. 3: the learnable latent perturbation, the reconstruction,
         perturbation (min-max margin) and enhanced KL (tunable prior) losses, and the
         deviation-based patching of the generated pattern into the series.

A spectrum is a 1-D series over wavelength (``L`` bands), so GenIAS applies as published,
with dilated 1-D convolutions (a small TCN) over the bands in the encoder::

    x (L,) --TCN encoder--> mu, log sigma^2 (d,)
    normal:     z   = mu + sigma * eps                       x_hat   = D(z)
    anomalous:  z_a = mu + psi(x) * sigma * eps               x_tilde = D(z_a)

``psi(x) > 0`` is the *learned* perturbation scale (a softplus head on the encoder's
features, one value per latent dimension). The loss of one spectrum::

    L_rec  = ||x - x_hat||^2 / L
    L_pert = max(0, d(x, x_hat) - d(x, x_tilde) + delta_min)          anomalies must differ
           + max(0, d(x, x_tilde) - delta_max)                        ... but stay realistic
    L_KL   = KL(N(mu, sigma^2) || N(0, sigma_p^2))                      the tunable prior
    L      = L_rec + w_pert L_pert + w_KL L_KL

with ``d`` the RMS difference per band. A prior narrower than 1 (``sigma_p < 1``) keeps the
normal latent codes compact, so that a perturbation of the learned scale leaves the normal
manifold. Anomalies are then *patched* into a real spectrum: the band window (contiguous,
random width between ``L/8`` and ``L/2``) where ``|x_tilde - x|`` is largest is replaced by
``x_tilde``, the spectral analogue of the paper's deviation-based patching of a time window.
The result is a spectrum that matches a normal material almost everywhere but carries an
absorption, edge or slope that no normal class has: a realistic "defect" or "fake".
:meth:`GenIAS.sample_anomalies` draws them for the auxiliary outlier sets of the other methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GenIAS", "GenIASTraining", "gaussian_kl", "patch_anomalies"]


def gaussian_kl(mu: torch.Tensor, log_variance: torch.Tensor, prior_std: float) -> torch.Tensor:
    """``KL(N(mu, sigma^2) || N(0, prior_std^2))`` summed over latent dimensions: ``(N,)``.

    ``0.5 * sum(sigma^2 / s^2 + mu^2 / s^2 - 1 - log sigma^2 + log s^2)``.
    """
    prior_variance = prior_std**2
    return 0.5 * (
        (log_variance.exp() + mu**2) / prior_variance - 1.0 - log_variance + np.log(prior_variance)
    ).sum(dim=1)


def patch_anomalies(normal: torch.Tensor, generated: torch.Tensor, generator: torch.Generator):
    """Replace in each spectrum the band window where ``|generated - normal|`` is largest.

    Parameters
    ----------
    normal, generated : torch.Tensor, (N, L)
    generator : torch.Generator
        Draws each window's width in ``[L/8, L/2]``.

    Returns
    -------
    patched : torch.Tensor, (N, L)
    windows : torch.Tensor, (N, 2) int64
        ``[start, stop)`` of each patched band window.
    """
    if normal.shape != generated.shape or normal.ndim != 2:
        raise ValueError(
            f"normal and generated must be (N, L) alike; got {tuple(normal.shape)} and "
            f"{tuple(generated.shape)}"
        )
    count, bands = normal.shape
    low, high = max(bands // 8, 1), max(bands // 2, 1)
    widths = torch.randint(low, high + 1, (count,), generator=generator)
    deviation = (generated - normal).abs()
    cumulative = F.pad(deviation.cumsum(1), (1, 0))
    patched, windows = normal.clone(), torch.zeros(count, 2, dtype=torch.long)
    for row in range(count):
        width = int(widths[row])
        sums = cumulative[row, width:] - cumulative[row, :-width]
        start = int(sums.argmax())
        patched[row, start : start + width] = generated[row, start : start + width]
        windows[row] = torch.tensor([start, start + width])
    return patched, windows


@dataclass(frozen=True)
class GenIASTraining:
    """Settings of :meth:`GenIAS.fit`.

    Attributes
    ----------
    steps, batch_size, learning_rate
        Adam optimisation.
    prior_std : float
        ``sigma_p`` of the tunable prior (< 1 tightens the normal codes).
    delta_min, delta_max : float
        Margins of the perturbation loss (RMS per band, in the spectra's unit, reflectance).
    perturbation_weight, kl_weight : float
        ``w_pert`` and ``w_KL``.
    seed : int
    progress : bool
    """

    steps: int = 600
    batch_size: int = 256
    learning_rate: float = 2e-3
    prior_std: float = 0.5
    delta_min: float = 0.03
    delta_max: float = 0.12
    perturbation_weight: float = 1.0
    kl_weight: float = 1e-3
    seed: int = 0
    progress: bool = False

    def __post_init__(self):
        if not 0 < self.delta_min < self.delta_max:
            raise ValueError(
                f"need 0 < delta_min < delta_max; got {self.delta_min}, {self.delta_max}"
            )
        if self.steps < 1 or self.batch_size < 2 or self.prior_std <= 0:
            raise ValueError("need steps >= 1, batch_size >= 2 and prior_std > 0")


class GenIAS(nn.Module):
    """The GenIAS generator for spectra (see the module docstring).

    Parameters
    ----------
    n_bands : int
        Spectrum length ``L`` (>= 8).
    latent_dim : int
        ``d``.
    channels : int
        Channels of the TCN encoder.
    """

    def __init__(self, n_bands: int, latent_dim: int = 8, channels: int = 16):
        super().__init__()
        if n_bands < 8 or latent_dim < 1 or channels < 1:
            raise ValueError(
                f"need n_bands >= 8, latent_dim >= 1, channels >= 1; got {n_bands}, "
                f"{latent_dim}, {channels}"
            )
        self.n_bands, self.latent_dim = int(n_bands), int(latent_dim)
        self.config = {
            "n_bands": int(n_bands),
            "latent_dim": int(latent_dim),
            "channels": int(channels),
        }
        layers, width = [], 1
        for dilation in (1, 2, 4):  # TCN: dilated convolutions along wavelength
            layers += [
                nn.Conv1d(width, channels, 3, padding=dilation, dilation=dilation),
                nn.ReLU(),
            ]
            width = channels
        self.encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool1d(8), nn.Flatten())
        features = channels * 8
        self.mu = nn.Linear(features, latent_dim)
        self.log_variance = nn.Linear(features, latent_dim)
        self.perturbation = nn.Linear(features, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 64),
            nn.ReLU(),
            nn.Linear(64, 128),
            nn.ReLU(),
            nn.Linear(128, n_bands),
        )
        self.register_buffer("spectra", torch.zeros(0, n_bands), persistent=False)

    def encode(self, spectra: torch.Tensor):
        """``(mu, log_variance, psi)``, each ``(N, d)``, of spectra ``(N, L)``."""
        features = self.encoder(spectra[:, None, :])
        log_variance = self.log_variance(features).clamp(-8.0, 4.0)
        return self.mu(features), log_variance, F.softplus(self.perturbation(features)) + 1e-3

    def forward(self, spectra: torch.Tensor, generator: torch.Generator | None = None):
        """Normal reconstructions and anomalous decodings of spectra ``(N, L)``.

        Returns
        -------
        dict with ``reconstruction`` and ``anomaly`` (N, L), ``mu``, ``log_variance``, ``psi``.
        """
        mu, log_variance, psi = self.encode(spectra)
        sigma = (0.5 * log_variance).exp()
        noise = torch.randn(mu.shape, generator=generator).to(mu.device)
        return {
            "reconstruction": self.decoder(mu + sigma * noise),
            "anomaly": self.decoder(mu + psi * sigma * noise),
            "mu": mu,
            "log_variance": log_variance,
            "psi": psi,
        }

    def loss(self, spectra: torch.Tensor, training: GenIASTraining, generator=None):
        """GenIAS's loss (module docstring) of a batch ``(N, L)``: ``(scalar, parts)``."""
        out = self(spectra, generator)
        bands = spectra.shape[1]
        reconstruction = ((spectra - out["reconstruction"]) ** 2).sum(1) / bands
        normal_distance = reconstruction.clamp_min(1e-12).sqrt()
        anomaly_distance = (
            (((spectra - out["anomaly"]) ** 2).sum(1) / bands).clamp_min(1e-12).sqrt()
        )
        perturbation = F.relu(normal_distance - anomaly_distance + training.delta_min) + F.relu(
            anomaly_distance - training.delta_max
        )
        kl = gaussian_kl(out["mu"], out["log_variance"], training.prior_std)
        total = (
            reconstruction.mean()
            + training.perturbation_weight * perturbation.mean()
            + training.kl_weight * kl.mean()
        )
        parts = {
            "reconstruction": float(reconstruction.detach().mean()),
            "perturbation": float(perturbation.detach().mean()),
            "kl": float(kl.detach().mean()),
        }
        return total, parts

    def fit(self, spectra, training: GenIASTraining | None = None) -> list[float]:
        """Train on normal spectra.

        Parameters
        ----------
        spectra : array_like, (N, L)
            Reflectance spectra of the known materials (unitless, ~0-1).
        training : GenIASTraining, optional

        Returns
        -------
        list of float
            The loss at every step.
        """
        from tqdm.auto import tqdm

        training = training or GenIASTraining()
        data = torch.as_tensor(np.asarray(spectra), dtype=torch.float32)
        if data.ndim != 2 or data.shape[1] != self.n_bands or len(data) < 2:
            raise ValueError(f"spectra must be (N >= 2, L={self.n_bands}); got {tuple(data.shape)}")
        if not torch.isfinite(data).all():
            raise ValueError("spectra must be finite")
        device = self.mu.weight.device
        data = data.to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(training.seed)
            for layer in self.modules():
                if layer is not self and hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
        generator = torch.Generator().manual_seed(training.seed)
        optimiser = torch.optim.Adam(self.parameters(), lr=training.learning_rate)
        history = []
        self.train()
        for _ in tqdm(range(training.steps), disable=not training.progress, desc="GenIAS"):
            index = torch.randint(len(data), (training.batch_size,), generator=generator)
            loss, _ = self.loss(data[index.to(device)], training, generator)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            history.append(float(loss.detach()))
        self.eval()
        self.spectra = data.detach()
        return history

    @torch.no_grad()
    def sample_anomalies(self, n: int, seed: int = 0, return_windows: bool = False):
        """``n`` synthetic anomalous spectra patched into the training spectra.

        Parameters
        ----------
        n : int
            Number of spectra.
        seed : int
            Draws the base spectra, the latent noise and the window widths.
        return_windows : bool
            Also return the patched band windows ``(n, 2)`` (``[start, stop)``).

        Returns
        -------
        numpy.ndarray, (n, L) float32
            Anomalous spectra (clipped to >= 0), on the grid of the training spectra.
        """
        if len(self.spectra) == 0:
            raise ValueError("GenIAS is not fitted: call fit(spectra) before sample_anomalies")
        if int(n) < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        generator = torch.Generator().manual_seed(int(seed))
        index = torch.randint(len(self.spectra), (int(n),), generator=generator)
        base = self.spectra[index.to(self.spectra.device)]
        generated = self(base, generator)["anomaly"]
        patched, windows = patch_anomalies(base.cpu(), generated.cpu(), generator)
        patched = patched.clamp_min(0.0).numpy().astype(np.float32)
        return (patched, windows.numpy()) if return_windows else patched

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``(count, L)`` anomalous spectra, clipped to [0, 1], with the seed drawn from ``rng``
        (the :class:`~hyplex.models.openset.auxiliary.SpectrumGenerator` hook of the auxiliary
        outlier pool)."""
        seed = int(np.random.default_rng(rng).integers(2**31 - 1))
        return np.clip(self.sample_anomalies(int(count), seed), 0.0, 1.0)
