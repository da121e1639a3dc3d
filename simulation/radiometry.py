"""Radiometric convention of the camera twin: scene radiance to photons per sensor pixel.

The chain, for one sensor pixel behind sub-filter f (all spectral quantities per nm)::

    scene                    lens (f-number N,          metasurface      sensor pixel
    L(lambda)  ------------> transmission tau) -------> T_f(lambda) ---> area A, QE(lambda)
    W m^-2 sr^-1 nm^-1       E = tau pi L / (4 N^2)                       exposure t
                             W m^-2 nm^-1

    photons  mu_p = t A integral E(lambda) T_f(lambda) lambda / (h c) dlambda
    electrons mu_e = t A integral E(lambda) T_f(lambda) QE(lambda) lambda / (h c) dlambda
                   = sum_i L_i w_{f,i}   (the "photoelectron weights" w, electrons per radiance)

E is the on-axis image irradiance of a distant Lambertian scene (the camera equation,
B. K. P. Horn, "Robot Vision", MIT Press 1986, sec. 10.3: E = L (pi/4) (d/f)^2 cos^4(alpha),
here with cos^4 = 1 and d/f = 1/N). A Lambertian surface of reflectance R under spectral
irradiance S has radiance L = R S / pi. Integrals are band averages times bin widths
(``grids.quadrature_weights``), the convention of ``grids.resample``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hyplex.simulation.grids import check_wavelengths, quadrature_weights

PLANCK_J_S = 6.62607015e-34  # h, exact (SI 2019)
LIGHT_SPEED_M_PER_S = 299792458.0  # c, exact


@dataclass(frozen=True)
class LensModel:
    """Imaging lens of the camera.

    Attributes
    ----------
    f_number : float
        N = focal length / aperture diameter (> 0).
    transmission : float
        Spectrally flat lens transmission tau in (0, 1].
    """

    f_number: float = 2.8
    transmission: float = 0.9

    def __post_init__(self):
        if not (np.isfinite(self.f_number) and self.f_number > 0):
            raise ValueError(f"f_number must be > 0, got {self.f_number}")
        if not 0 < self.transmission <= 1:
            raise ValueError(f"transmission must lie in (0, 1], got {self.transmission}")

    def irradiance_factor(self) -> float:
        """E / L = tau pi / (4 N^2), in sr: sensor irradiance per unit scene radiance."""
        return self.transmission * np.pi / (4.0 * self.f_number**2)


def photons_per_joule(wavelengths_nm) -> np.ndarray:
    """lambda / (h c): photons per joule at each wavelength, shape (L,)."""
    grid = check_wavelengths(wavelengths_nm)
    return grid * 1e-9 / (PLANCK_J_S * LIGHT_SPEED_M_PER_S)


def check_exposure(exposure_us: float) -> float:
    """Exposure time in seconds from microseconds; ValueError unless finite and >= 0."""
    exposure = float(exposure_us)
    if not np.isfinite(exposure) or exposure < 0:
        raise ValueError(f"exposure_us must be finite and >= 0 (microseconds), got {exposure_us}")
    return exposure * 1e-6


def photoelectron_weights(
    responses,
    wavelengths_nm,
    quantum_efficiency,
    pixel_area_m2: float,
    exposure_us: float,
    lens: LensModel | None = None,
) -> np.ndarray:
    """Electrons per unit scene radiance, per band: w (F, L) with ``mu_e = sum_i L_i w_i``.

    Parameters
    ----------
    responses : array_like, shape (F, L)
        Filter transmissions T_f on the grid (unitless, >= 0).
    wavelengths_nm : array_like, shape (L,)
    quantum_efficiency : array_like, shape (L,)
        QE (electrons per photon, 0-1); pass ones to count photons instead.
    pixel_area_m2 : float
        Light-sensitive area A of one pixel, m^2 (the pitch squared with microlenses).
    exposure_us : float
        Exposure time, microseconds (>= 0).
    lens : LensModel, optional
        Default ``LensModel()`` (f/2.8, 90 %).

    Returns
    -------
    numpy.ndarray, shape (F, L), float64, electrons per (W m^-2 sr^-1 nm^-1)
    """
    grid = check_wavelengths(wavelengths_nm)
    exposure_s = check_exposure(exposure_us)
    transmission = np.atleast_2d(np.asarray(responses, dtype=np.float64))
    qe = np.asarray(quantum_efficiency, dtype=np.float64)
    if transmission.shape[-1] != grid.size or qe.shape != grid.shape:
        raise ValueError(
            f"mismatched wavelength grids: responses {transmission.shape} and quantum efficiency "
            f"{qe.shape} must have L = {grid.size} bands"
        )
    if not (np.isfinite(pixel_area_m2) and pixel_area_m2 > 0):
        raise ValueError(f"pixel_area_m2 must be > 0, got {pixel_area_m2}")
    lens = LensModel() if lens is None else lens
    per_band = quadrature_weights(grid) * photons_per_joule(grid) * qe
    scale = exposure_s * pixel_area_m2 * lens.irradiance_factor()
    return transmission * per_band * scale


def lambertian_radiance(reflectance, spectral_irradiance) -> np.ndarray:
    """Radiance L = R S / pi (W m^-2 sr^-1 nm^-1) of reflectance (..., L) under S (L,)."""
    return np.asarray(reflectance) * (np.asarray(spectral_irradiance) / np.pi)
