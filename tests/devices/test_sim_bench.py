"""The simulated bench's light model: the camera's grid and the power meter see the same watts."""

import numpy as np
import pytest

from hyplex.devices.sim_bench import WIEN_NM_K, SimulatedBench, planck_shape
from hyplex.simulation.grids import bin_edges

# instrument simulator threads: a hang fails here, with stacks
pytestmark = pytest.mark.timeout(120)


def test_planck_shape_is_normalised_at_the_wien_peak_on_any_grid():
    grid_a = np.linspace(400, 1000, 31)
    grid_b = np.array([500.0, 600.0])
    assert planck_shape(grid_a, 3200)[5] == pytest.approx(planck_shape(grid_b, 3200)[0])
    assert planck_shape([WIEN_NM_K / 3200], 3200)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="temperature_k > 0"):
        planck_shape(grid_a, 0.0)


@pytest.mark.parametrize("centre_nm", [600.0, 605.0, 613.7])
@pytest.mark.parametrize("bandwidth_nm", [2.0, 10.0, 19.0])
def test_band_averaged_line_carries_the_meter_power(centre_nm, bandwidth_nm):
    """A line narrower than a bin, on or between grid points, integrates to the meter's watts
    (the old point-sampled line was off by bin width / FWHM on a grid point, 0 between)."""
    bench = SimulatedBench()
    mono = bench.monochromator
    mono.handle(f"SLIT1MICRONS {bandwidth_nm / (1e-3 * mono.dispersion_nm_per_mm)}")
    mono.handle(f"GOWAVE {centre_nm}")
    mono.handle("SHUTTER O")
    bench.clock.sleep(5.0)  # let the grating finish its move
    assert mono.wavelength_nm == pytest.approx(centre_nm)
    assert mono.bandwidth_nm == pytest.approx(bandwidth_nm)
    grid = np.linspace(400, 1000, 61)  # 10 nm bins
    power = bench.spectral_power_W_per_nm(grid)
    camera_watts = float(np.sum(power * np.diff(bin_edges(grid))))
    meter_watts = bench.power_on_meter_W() / bench.meter_fraction
    assert camera_watts == pytest.approx(meter_watts, rel=2e-3)


def test_closed_shutter_is_dark():
    bench = SimulatedBench()
    bench.monochromator.handle("SHUTTER C")
    assert bench.power_on_meter_W() == 0.0
    assert not bench.spectral_power_W_per_nm(np.linspace(400, 1000, 7)).any()
