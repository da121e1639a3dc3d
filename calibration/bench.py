"""Light sources and ground truth for calibrating on the simulated bench.

The bench itself (lamp, monochromator, filter wheel, power meter on one clock) is
:class:`hyplex.devices.SimulatedBench`; this module adds the broadband white reference a
flat-field and a registration need, and the true sweep response a calibration on the bench
must recover (for tests and benchmarks).
"""

from __future__ import annotations

import numpy as np

from hyplex.devices.sim_bench import SimulatedBench, planck_shape


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
        self.spectrum = spectrum or (lambda grid: planck_shape(grid, 3200.0))
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
