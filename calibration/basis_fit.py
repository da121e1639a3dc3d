"""The Hyplex calibration method: channel responses from broadband samples by NNLS.

Hyplex (Makarenko et al., CVPR 2022, supplementary) calibrated the fabricated encoder without
a monochromator: the camera and a reference spectrometer measured 48 broadband samples, and
each channel's response was fitted as a non-negative sum of smooth basis functions::

    y_{f,s} = sum_i S_s(lambda_i) q_i R_f(lambda_i),   R_f = sum_k c_{f,k} phi_k,   c >= 0
    c_f = argmin_{c >= 0} || A c - y_f ||,   A_{s,k} = sum_i S_s(lambda_i) q_i phi_k(lambda_i)

solved by NNLS (C. L. Lawson, R. J. Hanson, "Solving least squares problems", 1974, ch. 23;
``scipy.optimize.nnls``), with Gaussian or Lorentzian phi_k of FWHM ``width_nm`` on evenly
spaced centres. R^2 = 1 - SS_res / SS_tot of the readings tells how well each channel fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from hyplex.simulation.grids import check_wavelengths, quadrature_weights

BASES = ("gaussian", "lorentzian")


def basis_functions(
    wavelengths_nm, n_basis: int, width_nm: float | None = None, kind: str = "gaussian"
) -> np.ndarray:
    """phi (K, L): ``kind`` peaks of FWHM ``width_nm`` (default: 1.5 x the centre spacing)
    centred evenly over the grid."""
    grid = check_wavelengths(wavelengths_nm)
    if kind not in BASES:
        raise ValueError(f"kind must be one of {BASES}, got {kind!r}")
    if int(n_basis) != n_basis or n_basis < 1:
        raise ValueError(f"n_basis must be an integer >= 1, got {n_basis!r}")
    centres = np.linspace(grid[0], grid[-1], int(n_basis))
    spacing = (grid[-1] - grid[0]) / max(n_basis - 1, 1)
    width = 1.5 * spacing if width_nm is None else float(width_nm)
    distance = grid[None, :] - centres[:, None]
    if kind == "gaussian":
        return np.exp(-4.0 * np.log(2.0) * (distance / width) ** 2)
    return 1.0 / (1.0 + (2.0 * distance / width) ** 2)


@dataclass(frozen=True)
class BasisFit:
    """Result of :func:`fit_response_basis`.

    Attributes
    ----------
    wavelengths_nm : (L,)
    response : (C, L) fitted responses (readings per unit spectrum per nm)
    coefficients : (C, K) non-negative weights of the basis
    r_squared : (C,) coefficient of determination of each channel's readings
    """

    wavelengths_nm: np.ndarray
    response: np.ndarray
    coefficients: np.ndarray
    r_squared: np.ndarray


def fit_response_basis(
    spectra,
    wavelengths_nm,
    readings,
    n_basis: int = 12,
    width_nm: float | None = None,
    kind: str = "gaussian",
) -> BasisFit:
    """Fit channel responses to readings of broadband samples (see the module doc).

    Parameters
    ----------
    spectra : array_like (S, L)
        Spectra of the samples at the camera (e.g. 48, from a reference spectrometer).
    wavelengths_nm : array_like (L,)
    readings : array_like (S, C)
        Dark-subtracted channel readings of each sample.
    n_basis, width_nm, kind : see :func:`basis_functions`
    """
    grid = check_wavelengths(wavelengths_nm)
    spectra = np.asarray(spectra, dtype=np.float64)
    readings = np.asarray(readings, dtype=np.float64)
    if spectra.ndim != 2 or spectra.shape[1] != grid.size:
        raise ValueError(f"spectra must have shape (S, L={grid.size}), got {spectra.shape}")
    if readings.ndim != 2 or readings.shape[0] != spectra.shape[0]:
        raise ValueError(
            f"readings must have shape (S={spectra.shape[0]}, C), got {readings.shape}"
        )
    phi = basis_functions(grid, n_basis, width_nm, kind)
    design = (spectra * quadrature_weights(grid)) @ phi.T
    scale = np.linalg.norm(design, axis=0)
    scale[scale == 0] = 1.0
    coefficients = np.empty((readings.shape[1], phi.shape[0]))
    r_squared = np.empty(readings.shape[1])
    for c, y in enumerate(readings.T):
        weights, _ = nnls(design / scale, y)
        coefficients[c] = weights / scale
        residual = y - design @ coefficients[c]
        total = np.sum((y - y.mean()) ** 2)
        r_squared[c] = 1.0 - np.sum(residual**2) / total if total > 0 else np.nan
    return BasisFit(grid, coefficients @ phi, coefficients, r_squared)


def sample_spectra(wavelengths_nm, n_samples: int = 48, seed: int = 0) -> np.ndarray:
    """``n_samples`` smooth broadband test spectra (S, L), 0.05-1, for simulated benches: sums
    of three random Gaussian bumps on a floor (stand-ins for coloured reflectance targets)."""
    grid = check_wavelengths(wavelengths_nm)
    rng = np.random.default_rng(seed)
    centres = rng.uniform(grid[0] - 50, grid[-1] + 50, (n_samples, 3))
    widths = rng.uniform(30, 150, (n_samples, 3))
    heights = rng.uniform(0.2, 1.0, (n_samples, 3))
    bumps = heights[..., None] * np.exp(
        -0.5 * ((grid[None, None] - centres[..., None]) / widths[..., None]) ** 2
    )
    spectra = 0.05 + bumps.sum(1)
    return spectra / spectra.max(1, keepdims=True)
