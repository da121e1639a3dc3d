"""``SimulatedBench``: the calibration bench in software, instruments and light together.

    lamp (halogen, ~3200 K) --monochromator (wavelength, slit, shutter)--> filter wheel
        --> integrating sphere --> uniform radiance seen by the SimulatedCamera
                              \\-> a fraction of the power on the power meter (reference)

The instruments are the serial simulators (Cornerstone-, FW102C-, GRBL- and PM100-like) on
one clock; drivers reach them through ``urls`` (``sim://`` ports). The camera calls
:meth:`SimulatedBench.spectral_radiance` for every frame, so a monochromator sweep driven over
"serial" changes the frames, and the power meter reads the same light: a calibration runs end
to end without hardware.

Light model: the monochromator passes P(lambda) = peak_power_W_per_nm x lamp(lambda) x
triangle(lambda - lambda_0, FWHM = bandwidth), W nm^-1; the sphere turns watts into radiance
with ``radiance_per_watt`` (W m^-2 sr^-1 per W); the meter receives ``meter_fraction`` of
the power. Units as in ``hyplex.simulation.radiometry``.

Radiometric consistency (the camera and the meter must see the same watts, or every absolute
calibration made on the bench is biased):

- the lamp is a blackbody normalised once, at its Wien peak, not at the maximum of whatever
  grid it is evaluated on (otherwise the meter's fine grid around the line would always see
  the lamp at its peak while the camera's grid sees the true slope);
- the camera's grid values are band averages over bins (``hyplex.simulation.grids.resample``),
  so the line is averaged over each bin exactly, not point-sampled: a line narrower than a
  bin would otherwise be over-counted by bin width / FWHM on a grid point and missed between
  grid points.
"""

from __future__ import annotations

import numpy as np

from hyplex.devices.clock import Clock, VirtualClock
from hyplex.devices.filter_wheel import FilterWheelSimulator
from hyplex.devices.instrument_sim import attach
from hyplex.devices.monochromator import MonochromatorSimulator
from hyplex.devices.power_meter import PowerMeterSimulator
from hyplex.devices.stage import StageSimulator
from hyplex.simulation.grids import bin_edges, resample

H_C_OVER_K_NM_K = 1.438776877e7  # second radiation constant c2 = hc/k, nm K
WIEN_NM_K = 2.897771955e6  # Wien's displacement constant b, nm K (peak at b / T)


def planck_shape(wavelengths_nm, temperature_k: float) -> np.ndarray:
    """Blackbody spectral radiance shape (Planck's law, lambda^-5 / (exp(c2 / lambda T) - 1)),
    normalised to 1 at the Wien peak b / T, so the same wavelength always gets the same
    value whatever grid it sits on. ``wavelengths_nm`` (L,) in nm; returns (L,), unitless."""
    grid = np.asarray(wavelengths_nm, dtype=np.float64)
    if np.any(grid <= 0) or temperature_k <= 0:
        raise ValueError("planck_shape needs wavelengths_nm > 0 and temperature_k > 0")

    def planck(nm):
        return nm**-5 / np.expm1(H_C_OVER_K_NM_K / (nm * temperature_k))

    return planck(grid) / planck(WIEN_NM_K / temperature_k)


