"""Illuminants and lamps as absolute spectral irradiance on a wavelength grid.

Relative spectral power distributions come from colour-science (CIE 15:2018 tables) or from
Planck's law; :func:`get_illuminant` scales them to a requested illuminance in lux:

    E_v = K_m * integral E(lambda) V(lambda) dlambda,   K_m = 683.002 lm/W   (CIE 15:2018 eq. 7.1)

with V the CIE 1924 photopic luminous efficiency (360-830 nm), integrated on a 1 nm grid
whatever the target grid, so the lux level does not depend on the band sampling.

Names (case-sensitive):

================  ==========================================================================
``D50`` ... ``D75``  CIE daylight (also ``D<cct>``, e.g. ``D5600``), from the S0, S1, S2 basis
                     (CIE 15:2018 eq. 4.7-4.9, 300-830 nm). Beyond 830 nm the table is continued
                     by a Planck curve at the same CCT, scaled to match at 830 nm: an
                     approximation that lacks the 940 nm water band of real daylight.
``A``                CIE illuminant A: Planck at 2848 K with c2 = 1.435e-2 m K (CIE 15:2018
                     eq. 4.1; 2856 K on the modern c2), analytic at every wavelength.
``blackbody-<T>``    Planck's law at T kelvin (CODATA c2), e.g. ``blackbody-3200``.
``halogen``          Tungsten-halogen lamp as a 3200 K blackbody (ignores the emissivity of
                     tungsten and the envelope's transmission).
``E``                equal energy.
``FL1``-``FL12``, ``FL3.1``-``FL3.15``, ``HP1``-``HP5``, ``LED-B1``..., ``LED-RGB1``, ``LED-V1``
                     CIE fluorescent, high-pressure and LED tables (380-780 nm); zero outside
                     (their near-infrared output is small).
any other key of colour's ``SDS_LIGHT_SOURCES`` (e.g. ``"Phosphor LED YAG"``,
                     ``"Incandescent"``): measured lamps (380-780 nm); zero outside.
================  ==========================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

from hyplex.simulation.grids import (
    check_same_grid,
    check_wavelengths,
    hyplex_grid,
    quadrature_weights,
    resample,
)

LUMINOUS_EFFICACY_LM_PER_W = 683.002  # K_m, CIE 15:2018
PLANCK_C2_M_K = 1.438776877e-2  # second radiation constant h c / k_B (CODATA 2018)
CIE_A_C2_M_K = 1.435e-2  # c2 as fixed in the definition of CIE illuminant A
HALOGEN_KELVIN = 3200.0


@dataclass
class Illuminant:
    """Spectral irradiance falling on the scene.

    Attributes
    ----------
    name : str
    wavelengths_nm : numpy.ndarray, shape (L,)
    spectral_irradiance : numpy.ndarray, shape (L,)
        Band-averaged spectral irradiance on a surface facing the source, W m^-2 nm^-1.
    illuminance_lux : float
        Photopic illuminance of the same source, lux.
    source : str
        Where the relative spectrum comes from.
    """

    name: str
    wavelengths_nm: np.ndarray
    spectral_irradiance: np.ndarray
    illuminance_lux: float
    source: str

    def plot(self, ax=None):
        """Plot the spectral irradiance (W m^-2 nm^-1) against wavelength (nm); return ``ax``."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        ax.plot(self.wavelengths_nm, self.spectral_irradiance, label=self.name)
        ax.set(xlabel="wavelength (nm)", ylabel="spectral irradiance (W m$^{-2}$ nm$^{-1}$)")
        ax.set_title(f"{self.name}, {self.illuminance_lux:g} lx")
        return ax


def planck_relative(wavelengths_nm, temperature_k: float, c2_m_k: float = PLANCK_C2_M_K):
    """Planck's law, relative: lambda^-5 / (exp(c2 / (lambda T)) - 1), 1 at 560 nm."""
    if not temperature_k > 0:
        raise ValueError(f"temperature_k must be > 0, got {temperature_k}")
    wavelength_m = np.asarray(wavelengths_nm, dtype=np.float64) * 1e-9

    def spectrum(lam):
        return lam**-5 / np.expm1(c2_m_k / (lam * temperature_k))

    return spectrum(wavelength_m) / spectrum(560e-9)


def _daylight_table(cct_k: float):
    """CIE daylight (relative, 300-830 nm, 5 nm) at the correlated colour temperature."""
    import colour

    if not 4000 <= cct_k <= 25000:
        raise ValueError(f"CIE daylight is defined for 4000-25000 K, got {cct_k:g} K")
    xy = colour.temperature.CCT_to_xy_CIE_D(cct_k * 1.4388 / 1.4380)  # CIE 15:2018 note 4.1
    sd = colour.sd_CIE_illuminant_D_series(xy)
    return np.asarray(sd.wavelengths, dtype=np.float64), np.asarray(sd.values, dtype=np.float64)


_NAMED_DAYLIGHT = {"D50": 5000.0, "D55": 5500.0, "D65": 6500.0, "D75": 7500.0}


