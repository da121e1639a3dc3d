"""EMVA 1288 photon transfer on frames of the twin's sensor model (known K, noise, PRNU)."""

import numpy as np
import pytest

from hyplex.calibration.emva import (
    channel_map,
    dark_current,
    pair_statistics,
    photon_transfer,
    photons_per_pixel,
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


def test_snr_max_is_the_root_of_the_saturation_capacity_past_saturation(series):
    """The series runs to 1.4x full well: the largest measured SNR is far above the standard's
    SNR_max = sqrt(mu_e.sat) (the old figure), which lands on sqrt(full well)."""
    twin, channels, exposures, bright, dark, photons, _ = series
    result = photon_transfer(bright, dark, exposures, channels, photons)
    brightest = int(np.nanargmax(result.quantum_efficiency))
    true_db = 20 * np.log10(np.sqrt(twin.sensor.full_well_e))
    assert result.snr_max_db[brightest] == pytest.approx(true_db, abs=0.5)
    assert result.snr_max_bits[brightest] == pytest.approx(np.log2(result.snr_max[brightest]))
    assert result.snr_max_measured_db[brightest] > result.snr_max_db[brightest] + 10
    # channels the series never drove to full well report no saturation (not their largest
    # signal, which would pass for a small full well and a low SNR_max)
    eta = result.quantum_efficiency / np.nanmax(result.quantum_efficiency)
    assert np.all(np.isnan(result.snr_max_db[eta < 0.6]))
    assert np.all(np.isfinite(result.snr_max_db[eta > 0.8]))
    assert result.dynamic_range_bits[brightest] == pytest.approx(
        result.dynamic_range_db[brightest] / (20 * np.log10(2))
    )


def test_photon_domain_figures_follow_from_eta(series):
    twin, channels, exposures, bright, dark, photons, _ = series
    result = photon_transfer(bright, dark, exposures, channels, photons, pixel_area_um2=11.9)
    eta, gain = result.quantum_efficiency, result.system_gain_dn_per_e
    assert np.allclose(result.responsivity_dn_per_photon, eta * gain)
    assert np.allclose(result.sensitivity_threshold_photons, result.sensitivity_threshold_e / eta)
    ok = np.isfinite(result.saturation_e)
    assert ok.any()
    assert np.allclose(result.saturation_photons[ok], result.saturation_e[ok] / eta[ok])
    assert np.allclose(result.saturation_photons_per_um2[ok], result.saturation_photons[ok] / 11.9)
    assert np.allclose(
        result.sensitivity_threshold_e_per_um2, result.sensitivity_threshold_e / 11.9
    )
    assert np.isnan(
        photon_transfer(bright, dark, exposures, channels, photons).saturation_e_per_um2
    ).all()


def test_photons_per_pixel_is_energy_over_photon_energy():
    # 1 W/m^2 on 1 um^2 for 1 us is 1e-18 J; a 500 nm photon carries hc/lambda = 3.9729e-19 J
    assert photons_per_pixel(1.0, 1.0, 1.0, 500.0) == pytest.approx(2.5170, rel=1e-4)
    values = photons_per_pixel([1.0, 2.0], 11.9, 100.0, [500.0, 1000.0])
    assert values[1] == pytest.approx(4 * values[0])
    with pytest.raises(ValueError, match="wavelength_nm"):
        photons_per_pixel(1.0, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="irradiance_W_m2"):
        photons_per_pixel(-1.0, 1.0, 1.0, 500.0)


def test_dark_current_by_the_mean_and_the_variance_methods():
    sensor = SensorModel(shape=(60, 64), dark_current_e_per_s=4000.0, read_noise_e=2.0)
    twin = make_twin(shape=(60, 64), sensor=sensor)
    channels = np.zeros(sensor.shape, np.int32)
    exposures = np.linspace(0.05, 1.0, 6) * 1e6  # us
    nothing = np.zeros(sensor.shape)
    dark = [
        [twin.capture(nothing, t, seed=5, frame_index=2 * i + k) for k in range(2)]
        for i, t in enumerate(exposures)
    ]
    by_mean, by_variance, offset = dark_current(dark, exposures, channels, 0.388)
    assert by_mean[0] == pytest.approx(4000.0, rel=0.03)
    assert by_variance[0] == pytest.approx(4000.0, rel=0.1)
    assert offset[0] == pytest.approx(sensor.black_level_dn, abs=3)
    with pytest.raises(ValueError, match=">= 3 distinct"):
        dark_current(dark[:2], exposures[:2], channels, 0.388)


def test_irradiance_series_at_fixed_exposure_matches_the_exposure_series(series):
    twin, channels, exposures, _, _, photons, per_us = series
    t = float(exposures[12])
    factors = exposures / t
    bright, dark = [], []
    for i, f in enumerate(factors):
        frames = [twin.capture(per_us * t * f, t, seed=3, frame_index=2 * i + k) for k in range(2)]
        bright.append(frames)
    dark = [[twin.capture(per_us * 0, t, seed=3, frame_index=1000 + k) for k in range(2)]]
    by_irradiance = photon_transfer(bright, dark, t, channels, photons, series="irradiance")
    sensor = twin.sensor
    assert by_irradiance.series == "irradiance"
    assert by_irradiance.system_gain_pooled_dn_per_e == pytest.approx(
        sensor.system_gain_dn_per_e, rel=0.02
    )
    true_eta = twin.encoder.responses[:, 15] * sensor.quantum_efficiency(twin.wavelengths_nm)[15]
    assert np.allclose(by_irradiance.quantum_efficiency, true_eta, rtol=0.05)
    finite = np.isfinite(by_irradiance.linearity_error_percent)
    assert finite.any() and np.all(by_irradiance.linearity_error_percent[finite] < 1)
    assert np.isnan(by_irradiance.dark_current_mean_e_per_s).all()  # one exposure: no slope
    with pytest.raises(ValueError, match="needs photons_per_pixel"):
        photon_transfer(bright, dark, t, channels, series="irradiance")
    with pytest.raises(ValueError, match="one exposure time"):
        photon_transfer(bright, dark * len(bright), exposures, channels, photons,
                        series="irradiance")  # fmt: skip
    with pytest.raises(ValueError, match="series must be one of"):
        photon_transfer(bright, dark, t, channels, photons, series="gain")


def test_dsnu_in_dn_is_dsnu_in_electrons_times_gain(series):
    twin, channels, _, _, _, _, per_us = series
    sensor = twin.sensor
    t = 0.5 * sensor.full_well_e / per_us.max()
    bright = [twin.capture(per_us * t, t, seed=2, frame_index=i) for i in range(4)]
    dark = [twin.capture(per_us * 0, t, seed=2, frame_index=100 + i) for i in range(4)]
    result = spatial_nonuniformity(dark, bright, channels, sensor.system_gain_dn_per_e)
    assert np.allclose(result.dsnu_dn, result.dsnu_e * sensor.system_gain_dn_per_e)
    assert np.allclose(result.dsnu_dn, sensor.dsnu_e * sensor.system_gain_dn_per_e, rtol=0.15)
    # white fixed pattern: flat spectrograms at the DSNU / PRNU level
    assert np.median(result.dsnu_spectrogram_horizontal_e) == pytest.approx(sensor.dsnu_e, rel=0.2)
    assert np.median(result.prnu_spectrogram_vertical_percent) == pytest.approx(
        sensor.prnu_percent, rel=0.2
    )
    assert result.dsnu_accumulated_percent[0] == pytest.approx(100.0)
