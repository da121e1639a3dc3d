"""Spectrograms and defect-pixel histograms (EMVA 1288 R4.0 Linear, sec. 4.3-4.4, 8)."""

import numpy as np
import pytest

from hyplex.calibration.emva_spatial import defect_histograms, high_pass_filtered, spectrograms


def test_a_column_pattern_is_a_peak_of_the_horizontal_spectrogram_only():
    rng = np.random.default_rng(0)
    rows, cols = 128, 160
    white = rng.normal(0.0, 1.0, (rows, cols))
    columns = 3.0 * np.sin(2 * np.pi * np.arange(cols) / 8.0)  # period 8 px along a row
    result = spectrograms(100.0 + white + columns[None, :])
    peak = result.horizontal_frequency[np.argmax(result.horizontal)]
    assert peak == pytest.approx(1 / 8)
    # the vertical spectrogram sees the column pattern only at frequency 0 (column means)
    assert np.median(result.vertical) == pytest.approx(1.0, rel=0.1)
    assert np.median(result.horizontal) == pytest.approx(1.0, rel=0.1)  # white level = sigma
    # Parseval: the mean power over the full spectrum is the spatial variance
    assert result.horizontal_frequency[-1] == pytest.approx(0.5)


def test_temporal_noise_is_removed_and_invalid_pixels_do_not_lower_the_level():
    rng = np.random.default_rng(1)
    image = rng.normal(0.0, 2.0, (96, 96))
    valid = np.ones(image.shape, bool)
    valid[::3] = False
    temporal = np.full(image.shape, 3.0)  # sigma^2 / L of a pretend stack
    plain = spectrograms(image, valid)
    corrected = spectrograms(image, valid, temporal)
    assert np.median(plain.horizontal) == pytest.approx(2.0, rel=0.1)
    assert np.median(corrected.horizontal) == pytest.approx(1.0, rel=0.2)  # sqrt(4 - 3)


def test_accumulated_histogram_finds_the_hot_pixels():
    rng = np.random.default_rng(2)
    image = rng.normal(50.0, 1.0, (100, 100))
    hot = rng.choice(image.size, 20, replace=False)
    image.flat[hot] += 40.0
    result = defect_histograms(image)
    assert result.counts.sum() == image.size
    beyond = result.accumulated_percent[result.accumulated_deviation >= 20][0]
    assert beyond == pytest.approx(100 * 20 / image.size)
    assert result.accumulated_percent[0] == pytest.approx(100.0)
    # the normal model of the same std predicts no pixel out there
    assert result.model_counts[result.bin_edges[:-1] > 20].sum() < 0.01


def test_high_pass_filter_removes_the_shading_but_keeps_a_defect():
    yy, xx = np.mgrid[:64, :64]
    image = 1.0 + 0.01 * xx + 0.005 * yy  # slow shading of the illumination
    image[30, 30] += 0.5
    filtered = high_pass_filtered(image)
    assert abs(filtered[10, 10]) < 1e-9
    assert filtered[30, 30] == pytest.approx(0.5 * 24 / 25, rel=1e-6)
    with_shading = defect_histograms(image, high_pass=False)
    without = defect_histograms(image, high_pass=True)
    assert without.std < 0.1 * with_shading.std


def test_bad_input_names_what_was_expected():
    with pytest.raises(ValueError, match="2-D"):
        spectrograms(np.zeros(10))
    with pytest.raises(ValueError, match="selects no pixel"):
        defect_histograms(np.zeros((4, 4)), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="n_bins"):
        defect_histograms(np.zeros((4, 4)), n_bins=1)
