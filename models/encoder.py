"""Differentiable, realizable metasurface encoders: ``F`` filter responses trained with a decoder.

Every encoder is a torch module with ``responses() -> (F, L)`` transmissions in [0, 1] on the
training grid and ``forward(cube (B, L, H, W)) -> barcodes (B, F, H, W)`` through the noisy
camera of :mod:`hyplex.models.encoder_capture`. The parametrisations::

    LibrarySelectionEncoder   T_f = sum_n softmax((a_fn + g_fn) / tau) T_n    library designs n,
                              g ~ Gumbel(0, 1) (Jang et al., ICLR 2017), tau annealed; harden():
                              T_f = T_{argmax_n a_fn}, one fabricable design per filter
    SurrogateGeometryEncoder  x_f = low + (high - low) sigmoid(z_f) -> SpectralSurrogate -> T_f;
                              refine_with_rcwa() recomputes T_f with the RCWA
    UnconstrainedEncoder      T_f = sigmoid(z_f), free in [0, 1]: the unrealizable upper bound
    FixedResponseEncoder      given responses: PCA targets, an RGB camera, the identity (full
                              cube, the upper bound of any encoder)

:func:`separability_selection` chooses a library encoder's designs without training instead:
greedy forward selection (Whitney, IEEE Trans. Comput. 1971) on the mean pairwise
Bhattacharyya coefficient of the classes' noisy barcodes (Kailath, IEEE Trans. Commun.
Technol. 1967), an upper bound on the pairwise Bayes error; seconds for hundreds of designs,
linear in the library size (:meth:`LibrarySelectionEncoder.fix_selection` hardens onto it).

The Hyplex baseline (Makarenko et al., CVPR 2022) is :func:`pca_target_encoder`: the first
``F`` principal components of training spectra, mapped into [0, 1] as physical transmissions,
then the nearest library design to each (:func:`nearest_library_designs`).

Library and surrogate spectra live on their own grid; they are band-averaged onto the training
grid with :func:`hyplex.simulation.grids.resample` (a linear map, so gradients pass), which
raises if a training wavelength lies outside the library's range. Unpolarised light: the mean
of the TE and TM transmittance.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from hyplex.models.encoder_capture import CameraCapture, CaptureSettings
from hyplex.optics.library import LibraryError, ResponseLibrary, check_same_grid
from hyplex.simulation.grids import check_wavelengths, resample

__all__ = [
    "SpectralEncoder",
    "LibrarySelectionEncoder",
    "SurrogateGeometryEncoder",
    "UnconstrainedEncoder",
    "library_responses",
    "resample_matrix",
    "separability_selection",
    "temperature_schedule",
]


def resample_matrix(source_nm, target_nm) -> np.ndarray:
    """``(K, L)`` matrix ``M`` with ``resample(source, T, target) == T @ M`` for any ``T``."""
    source = check_wavelengths(source_nm, "source_nm")
    return resample(source, np.eye(source.size), check_wavelengths(target_nm, "target_nm"))


def library_responses(library: ResponseLibrary, wavelengths_nm, resample_spectra=True):
    """Unpolarised transmittance ``(N, L)`` of a library's finished designs on a grid.

    Returns ``(responses, indices)`` with ``indices (N,)`` the designs' rows in ``library``.
    ``resample_spectra=False`` demands the library's own grid (:class:`LibraryError` else).
    """
    indices = np.flatnonzero(library.done)
    if indices.size == 0:
        raise LibraryError("the library has no finished designs (done flags all False)")
    spectra = library.T[indices].mean(axis=-1)  # unpolarised: mean of TE and TM
    if not resample_spectra:
        check_same_grid(wavelengths_nm, library.wavelengths_nm, "the library")
        return spectra, indices
    try:
        spectra = spectra @ resample_matrix(library.wavelengths_nm, wavelengths_nm)
    except ValueError as error:
        raise LibraryError(f"cannot resample the library onto the training grid: {error}") from None
    return np.clip(spectra, 0.0, 1.0), indices


def temperature_schedule(step: int, total_steps: int, start: float = 1.0, end: float = 0.05):
    """Exponential annealing ``tau = start (end / start)^(step / total)`` (Jang et al. 2017)."""
    if not (start > 0 and end > 0):
        raise ValueError(f"temperatures must be > 0, got start={start}, end={end}")
    fraction = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return float(start * (end / start) ** fraction)


class SpectralEncoder(nn.Module):
    """Base class: ``F`` filter responses seen through a :class:`CameraCapture`."""

    kind = "encoder"

    def __init__(self, wavelengths_nm, capture: CameraCapture | CaptureSettings | None = None):
        super().__init__()
        self.wavelengths_nm = check_wavelengths(wavelengths_nm)
        if not isinstance(capture, CameraCapture):
            capture = CameraCapture(self.wavelengths_nm, capture)
        check_same_grid(self.wavelengths_nm, capture.wavelengths_nm, "the capture model")
        self.capture = capture
        self.hardened = False

    def responses(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Filter transmissions ``(F, L)`` in [0, 1] on the training grid."""
        raise NotImplementedError

    @property
    def n_filters(self) -> int:
        """``F``, the number of filters (from the parameters, without drawing any noise)."""
        for name in ("logits", "latent", "fixed"):
            if hasattr(self, name):
                return int(getattr(self, name).shape[0])
        raise NotImplementedError

    def forward(self, cube, generator=None, noise: bool = True) -> torch.Tensor:
        """Normalised noisy barcodes ``(B, F, H, W)`` of an apparent-reflectance cube
        ``(B, L, H, W)``; ``generator`` draws the sensor (and Gumbel) noise."""
        return self.capture(cube, self.responses(generator), generator, noise)

    def harden(self) -> dict:
        """Fix the design for fabrication; returns what was chosen (see :meth:`design`)."""
        self.hardened = True
        return self.design()

    def design(self) -> dict:
        """The current design: ``kind`` and ``responses (F, L)`` (numpy) at least."""
        with torch.no_grad():
            responses = self.responses().detach().cpu().double().numpy()
        return {"kind": self.kind, "responses": responses}