class SimulatedBench:
    """Lamp, monochromator, filter wheel, stage and power meter on one clock.

    Parameters
    ----------
    clock : Clock, optional
        Shared by the instruments and, if passed to it, the camera (default: VirtualClock).
    peak_power_W_per_nm : float
        Monochromator output at the lamp's peak, per nm of bandwidth.
    lamp_temperature_k : float
    radiance_per_watt : float
        Sphere radiance per watt entering it, W m^-2 sr^-1 per W.
    meter_fraction : float
        Share of the power reaching the power meter.
    seed : int
        Power meter noise.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        peak_power_W_per_nm: float = 1e-4,
        lamp_temperature_k: float = 3200.0,
        radiance_per_watt: float = 500.0,
        meter_fraction: float = 0.05,
        seed: int = 0,
    ):
        self.clock = clock or VirtualClock()
        self.peak_power_W_per_nm = float(peak_power_W_per_nm)
        self.lamp_temperature_k = float(lamp_temperature_k)
        self.radiance_per_watt = float(radiance_per_watt)
        self.meter_fraction = float(meter_fraction)
        self.monochromator = MonochromatorSimulator(self.clock)
        self.filter_wheel = FilterWheelSimulator(self.clock)
        self.stage = StageSimulator(self.clock)
        self.power_meter = PowerMeterSimulator(self.clock, self.power_on_meter_W, seed=seed)
        self.urls = {
            sim.kind: attach(sim)
            for sim in (self.monochromator, self.filter_wheel, self.stage, self.power_meter)
        }

    def _line(self, grid: np.ndarray) -> np.ndarray:
        """Power per nm leaving the filter wheel, point values at ``grid`` (nm), W nm^-1."""
        mono = self.monochromator
        fwhm = max(mono.bandwidth_nm, 1e-6)
        slit = np.clip(1.0 - np.abs(grid - mono.wavelength_nm) / fwhm, 0.0, None)
        lamp = planck_shape(np.clip(grid, 1.0, None), self.lamp_temperature_k)
        return self.peak_power_W_per_nm * lamp * slit * self.filter_wheel.transmission

    def spectral_power_W_per_nm(self, wavelengths_nm) -> np.ndarray:
        """Power leaving the filter wheel, W nm^-1, averaged over the bins of the grid (L,)
        (``hyplex.simulation.grids.bin_edges``; a single wavelength is point-sampled)."""
        grid = np.asarray(wavelengths_nm, dtype=np.float64).reshape(-1)
        if not self.monochromator.shutter_open:
            return np.zeros(grid.shape)
        if grid.size < 2:
            return self._line(grid)
        centre = self.monochromator.wavelength_nm
        fwhm = max(self.monochromator.bandwidth_nm, 1e-6)
        edges = bin_edges(grid)
        # the triangle's kinks are knots of the fine grid, so the trapezoid average is exact
        # for the slit and converged for the smooth lamp
        knots = np.linspace(centre - fwhm, centre + fwhm, 41)
        fine = np.union1d(np.linspace(edges[0], edges[-1], 20 * grid.size + 1), knots)
        fine = fine[(fine >= edges[0]) & (fine <= edges[-1])]
        return resample(fine, self._line(fine), grid, extrapolation="zero")

    def spectral_radiance(self, wavelengths_nm) -> np.ndarray:
        """Uniform radiance at the sphere port, W m^-2 sr^-1 nm^-1, (L,)."""
        return self.spectral_power_W_per_nm(wavelengths_nm) * self.radiance_per_watt

    def power_on_meter_W(self) -> float:
        """Optical power on the reference detector, W (integral of the line on a fine grid)."""
        mono = self.monochromator
        if not mono.shutter_open:
            return 0.0
        half = max(mono.bandwidth_nm, 1e-3) * 1.01
        grid = np.linspace(mono.wavelength_nm - half, mono.wavelength_nm + half, 2001)
        power = np.trapezoid(self._line(grid), grid)
        return float(power * self.meter_fraction)

    def state(self) -> dict[str, float]:
        """Instrument state recorded with each frame (the camera's ``extra`` metadata)."""
        return {
            "monochromator_wavelength_nm": self.monochromator.wavelength_nm,
            "monochromator_bandwidth_nm": self.monochromator.bandwidth_nm,
            "shutter_open": float(self.monochromator.shutter_open),
            "filter_position": float(self.filter_wheel.position),
            "stage_x_mm": self.stage.position_mm,
        }

    def state_key(self) -> tuple:
        """Changes whenever the light reaching the camera changes (for render caching)."""
        mono = self.monochromator
        return (
            round(mono.wavelength_nm, 6),
            mono.bandwidth_nm,
            mono.shutter_open,
            self.filter_wheel.transmission,
        )
