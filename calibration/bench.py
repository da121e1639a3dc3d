"""``CalibrationBench``: the simulated bench with a radiometrically consistent light model.

``hyplex.devices.SimulatedBench`` (as of this writing) has two inconsistencies that bias any
absolute calibration made on it:

1. the lamp shape is normalised to 1 at its maximum *on the grid it is evaluated on*, so the
   power meter (a fine grid around the line) sees the lamp at its peak at every wavelength,
   while the camera (the twin's grid) sees the true blackbody slope;
2. the slit triangle is point-sampled at the twin's grid points, while the twin treats grid
   values as band averages over bins (``grids.resample``): a line narrower than a bin is
   over-counted by bin width / FWHM on a grid point and missed between grid points.

This subclass normalises the lamp once (at the Wien peak) and band-averages the line over the
bins of the requested grid (exact for the piecewise-linear triangle), so the camera and the
meter see the same watts. Everything else (instruments, ``sim://`` URLs, state) is inherited.
"""

from __future__ import annotations

import numpy as np

from hyplex.devices.sim_bench import SimulatedBench, planck_shape
from hyplex.simulation.grids import bin_edges, resample

WIEN_NM_K = 2.897771955e6  # Wien's displacement constant, nm K


class CalibrationBench(SimulatedBench):
    """``SimulatedBench`` with an absolute lamp and band-averaged lines (see the module doc)."""

    def lamp_shape(self, wavelengths_nm) -> np.ndarray:
        """Blackbody shape normalised to 1 at the Wien peak (the same at every wavelength)."""
        grid = np.asarray(wavelengths_nm, dtype=np.float64)
        peak = WIEN_NM_K / self.lamp_temperature_k
        shape = planck_shape(np.append(grid, peak), self.lamp_temperature_k)
        return shape[:-1] / shape[-1]

    def _line(self, grid):
        mono = self.monochromator
        fwhm = max(mono.bandwidth_nm, 1e-6)
        slit = np.clip(1.0 - np.abs(grid - mono.wavelength_nm) / fwhm, 0.0, None)
        return (
            self.peak_power_W_per_nm * self.lamp_shape(grid) * slit * self.filter_wheel.transmission
        )

    def spectral_power_W_per_nm(self, wavelengths_nm) -> np.ndarray:
        """Band-averaged power over the bins of the grid, W nm^-1, (L,)."""
        grid = np.asarray(wavelengths_nm, dtype=np.float64)
        if not self.monochromator.shutter_open:
            return np.zeros(grid.shape)
        centre, fwhm = self.monochromator.wavelength_nm, max(self.monochromator.bandwidth_nm, 1e-6)
        edges = bin_edges(grid) if grid.size > 1 else np.array([grid[0] - 0.5, grid[0] + 0.5])
        knots = np.linspace(centre - fwhm, centre + fwhm, 41)
        fine = np.union1d(np.linspace(edges[0], edges[-1], 20 * grid.size + 1), knots)
        fine = fine[(fine >= edges[0]) & (fine <= edges[-1])]
        if grid.size < 2:
            return self._line(grid)
        return resample(fine, self._line(fine), grid, extrapolation="zero")

    def power_on_meter_W(self) -> float:
        mono = self.monochromator
        if not mono.shutter_open:
            return 0.0
        half = max(mono.bandwidth_nm, 1e-3) * 1.01
        grid = np.linspace(mono.wavelength_nm - half, mono.wavelength_nm + half, 2001)
        power = np.trapezoid(self._line(np.clip(grid, 1.0, None)), grid)
        return float(power * self.meter_fraction)


class WhiteReference:
    """A uniform broadband source (lamp straight into the sphere, or a white tile): a
    ``SimulatedCamera`` source with radiance ``level x spectrum`` W m^-2 sr^-1 nm^-1.

    Parameters
    ----------
    spectrum : callable(grid) -> (L,), optional
        Relative spectrum (default: a 3200 K blackbody normalised at its peak).
    level : float
        Radiance scale, W m^-2 sr^-1 nm^-1.
    """

    def __init__(self, spectrum=None, level: float = 0.05, name: str = "white"):
        self.spectrum = spectrum or (
            lambda grid: planck_shape(np.append(grid, WIEN_NM_K / 3200.0), 3200.0)[:-1]
        )
        self.level, self.name = float(level), name

    def spectral_radiance(self, wavelengths_nm) -> np.ndarray:
        grid = np.asarray(wavelengths_nm, dtype=np.float64)
        return self.level * np.asarray(self.spectrum(grid), dtype=np.float64)

    def state(self) -> dict:
        return {"white_reference_level": self.level}

    def state_key(self) -> tuple:
        return ("white", self.name, self.level)


def true_response(twin, bench: SimulatedBench, gain_db: float = 0.0) -> np.ndarray:
    """Ground truth of a sweep on ``bench``: DN s^-1 per W of reference power per channel,
    (n_filters, L) = K rpw / meter_fraction x w_f(1 s) / q (electrons per s per unit radiance
    per nm, ``CameraTwin.weights``)."""
    from hyplex.simulation.grids import quadrature_weights

    grid = twin.wavelengths_nm
    gain = twin.sensor.system_gain_dn_per_e * 10.0 ** (gain_db / 20.0)
    weights = twin.weights(1e6)[: twin.encoder.n_filters] / quadrature_weights(grid)
    return gain * bench.radiance_per_watt / bench.meter_fraction * weights
