"""Fixed-response encoders: the baselines a co-designed metasurface encoder is compared with.

* the Hyplex baseline (Makarenko et al., CVPR 2022): the first ``F`` principal components of
  training spectra as target filters (:func:`pca_target_responses`), each realised by the
  nearest design of a response library (:func:`nearest_library_designs`,
  :func:`pca_target_encoder`);
* an RGB camera (:func:`rgb_encoder`, colour-science sensitivities);
* the full cube (:func:`identity_encoder`, one ideal filter per band: the upper bound).
"""

from __future__ import annotations

import numpy as np
import torch

from hyplex.models.encoder import LibrarySelectionEncoder, SpectralEncoder
from hyplex.simulation.encoder import check_transmission_scale
from hyplex.simulation.grids import check_wavelengths

_ROUNDING = 1e-6  # float32 sums of transmissions may stray this far outside [0, 1]

__all__ = [
    "FixedResponseEncoder",
    "rgb_encoder",
    "identity_encoder",
    "pca_target_responses",
    "nearest_library_designs",
    "pca_target_encoder",
]


class FixedResponseEncoder(SpectralEncoder):
    """Given responses ``(F, L)``: power transmissions, unitless fractions in [0, 1] (not
    trained). Responses in another unit or scale (counts, percent, per-nm values; negative,
    above 1 or all below 0.01) are refused with a message naming the expected unit
    (:func:`hyplex.simulation.encoder.check_transmission_scale`); float rounding within 1e-6
    of [0, 1] is clipped."""

    kind = "fixed"

    def __init__(self, responses, wavelengths_nm, capture=None, name: str = "fixed"):
        super().__init__(wavelengths_nm, capture)
        values = np.asarray(responses, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.wavelengths_nm.size:
            raise ValueError(
                f"responses must have shape (F, L={self.wavelengths_nm.size}), "
                f"got {tuple(values.shape)}"
            )
        check_transmission_scale(values, "responses", maximum=1.0 + _ROUNDING)
        values = torch.as_tensor(np.clip(values, 0.0, 1.0), dtype=torch.float32)
        self.register_buffer("fixed", values)
        self.name = name
        self.hardened = True

    def responses(self, generator=None) -> torch.Tensor:
        return self.fixed


def rgb_encoder(wavelengths_nm, camera: str = "Nikon 5100 (NPL)", capture=None):
    """An RGB camera: its colour-science spectral sensitivities scaled to a peak of 1, used as
    filter transmissions (the twin's silicon QE multiplies them as well, an approximation)."""
    from hyplex.simulation.colorimetry import camera_sensitivities

    sensitivities = camera_sensitivities(wavelengths_nm, camera)
    if not sensitivities.max() > 0:
        raise ValueError(f"{camera} has no sensitivity on this wavelength grid")
    responses = np.clip(sensitivities / sensitivities.max(), 0.0, 1.0)
    return FixedResponseEncoder(responses, wavelengths_nm, capture, name=f"RGB {camera}")


def identity_encoder(wavelengths_nm, capture=None):
    """The full cube: one ideal band-pass filter per band (``F = L``), the upper bound."""
    grid = check_wavelengths(wavelengths_nm)
    return FixedResponseEncoder(np.eye(grid.size), grid, capture, name="identity (full cube)")


def pca_target_responses(spectra, n_filters: int = 9) -> np.ndarray:
    """Hyplex PCA targets ``(F, L)``: the first ``F`` principal components of ``spectra``
    ``(N, L)`` (via :func:`hyplex.models.reconstruction.pca_basis`), each mapped affinely into
    [0, 1], ``t = (c - min c) / (max c - min c)``. A component and its shifted, scaled
    version span the same measurement up to the flat response, which a learned decoder absorbs;
    the sign of a component is arbitrary and is chosen so that its mean is positive."""
    from hyplex.models.reconstruction import pca_basis

    data = torch.as_tensor(np.asarray(spectra, dtype=np.float32))
    if data.ndim != 2 or data.shape[0] < n_filters:
        raise ValueError(f"spectra must be (N >= {n_filters}, L), got {tuple(data.shape)}")
    if n_filters > data.shape[1]:
        raise ValueError(
            f"{n_filters} PCA target filters need at least as many bands, got L={data.shape[1]}"
        )
    components, _ = pca_basis(data, n_filters)
    components = torch.as_tensor(components).double().cpu().numpy()
    components = components * np.where(components.mean(-1, keepdims=True) < 0, -1.0, 1.0)
    low, high = components.min(-1, keepdims=True), components.max(-1, keepdims=True)
    return (components - low) / np.maximum(high - low, 1e-12)


def nearest_library_designs(targets, responses, distinct: bool = True) -> np.ndarray:
    """Index ``(F,)`` of the design (row of ``responses (N, L)``) nearest to each target
    ``(F, L)`` in Euclidean distance of the transmission; ``distinct``: greedy, closest pair
    first, each design used once."""
    targets = np.asarray(targets, dtype=np.float64)
    responses = np.asarray(responses, dtype=np.float64)
    if targets.ndim != 2 or responses.ndim != 2 or targets.shape[1] != responses.shape[1]:
        raise ValueError(
            f"targets (F, L) and responses (N, L) must share L, got {targets.shape}, "
            f"{responses.shape}"
        )
    distance = np.linalg.norm(targets[:, None, :] - responses[None, :, :], axis=-1)
    if not distinct:
        return distance.argmin(-1)
    if responses.shape[0] < targets.shape[0]:
        raise ValueError(f"distinct needs >= {targets.shape[0]} designs, got {responses.shape[0]}")
    chosen = np.full(targets.shape[0], -1)
    for flat in np.argsort(distance, axis=None):
        row, column = divmod(int(flat), responses.shape[0])
        if chosen[row] < 0 and column not in chosen:
            chosen[row] = column
    return chosen


def pca_target_encoder(spectra, wavelengths_nm, library=None, n_filters=9, capture=None):
    """The Hyplex baseline: PCA targets (:func:`pca_target_responses`), realised by the
    nearest designs of ``library`` (a hardened :class:`LibrarySelectionEncoder`), or the
    targets themselves (a :class:`FixedResponseEncoder`) when ``library`` is None."""
    targets = pca_target_responses(spectra, n_filters)
    if library is None:
        return FixedResponseEncoder(targets, wavelengths_nm, capture, name="PCA targets")
    encoder = LibrarySelectionEncoder(library, wavelengths_nm, n_filters, capture, gumbel=False)
    chosen = nearest_library_designs(targets, encoder.library_spectra.numpy())
    encoder.chosen.copy_(torch.as_tensor(chosen))
    encoder.logits.requires_grad_(False)
    encoder.hardened = True
    encoder.pca_targets = targets
    return encoder
