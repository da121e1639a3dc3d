"""Master darks, dark current, defect pixels and per-channel flat fields."""

import numpy as np
import pytest

from hyplex.calibration.darkflat import (
    DarkLibrary,
    correct_frame,
    defect_pixels,
    flat_field,
    master_dark,
)

from .conftest import make_twin


@pytest.fixture(scope="module")
def twin():
    return make_twin(shape=(80, 90), pitch_px=4.2)


def _dark(twin, exposure_us, n, seed=0):
    zeros = np.zeros(twin.sensor.shape, np.float32)
    return [twin.capture(zeros, exposure_us, seed=seed, frame_index=i) for i in range(n)]


def test_dark_current_slope_and_library(twin):
    sensor = twin.sensor
    library = DarkLibrary(
        master_dark(_dark(twin, t, 6, seed=i), t) for i, t in enumerate((1e3, 1e6, 3e6))
    )
    current = library.dark_current(0.0)
    expected = sensor.system_gain_dn_per_e * sensor.dark_current_e_per_s
    assert current.mean_slope_dn_per_s == pytest.approx(expected, rel=0.1)
    assert library.dark_for(1e3).shape == sensor.shape
    interpolated = library.dark_for(2e6)  # from the fitted line
    assert interpolated.mean() == pytest.approx(sensor.black_level_dn + 2 * expected, abs=0.3)
    with pytest.raises(KeyError, match="no master dark"):
        library.dark_for(1e3, gain_db=6.0)


def test_flat_field_normalises_within_channels_and_finds_defects(twin):
    grid = twin.wavelengths_nm
    electrons = twin.expected_electrons(np.ones((1, 1, grid.size)), grid, 1.0)
    electrons *= 5000 / electrons.max()
    flats = [twin.capture(electrons, 1000.0, seed=3, frame_index=i) for i in range(16)]
    dark = master_dark(_dark(twin, 1000.0, 16), 1000.0)
    long_dark = dark.mean_dn.copy()
    long_dark[10, 11] += 50.0  # a hot pixel
    flats = [f.astype(np.float64) for f in flats]
    for f in flats:
        f[20, 30] = dark.mean_dn[20, 30]  # a dead pixel
    codes = twin.maps[0]
    flat = flat_field(flats, dark.mean_dn, codes, 9)
    for code in range(10):
        assert np.median(flat.gain[codes == code]) == pytest.approx(1.0, abs=1e-6)
    prnu, _ = twin.fixed_pattern
    bright = codes < 9
    assert np.corrcoef(flat.gain[bright], prnu[bright])[0, 1] > 0.2  # PRNU under shot noise
    defects = defect_pixels(long_dark, flat)
    assert defects.hot[10, 11] and defects.hot.sum() == 1
    assert defects.dead[20, 30] and defects.dead.sum() == 1
    corrected = correct_frame(flats[0], dark.mean_dn, flat, defects)
    assert np.isnan(corrected[20, 30]) and np.isnan(corrected[10, 11])
    within = corrected[codes == 0]
    raw_spread = np.nanstd((flats[0] - dark.mean_dn)[codes == 0])
    assert np.nanstd(within) < raw_spread


def test_inputs_are_validated(twin):
    with pytest.raises(ValueError, match="at least one frame"):
        master_dark([], 1000.0)
    with pytest.raises(ValueError, match="codes"):
        flat_field([np.ones((4, 4))], np.zeros((4, 4)), np.zeros((3, 3), int), 9)
