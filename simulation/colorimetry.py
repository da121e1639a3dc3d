"""Colour of spectra: CIE XYZ, sRGB, camera RGB and metamers, on a scene's wavelength grid.

Tristimulus values are sums over the grid with bin widths q_i (nm, ``grids.quadrature_weights``,
the band-average convention of ``grids.resample``) and band-averaged
colour-matching functions (CIE 1931 2 degree observer, colour-science, 360-830 nm; zero
beyond), following CIE 15:2018 eq. 7.2-7.4:

    X = k sum_i q_i R_i S_i xbar_i,    k = 1 / sum_i q_i S_i ybar_i        (reflectance R)

so a perfect white reflector has Y = 1 under any illuminant S. The same discrete sums define
the colour matrix ``A`` (3, L) of :func:`colour_matrix`; a metamer is a spectrum with the same
``A @ R`` (the same colour) but a different shape, which is what lets a hyperspectral encoder
separate a plastic plant from a real one where an RGB camera cannot.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from hyplex.simulation.grids import check_wavelengths, quadrature_weights, resample

# IEC 61966-2-1:1999 sRGB: linear RGB from XYZ (D65 white, Y = 1).
XYZ_TO_LINEAR_SRGB = np.array(
    [
        [3.2406, -1.5372, -0.4986],
        [-0.9689, 1.8758, 0.0415],
        [0.0557, -0.2040, 1.0570],
    ]
)
OBSERVER = "CIE 1931 2 Degree Standard Observer"


@cache
def _observer_table(observer: str):
    import colour

    if observer not in colour.MSDS_CMFS:
        raise ValueError(f"unknown observer {observer!r}; see colour.MSDS_CMFS")
    cmfs = colour.MSDS_CMFS[observer]
    return np.asarray(cmfs.wavelengths, np.float64), np.asarray(cmfs.values, np.float64).T


def observer_functions(wavelengths_nm, observer: str = OBSERVER) -> np.ndarray:
    """Band-averaged colour-matching functions xbar, ybar, zbar on the grid, shape (3, L)."""
    wl, values = _observer_table(observer)
    return resample(wl, values, check_wavelengths(wavelengths_nm), extrapolation="zero")


def camera_sensitivities(wavelengths_nm, camera: str = "Nikon 5100 (NPL)") -> np.ndarray:
    """Band-averaged R, G, B sensitivities of a camera from colour-science, shape (3, L)."""
    import colour

    if camera not in colour.MSDS_CAMERA_SENSITIVITIES:
        raise ValueError(f"unknown camera {camera!r}; see colour.MSDS_CAMERA_SENSITIVITIES")
    msds = colour.MSDS_CAMERA_SENSITIVITIES[camera]
    wl, values = np.asarray(msds.wavelengths, np.float64), np.asarray(msds.values, np.float64).T
    return resample(wl, values, check_wavelengths(wavelengths_nm), extrapolation="zero")


def colour_matrix(wavelengths_nm, illuminant, sensitivities=None) -> np.ndarray:
    """Matrix A (3, L) with ``A @ R`` the XYZ (or camera RGB) of reflectance R under S.

    Parameters
    ----------
    wavelengths_nm : array_like, shape (L,)
    illuminant : array_like, shape (L,)
        Spectral power of the illuminant on the grid (any scale; normalised out).
    sensitivities : array_like, shape (3, L), optional
        Default: the CIE 1931 observer (:func:`observer_functions`).

    Returns
    -------
    numpy.ndarray, shape (3, L), normalised so that the second row sums the white to 1.
    """
    grid = check_wavelengths(wavelengths_nm)
    source = np.asarray(illuminant, dtype=np.float64)
    if source.shape != grid.shape:
        raise ValueError(
            f"illuminant must be sampled on the grid: shape ({grid.size},), got {source.shape}"
        )
    bars = observer_functions(grid) if sensitivities is None else np.asarray(sensitivities)
    if bars.shape != (3, grid.size):
        raise ValueError(f"sensitivities must have shape (3, {grid.size}), got {bars.shape}")
    weighted = bars * (quadrature_weights(grid) * source)
    white = weighted[1].sum()
    if not white > 0:
        raise ValueError("the illuminant has no power where the observer is sensitive")
    return weighted / white


def reflectance_to_xyz(reflectance, wavelengths_nm, illuminant) -> np.ndarray:
    """XYZ (..., 3) of reflectance (..., L) under ``illuminant`` (L,); white has Y = 1."""
    matrix = colour_matrix(wavelengths_nm, illuminant)
    return np.asarray(reflectance, dtype=np.float64) @ matrix.T


def radiance_to_xyz(radiance, wavelengths_nm) -> np.ndarray:
    """Absolute XYZ (..., 3), Y in cd m^-2, of spectral radiance (..., L) in W m^-2 sr^-1 nm^-1.

    ``Y = 683.002 lm/W * integral L(lambda) ybar(lambda) dlambda`` (CIE 15:2018 eq. 7.1).
    """
    grid = check_wavelengths(wavelengths_nm)
    matrix = observer_functions(grid) * quadrature_weights(grid) * 683.002
    return np.asarray(radiance, dtype=np.float64) @ matrix.T


def xyz_to_srgb(xyz, encode: bool = True) -> np.ndarray:
    """sRGB (..., 3) from XYZ (..., 3) with white Y = 1 (IEC 61966-2-1:1999).

    Linear values are clipped to [0, 1]; with ``encode`` the sRGB transfer function is applied.
    """
    linear = np.clip(np.asarray(xyz, dtype=np.float64) @ XYZ_TO_LINEAR_SRGB.T, 0.0, 1.0)
    if not encode:
        return linear
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def metamer(target, base, wavelengths_nm, illuminant, sensitivities=None, tolerance=1e-10):
    """The spectrum closest to ``base`` with the colour of ``target``, within [0, 1].

    Solves ``min ||R - base||^2  s.t.  A R = A target,  0 <= R <= 1`` with ``A`` from
    :func:`colour_matrix`. The KKT conditions give ``R = clip(base + A^T mu, 0, 1)`` for a
    multiplier mu (3,), found by semismooth Newton on ``A clip(base + A^T mu) = A target``
    (a projection onto the intersection of an affine set and a box; the correction
    ``A^T mu`` is a smooth combination of colour-matching functions, so R stays smooth).
    Bands where the matching functions vanish (the near infrared) keep ``base``: an artificial
    object made to look like a natural one keeps its own NIR signature.

    Parameters
    ----------
    target, base : array_like, shape (L,)
        Reflectances in [0, 1] (``target`` sets the colour, ``base`` the spectral shape).
    wavelengths_nm, illuminant, sensitivities
        As for :func:`colour_matrix` (default observer CIE 1931 2 degree).
    tolerance : float
        On the colour match, ``max |A R - A target|``.

    Returns
    -------
    numpy.ndarray, shape (L,)

    Raises
    ------
    ValueError
        On shape mismatches, or if the match does not converge (a target outside [0, 1]).
    """
    matrix = colour_matrix(wavelengths_nm, illuminant, sensitivities)
    target = np.asarray(target, dtype=np.float64)
    base = np.clip(np.asarray(base, dtype=np.float64), 0.0, 1.0)
    if target.shape != base.shape or target.shape != matrix.shape[1:]:
        raise ValueError(f"target and base must have shape ({matrix.shape[1]},)")
    goal = matrix @ target
    scale = np.abs(matrix).max()
    mu = np.zeros(3)
    for _ in range(100):
        trial = base + matrix.T @ mu
        spectrum = np.clip(trial, 0.0, 1.0)
        residual = matrix @ spectrum - goal
        if np.abs(residual).max() <= tolerance:
            return spectrum
        free = (trial > 0.0) & (trial < 1.0)
        jacobian = (matrix[:, free] @ matrix[:, free].T) + 1e-12 * scale**2 * np.eye(3)
        step = np.linalg.solve(jacobian, residual)
        # Backtrack on the residual norm (the map is monotone, piecewise linear).
        size, norm = 1.0, np.linalg.norm(residual)
        while size > 1e-6:
            candidate = np.clip(base + matrix.T @ (mu - size * step), 0.0, 1.0)
            if np.linalg.norm(matrix @ candidate - goal) < norm:
                break
            size *= 0.5
        mu = mu - size * step
    raise ValueError("metamer: the colour match did not converge (is target within [0, 1]?)")