class LibrarySelectionEncoder(SpectralEncoder):
    """Each filter is a (relaxed) choice among the designs of a response library.

    Parameters
    ----------
    library : the response library (its finished designs are the candidates).
    wavelengths_nm : ``(L,)`` training grid.
    n_filters : ``F`` (9 for a 3 x 3 metapixel).
    capture : capture model or its settings.
    gumbel : add Gumbel noise in training mode (Gumbel-softmax); plain softmax otherwise.
    temperature : initial softmax temperature (> 0).
    resample_spectra : band-average the library onto the grid (else the grids must match).
    seed : initialises the selection logits (small random values).
    """

    kind = "library"

    def __init__(
        self,
        library: ResponseLibrary,
        wavelengths_nm,
        n_filters: int = 9,
        capture=None,
        gumbel: bool = True,
        temperature: float = 1.0,
        resample_spectra: bool = True,
        seed: int = 0,
    ):
        super().__init__(wavelengths_nm, capture)
        if int(n_filters) < 1:
            raise ValueError(f"n_filters must be >= 1, got {n_filters}")
        spectra, indices = library_responses(library, self.wavelengths_nm, resample_spectra)
        self.library = library
        self.library_index = indices
        self.register_buffer("library_spectra", torch.as_tensor(spectra, dtype=torch.float32))
        generator = torch.Generator().manual_seed(int(seed))
        logits = 0.01 * torch.randn(int(n_filters), len(indices), generator=generator)
        self.logits = nn.Parameter(logits)
        self.register_buffer("chosen", torch.full((int(n_filters),), -1, dtype=torch.long))
        self.gumbel = bool(gumbel)
        self.set_temperature(temperature)

    def set_temperature(self, temperature: float) -> None:
        """Set the softmax temperature tau (> 0); low tau approaches a one-hot choice."""
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {temperature}")
        self.temperature = float(temperature)

    def selection_weights(self, generator=None) -> torch.Tensor:
        """``(F, N)`` weights over the designs, rows summing to 1 (one-hot once hardened)."""
        if self.hardened:
            return nn.functional.one_hot(self.chosen, self.logits.shape[1]).to(self.logits)
        logits = self.logits
        if self.gumbel and self.training:
            uniform = torch.rand(
                logits.shape, generator=generator, device=logits.device, dtype=logits.dtype
            )
            logits = logits - torch.log(-torch.log(uniform.clamp(1e-10, 1.0 - 1e-7)))
        return torch.softmax(logits / self.temperature, dim=-1)

    def responses(self, generator=None) -> torch.Tensor:
        if self.hardened:
            return self.library_spectra[self.chosen]
        return self.selection_weights(generator) @ self.library_spectra

    def harden(self, distinct: bool = False) -> dict:
        """Pick one design per filter: the argmax of its logits (``distinct``: greedily, most
        confident filter first, never the same design twice). Returns :meth:`design`, whose
        ``library_indices`` index rows of the library file. An encoder already hardened (e.g.
        by :func:`pca_target_encoder`) keeps its choice."""
        if self.hardened:
            return self.design()
        logits = self.logits.detach().cpu()
        if not distinct:
            chosen = logits.argmax(-1)
        else:
            if logits.shape[1] < logits.shape[0]:
                raise ValueError(f"distinct needs >= {logits.shape[0]} designs in the library")
            chosen = torch.full((logits.shape[0],), -1, dtype=torch.long)
            probabilities = torch.softmax(logits, -1)
            for row in probabilities.max(-1).values.argsort(descending=True):
                ranked = probabilities[row].argsort(descending=True)
                taken = set(chosen.tolist())
                chosen[row] = next(int(n) for n in ranked if int(n) not in taken)
        self.chosen.copy_(chosen.to(self.chosen.device))
        self.logits.requires_grad_(False)
        return super().harden()

    def fix_selection(self, chosen) -> dict:
        """Harden onto given designs: ``chosen (F,)`` ints, positions among the encoder's
        candidates (rows of ``library_spectra``, not of the library file), e.g. from
        :func:`separability_selection`. Returns :meth:`design`."""
        chosen = torch.as_tensor(np.asarray(chosen), dtype=torch.long).flatten()
        candidates = self.library_spectra.shape[0]
        if chosen.numel() != self.n_filters or chosen.min() < 0 or chosen.max() >= candidates:
            raise ValueError(
                f"chosen must be {self.n_filters} indices in [0, {candidates}), got "
                f"{chosen.tolist()}"
            )
        self.chosen.copy_(chosen.to(self.chosen.device))
        self.logits.requires_grad_(False)
        return super().harden()

    def design(self) -> dict:
        record = super().design()
        if self.hardened:
            rows = self.library_index[self.chosen.cpu().numpy()]
            record.update(
                library_indices=rows,
                params_nm=self.library.params_nm[rows],
                thickness_nm=self.library.thickness_nm[rows],
                parameter_names=list(self.library.parameter_names),
                family=self.library.family,
            )
        return record


