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
"""

from __future__ import annotations

import numpy as np

from hyplex.devices.clock import Clock, VirtualClock
from hyplex.devices.filter_wheel import FilterWheelSimulator
from hyplex.devices.instrument_sim import attach
from hyplex.devices.monochromator import MonochromatorSimulator
from hyplex.devices.power_meter import PowerMeterSimulator
from hyplex.devices.stage import StageSimulator

H_C_OVER_K_NM_K = 1.438776877e7  # second radiation constant, nm K


def planck_shape(wavelengths_nm, temperature_k: float) -> np.ndarray:
    """Blackbody spectral shape normalised to 1 at its maximum on the grid (unitless)."""
    grid = np.asarray(wavelengths_nm, dtype=np.float64)
    shape = grid**-5 / np.expm1(H_C_OVER_K_NM_K / (grid * temperature_k))
    return shape / shape.max()


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

    def spectral_power_W_per_nm(self, wavelengths_nm) -> np.ndarray:
        """Power leaving the filter wheel, W nm^-1, on the grid (L,)."""
        grid = np.asarray(wavelengths_nm, dtype=np.float64)
        mono = self.monochromator
        if not mono.shutter_open:
            return np.zeros(grid.shape)
        fwhm = max(mono.bandwidth_nm, 1e-6)
        slit = np.clip(1.0 - np.abs(grid - mono.wavelength_nm) / fwhm, 0.0, None)
        lamp = planck_shape(grid, self.lamp_temperature_k)
        return self.peak_power_W_per_nm * lamp * slit * self.filter_wheel.transmission

    def spectral_radiance(self, wavelengths_nm) -> np.ndarray:
        """Uniform radiance at the sphere port, W m^-2 sr^-1 nm^-1, (L,)."""
        return self.spectral_power_W_per_nm(wavelengths_nm) * self.radiance_per_watt

    def power_on_meter_W(self) -> float:
        """Optical power on the reference detector, W (integral of the line on a fine grid)."""
        mono = self.monochromator
        half = max(mono.bandwidth_nm, 1e-3) * 1.5
        grid = np.linspace(mono.wavelength_nm - half, mono.wavelength_nm + half, 301)
        power = np.trapezoid(self.spectral_power_W_per_nm(np.clip(grid, 1.0, None)), grid)
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