@cache
def _relative_table(name: str):
    """(wavelengths nm, relative SPD, extrapolation, analytic temperature or None, source)."""
    import colour

    if name in _NAMED_DAYLIGHT or (name.startswith("D") and name[1:].isdigit()):
        cct = _NAMED_DAYLIGHT.get(name) or float(name[1:])
        wl, spd = _daylight_table(cct)
        return wl, spd, "planck", cct, "CIE 15:2018 daylight basis (S0, S1, S2), colour-science"
    if name == "A":
        return None, None, None, 2848.0, "CIE illuminant A: Planck, 2848 K, c2 = 1.435e-2 m K"
    if name == "halogen" or name.startswith("blackbody-"):
        kelvin = HALOGEN_KELVIN if name == "halogen" else float(name.split("-", 1)[1])
        return None, None, None, kelvin, f"Planck's law at {kelvin:g} K"
    if name == "E":
        return np.array([1.0, 1e5]), np.array([1.0, 1.0]), "constant", None, "equal energy"
    for table, label in ((colour.SDS_ILLUMINANTS, "CIE"), (colour.SDS_LIGHT_SOURCES, "lamp")):
        if name in table and name not in ("D50", "D55", "D60", "D65", "D75"):
            sd = table[name]
            return (
                np.asarray(sd.wavelengths, dtype=np.float64),
                np.asarray(sd.values, dtype=np.float64),
                "zero",
                None,
                f"colour-science {label} table {name!r}",
            )
    raise ValueError(
        f"unknown illuminant {name!r}; use D50/D55/D65/D75/D<cct>, A, E, halogen, "
        "blackbody-<T>, or a key of colour.SDS_ILLUMINANTS / colour.SDS_LIGHT_SOURCES"
    )


def relative_spectrum(name: str, wavelengths_nm) -> tuple[np.ndarray, str]:
    """Band-averaged relative SPD of illuminant ``name`` on ``wavelengths_nm`` and its source."""
    grid = check_wavelengths(wavelengths_nm)
    wl, spd, extrapolation, kelvin, source = _relative_table(name)
    if wl is None:  # analytic Planck: average over each band on a 0.5 nm sub-grid
        c2 = CIE_A_C2_M_K if name == "A" else PLANCK_C2_M_K
        low, high = grid[0] - (grid[1] - grid[0]), grid[-1] + (grid[-1] - grid[-2])
        fine = np.linspace(low, high, int(math.ceil((high - low) / 0.5)) + 1)
        return resample(fine, planck_relative(fine, kelvin, c2), grid), source
    if extrapolation == "planck":  # continue the daylight table beyond 830 nm
        tail = np.arange(wl[-1] + 5.0, max(grid[-1] + 50.0, wl[-1] + 10.0), 5.0)
        planck = planck_relative(tail, kelvin) / planck_relative(wl[-1], kelvin) * spd[-1]
        wl, spd, extrapolation = np.concatenate([wl, tail]), np.concatenate([spd, planck]), "zero"
    return resample(wl, spd, grid, extrapolation=extrapolation), source


@cache
def _photopic_1nm() -> np.ndarray:
    import colour

    sd = colour.SDS_LEFS["CIE 1924 Photopic Standard Observer"]  # 360-830 nm, 1 nm
    return np.asarray(sd.values, dtype=np.float64)


def illuminance_of_relative(name: str) -> float:
    """Illuminance (lux) of the relative SPD of ``name`` taken as W m^-2 nm^-1."""
    fine = np.arange(360.0, 831.0)
    spd, _ = relative_spectrum(name, fine)
    return LUMINOUS_EFFICACY_LM_PER_W * float(
        np.sum(quadrature_weights(fine) * spd * _photopic_1nm())
    )


def get_illuminant(name: str = "D65", wavelengths_nm=None, illuminance_lux: float = 1000.0):
    """Illuminant ``name`` as absolute spectral irradiance giving ``illuminance_lux``.

    Parameters
    ----------
    name : str
        See the module docstring.
    wavelengths_nm : array_like, shape (L,), optional
        Target grid (default: the 204-band Hyplex grid).
    illuminance_lux : float
        Photopic illuminance, lux (> 0). Office lighting ~500 lx, overcast day ~10^4 lx, direct
        sun ~10^5 lx.

    Returns
    -------
    Illuminant
    """
    if not (np.isfinite(illuminance_lux) and illuminance_lux > 0):
        raise ValueError(f"illuminance_lux must be finite and > 0, got {illuminance_lux}")
    grid = hyplex_grid() if wavelengths_nm is None else check_wavelengths(wavelengths_nm)
    spd, source = relative_spectrum(name, grid)
    scale = illuminance_lux / illuminance_of_relative(name)
    return Illuminant(name, grid, spd * scale, float(illuminance_lux), source)


def blend(a: Illuminant, b: Illuminant, fraction: float) -> Illuminant:
    """Mix of two illuminants on the same grid: ``(1 - fraction) a + fraction b`` (irradiance)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    check_same_grid(a.wavelengths_nm, b.wavelengths_nm, "the two illuminants")
    irradiance = (1 - fraction) * a.spectral_irradiance + fraction * b.spectral_irradiance
    lux = (1 - fraction) * a.illuminance_lux + fraction * b.illuminance_lux
    return Illuminant(
        f"{1 - fraction:.2f} {a.name} + {fraction:.2f} {b.name}",
        a.wavelengths_nm.copy(),
        irradiance,
        lux,
        f"mix of ({a.source}) and ({b.source})",
    )