def _class_moments(features: torch.Tensor, labels: torch.Tensor, classes) -> tuple:
    """Per-class means ``(C, K)`` and the centred features of each class (a list)."""
    means, centred = [], []
    for label in classes:
        rows = features[labels == label]
        means.append(rows.mean(0))
        centred.append(rows - rows.mean(0))
    return torch.stack(means), centred


def _bhattacharyya_coefficients(means, covariances) -> torch.Tensor:
    """``exp(-B_ij)`` for every class pair ``i < j``: ``means (..., C, k)``, ``covariances
    (..., C, k, k)`` -> ``(..., C (C - 1) / 2)``; ``B`` is the Gaussian Bhattacharyya distance
    ``1/8 d^T S^-1 d + 1/2 ln(|S| / sqrt(|S_i| |S_j|))`` with ``S = (S_i + S_j) / 2``."""
    n_classes = means.shape[-2]
    first, second = torch.triu_indices(n_classes, n_classes, 1)
    difference = means[..., first, :] - means[..., second, :]
    pooled = 0.5 * (covariances[..., first, :, :] + covariances[..., second, :, :])
    logdet = torch.linalg.slogdet(covariances).logabsdet
    mahalanobis = (difference * torch.linalg.solve(pooled, difference[..., None])[..., 0]).sum(-1)
    log_ratio = torch.linalg.slogdet(pooled).logabsdet
    log_ratio = log_ratio - 0.5 * (logdet[..., first] + logdet[..., second])
    return torch.exp(-(0.125 * mahalanobis + 0.5 * log_ratio))


