"""EMVA 1288 photon transfer on frames of the twin's sensor model (known K, noise, PRNU)."""

import numpy as np
import pytest

from hyplex.calibration.emva import (
    channel_map,
    pair_statistics,
    photon_transfer,
    spatial_nonuniformity,
)
from hyplex.simulation.sensor import SensorModel

from .conftest import make_twin


@pytest.fixture(scope="module")
def series():
    sensor = SensorModel(shape=(150, 160), read_noise_e=3.0, dsnu_e=2.0, prnu_percent=1.0)
    twin = make_twin(shape=(150, 160), sensor=sensor)
    grid = twin.wavelengths_nm
    line = np.zeros(grid.size)
    line[15] = 1.0  # monochromatic light on one band
    per_us = twin.expected_electrons(line[None, None], grid, 1.0)
    photons_per_us = twin.expected_electrons(line[None, None], grid, 1.0, False)
    channels = channel_map(twin.encoder.layout.slot_map(sensor.shape, 0.15), 9)
    brightest = np.max([per_us[channels == c].mean() for c in range(9)])
    exposures = np.linspace(0.02, 1.4, 24) * sensor.full_well_e / brightest
    bright, dark = [], []
    for i, t in enumerate(exposures):
        frames = [
            twin.capture(per_us * t * (k < 2), t, seed=1, frame_index=4 * i + k) for k in range(4)
        ]
        bright.append(frames[:2])
        dark.append(frames[2:])
    # photons incident on a pixel (before the filter): unpatterned QE-free weights / substrate
    unpatterned = twin.encoder.unpatterned[15]
    photons = photons_per_us[twin.maps[0] == 9].mean() / unpatterned * exposures
    return twin, channels, exposures, bright, dark, photons, per_us


def test_pair_statistics_cancel_the_fixed_pattern():
    rng = np.random.default_rng(0)
    pattern = rng.normal(100, 10, (50, 60))
    a, b = pattern + rng.normal(0, 2, pattern.shape), pattern + rng.normal(0, 2, pattern.shape)
    mean, variance = pair_statistics(a, b, np.zeros(pattern.shape, int))
    assert mean[0] == pytest.approx(100, abs=1)
    assert variance[0] == pytest.approx(4.0, rel=0.05)


def test_photon_transfer_recovers_gain_noise_and_qe(series):
    twin, channels, exposures, bright, dark, photons, _ = series
    sensor = twin.sensor
    result = photon_transfer(bright, dark, exposures, channels, photons)
    assert result.system_gain_pooled_dn_per_e == pytest.approx(
        sensor.system_gain_dn_per_e, rel=0.02
    )
    assert np.allclose(result.system_gain_dn_per_e, sensor.system_gain_dn_per_e, rtol=0.06)
    assert np.allclose(result.temporal_dark_noise_e, sensor.read_noise_e, rtol=0.1)
    true_eta = twin.encoder.responses[:, 15] * sensor.quantum_efficiency(twin.wavelengths_nm)[15]
    assert np.allclose(result.quantum_efficiency, true_eta, rtol=0.05)
    brightest = np.argmax(true_eta)
    assert result.saturation_e[brightest] == pytest.approx(sensor.full_well_e, rel=0.1)
    assert np.all(result.linearity_error_percent[np.isfinite(result.linearity_error_percent)] < 1)
    assert np.nanmax(result.dynamic_range_db) > 60


def test_dsnu_and_prnu_within_tolerance(series):
    twin, channels, _, _, _, _, per_us = series
    sensor = twin.sensor
    t = 0.5 * sensor.full_well_e / per_us.max()
    bright = [twin.capture(per_us * t, t, seed=2, frame_index=i) for i in range(8)]
    dark = [twin.capture(per_us * 0, t, seed=2, frame_index=100 + i) for i in range(8)]
    result = spatial_nonuniformity(dark, bright, channels, sensor.system_gain_dn_per_e)
    assert np.allclose(result.dsnu_e, sensor.dsnu_e, rtol=0.15)
    assert np.allclose(result.prnu_percent, sensor.prnu_percent, rtol=0.15)
    assert result.prnu_pixel_percent == pytest.approx(sensor.prnu_percent, rel=0.15)
    assert result.prnu_row_percent < 0.3 and result.prnu_column_percent < 0.3
    assert result.dsnu_pixel_e == pytest.approx(sensor.dsnu_e, rel=0.15)


def test_photon_transfer_rejects_bad_series(series):
    _, channels, exposures, bright, dark, _, _ = series
    with pytest.raises(ValueError, match="strictly increasing"):
        photon_transfer(bright[:3], dark[:3], exposures[:3][::-1], channels)
    with pytest.raises(ValueError, match="channels map"):
        photon_transfer(bright[:3], dark[:3], exposures[:3], channels[:10])