@torch.no_grad()
def separability_selection(
    candidates,
    capture: CameraCapture,
    cubes,
    labels,
    n_filters: int = 9,
    pixels_per_class: int = 2000,
    distinct: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """Choose ``n_filters`` of ``candidates`` by greedy forward selection on a class-separability
    proxy of segmentation, measured on noisy barcodes of labelled training pixels.

    The criterion is the mean pairwise Bhattacharyya coefficient ``rho_ij = exp(-B_ij)`` of the
    classes' barcode distributions (Gaussian, one mean and covariance per class: the covariance
    of the noise-free barcodes through ``capture`` plus the sensor-noise variance of each filter
    on its diagonal, estimated from one noisy draw), an upper bound on the pairwise Bayes error
    ``P_ij <= sqrt(p_i p_j) rho_ij`` (Kailath, "The divergence and Bhattacharyya distance
    measures in signal selection", IEEE Trans. Commun. Technol. 15(1), 1967: the bound and the
    Gaussian closed form of B; Fukunaga, "Introduction to Statistical Pattern Recognition", 2nd
    ed. 1990, sec. 3.4). Averaged over pairs, the hard pairs (a metameric fake against its real
    class) dominate, since the easy pairs' coefficients vanish; the weighted-Bhattacharyya band
    selection of Liu, Gu, Zhang & Wang (ICSP 2006) stresses them for the same reason. The search
    is sequential forward selection (Whitney, "A direct method of nonparametric measurement
    selection", IEEE Trans. Comput. C-20, 1971): each of the ``n_filters`` steps adds the
    candidate that most lowers the criterion of the set chosen so far. A candidate may be chosen
    twice (``distinct=False``): its second copy is a second metapixel with its own sensor noise,
    which lowers the noise variance.

    Parameters
    ----------
    candidates : ``(N, L)`` transmissions in [0, 1] on the capture's grid (the designs).
    capture : the camera the encoder is seen through (its noise and exposure).
    cubes : ``(S, L, H, W)`` apparent reflectance of the training scenes (unitless).
    labels : ``(S, H, W)`` integer class ids.
    n_filters : ``F``, designs to choose.
    pixels_per_class : training pixels drawn per class (fewer if the class has fewer);
        classes with fewer than ``n_filters + 2`` pixels are left out of the criterion.
    distinct : never choose one design twice.
    seed : draws the pixels and the sensor noise.
    progress : tqdm bar over the ``n_filters`` steps.

    Returns
    -------
    ``(F,)`` int64 indices into ``candidates``, in the order they were chosen.
    """
    candidates = torch.as_tensor(np.asarray(candidates), dtype=torch.float32)
    cubes = torch.as_tensor(cubes, dtype=torch.float32)
    labels = torch.as_tensor(labels).long()
    bands = capture.wavelengths_nm.size
    if candidates.ndim != 2 or candidates.shape[1] != bands:
        raise ValueError(f"candidates must be (N, L={bands}), got {tuple(candidates.shape)}")
    if cubes.ndim != 4 or cubes.shape[1] != bands:
        raise ValueError(f"cubes must be (S, L={bands}, H, W), got {tuple(cubes.shape)}")
    if labels.shape != (cubes.shape[0], *cubes.shape[2:]):
        raise ValueError(f"labels must be (S, H, W) = {(cubes.shape[0], *cubes.shape[2:])}, "
                         f"got {tuple(labels.shape)}")  # fmt: skip
    n_filters = int(n_filters)
    if n_filters < 1 or (distinct and n_filters > len(candidates)):
        raise ValueError(f"n_filters must be in [1, {len(candidates)}], got {n_filters}")
    rng = np.random.default_rng(seed)
    pixels = cubes.permute(0, 2, 3, 1).reshape(-1, bands)
    flat = labels.reshape(-1).numpy()
    picked = []
    for label in np.unique(flat):
        rows = np.flatnonzero(flat == label)
        if rows.size >= n_filters + 2:
            picked.append(rng.choice(rows, min(rows.size, int(pixels_per_class)), replace=False))
    if len(picked) < 2:
        raise ValueError("separability_selection needs two classes with enough pixels")
    picked = np.concatenate(picked)
    generator = torch.Generator().manual_seed(int(seed))
    cube = pixels[torch.as_tensor(picked)].T[None, :, :, None]  # (1, L, P, 1)
    clean = capture(cube, candidates, noise=False)[0, :, :, 0].T.double()  # (P, N)
    noisy = capture(cube, candidates, generator)[0, :, :, 0].T.double()
    pixel_labels = torch.as_tensor(flat[picked])
    classes = torch.unique(pixel_labels).tolist()
    means, centred = _class_moments(clean, pixel_labels, classes)
    # sensor noise: independent between filters (each sits on its own pixels), so it adds
    # its variance to the diagonal only, also for a design chosen twice (its second copy has
    # its own noise); estimated per class and design from one noisy draw
    noise = torch.stack([((noisy - clean)[pixel_labels == c] ** 2).mean(0) for c in classes])
    variances = torch.stack([(rows * rows).mean(0) for rows in centred]) + noise  # (C, N)
    scale = variances.mean()
    chosen: list[int] = []
    from tqdm.auto import tqdm

    for _ in tqdm(range(n_filters), desc="filter selection", disable=not progress):
        k = len(chosen)
        # covariances of chosen + candidate, per class: (N, C, k + 1, k + 1)
        block = torch.zeros(len(candidates), len(classes), k + 1, k + 1, dtype=torch.float64)
        for c, rows in enumerate(centred):
            inner = rows[:, chosen]
            block[:, c, :k, :k] = inner.T @ inner / len(rows) + torch.diag(noise[c, chosen])
            cross = (inner.T @ rows / len(rows)).T  # (N, k)
            block[:, c, :k, k] = cross
            block[:, c, k, :k] = cross
            block[:, c, k, k] = variances[c]
        block = block + 1e-9 * scale * torch.eye(k + 1, dtype=torch.float64)
        subset_means = torch.cat(
            [means[:, chosen].expand(len(candidates), -1, -1), means.T[:, :, None]], -1
        )  # (N, C, k + 1)
        score = _bhattacharyya_coefficients(subset_means, block).mean(-1)
        if distinct and chosen:
            score[chosen] = torch.inf
        chosen.append(int(torch.argmin(score)))
    return np.asarray(chosen, dtype=np.int64)


class SurrogateGeometryEncoder(SpectralEncoder):
    """Each filter is a geometry (shape parameters, thickness) mapped to T by a surrogate.

    The geometry ``(F, P + 1)`` nm is ``low + span * sigmoid(z)`` in the surrogate's box, so it
    is always inside the family's fabricable bounds; the surrogate is frozen.

    Parameters
    ----------
    surrogate : a trained :class:`hyplex.optics.surrogate.SpectralSurrogate`.
    wavelengths_nm, n_filters, capture : as :class:`LibrarySelectionEncoder`.
    seed : draws the initial geometries uniformly in the box.
    """

    kind = "surrogate"

    def __init__(self, surrogate, wavelengths_nm, n_filters: int = 9, capture=None, seed=0):
        super().__init__(wavelengths_nm, capture)
        if int(n_filters) < 1:
            raise ValueError(f"n_filters must be >= 1, got {n_filters}")
        self.surrogate = surrogate.eval().requires_grad_(False)
        try:
            matrix = resample_matrix(surrogate.wavelengths_nm, self.wavelengths_nm)
        except ValueError as error:
            raise LibraryError(f"cannot resample the surrogate onto the grid: {error}") from None
        self.register_buffer("resample", torch.as_tensor(matrix, dtype=torch.float32))
        generator = torch.Generator().manual_seed(int(seed))
        unit = 0.1 + 0.8 * torch.rand(int(n_filters), surrogate.low.numel(), generator=generator)
        self.latent = nn.Parameter(torch.logit(unit))
        self.register_buffer("refined", torch.zeros(0))

    def geometry_nm(self) -> torch.Tensor:
        """``(F, P + 1)`` shape parameters then thickness, nm."""
        low, span = self.surrogate.low, self.surrogate.span
        return low.to(self.latent) + span.to(self.latent) * torch.sigmoid(self.latent)

    def responses(self, generator=None) -> torch.Tensor:
        if self.refined.numel():
            return self.refined
        geometry = self.geometry_nm()
        spectra = self.surrogate(geometry[:, :-1], geometry[:, -1]).mean(-1)  # TE/TM mean
        return (spectra @ self.resample.to(spectra)).clamp(0.0, 1.0)

    def harden(self) -> dict:
        """Freeze the geometry (it is fabricable by construction)."""
        self.latent.requires_grad_(False)
        return super().harden()

    @torch.no_grad()
    def refine_with_rcwa(
        self, harmonics: int = 2, grid=(64, 64), min_feature_nm=0.0, factorization="vector"
    ) -> dict:
        """Recompute the responses with the RCWA (:class:`hyplex.optics.design_space.
        RCWASpectrum`, orders ``-harmonics..harmonics`` per axis on a ``grid`` px cell with the
        given Fourier ``factorization``) on the surrogate's grid, then resample; they replace
        the surrogate's from now on. Low orders are far from converged on curved or thin
        shapes (README, "Convergence"): refine at the order the library was solved with or
        above. Returns ``{"rms_surrogate_vs_rcwa": float, "responses": (F, L)}``."""
        from hyplex.optics.design_space import DesignSpace, RCWASpectrum

        info = self.surrogate.description
        low, high = (self.surrogate.low + self.surrogate.span * s for s in (0.0, 1.0))
        space = DesignSpace(
            info["family"], info["period_nm"], (float(low[-1]), float(high[-1])), min_feature_nm
        )
        forward = RCWASpectrum(
            space,
            torch.as_tensor(self.surrogate.wavelengths_nm, dtype=torch.float64),
            info["material"],
            info["substrate"],
            info.get("superstrate", "air"),
            harmonics=int(harmonics),
            grid=tuple(grid),
            factorization=factorization,
        )
        self.refined = torch.zeros(0, device=self.latent.device)
        surrogate = self.responses().detach()
        exact = forward(self.geometry_nm().detach().double().cpu()).float()
        exact = (exact.to(self.resample) @ self.resample).clamp(0.0, 1.0)
        self.refined = exact
        rms = float(torch.sqrt(((surrogate - exact) ** 2).mean()))
        return {"rms_surrogate_vs_rcwa": rms, "responses": exact.cpu().double().numpy()}

    def design(self) -> dict:
        record = super().design()
        record.update(
            geometry_nm=self.geometry_nm().detach().cpu().double().numpy(),
            parameter_names=[*self.surrogate.description["parameter_names"], "thickness_nm"],
            family=self.surrogate.description["family"],
            refined_with_rcwa=bool(self.refined.numel()),
        )
        return record


class UnconstrainedEncoder(SpectralEncoder):
    """Free responses ``sigmoid(z) (F, L)``: what an encoder could do without fabrication."""

    kind = "unconstrained"

    def __init__(self, wavelengths_nm, n_filters: int = 9, capture=None, seed: int = 0):
        super().__init__(wavelengths_nm, capture)
        generator = torch.Generator().manual_seed(int(seed))
        shape = (int(n_filters), self.wavelengths_nm.size)
        self.latent = nn.Parameter(0.5 * torch.randn(shape, generator=generator))

    def responses(self, generator=None) -> torch.Tensor:
        return torch.sigmoid(self.latent)

    def harden(self) -> dict:
        self.latent.requires_grad_(False)
        return super().harden()


# The fixed-response baselines (PCA targets, RGB, identity) live in encoder_baselines.py; they
# are importable from here too (resolved lazily: that module subclasses SpectralEncoder).
_BASELINES = (
    "FixedResponseEncoder",
    "identity_encoder",
    "nearest_library_designs",
    "pca_target_encoder",
    "pca_target_responses",
    "rgb_encoder",
)


def __getattr__(name: str):
    if name in _BASELINES:
        from hyplex.models import encoder_baselines

        return getattr(encoder_baselines, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
