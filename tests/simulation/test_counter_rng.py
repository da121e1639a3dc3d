"""Philox-4x32-10 and the sensor's counter-based shot and read noise."""

import numba
import numpy as np
import pytest
from scipy import stats

from hyplex.simulation import kernels
from hyplex.simulation.counter_rng import fill_blocks, philox4x32_10

# Random123's kat_vectors (counter[4] key[2] -> output[4]) for philox4x32 with 10 rounds
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF,) * 4,
        (0xFFFFFFFF,) * 2,
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_philox_matches_the_random123_known_answers(counter, key, expected):
    assert philox4x32_10(counter, key).tolist() == list(expected)


def test_the_vectorised_row_fill_gives_the_scalar_blocks():
    words = np.empty((4, 6), np.uint32)
    k0, k1, frame_low, frame_high = (np.uint64(v) for v in (0xA4093822, 0x299F31D0, 7, 1))
    fill_blocks(words, 1000, np.uint64(0), frame_low, frame_high, k0, k1)
    for j in range(6):
        expected = philox4x32_10((1000 + j, 0, 7, 1), (0xA4093822, 0x299F31D0))
        assert words[:, j].tolist() == expected.tolist()
    with pytest.raises(ValueError, match="0..2"):
        philox4x32_10((0, 0, 0, 2**32), (0, 0))


def counting_settings(exact_below=np.inf, read_noise=0.0, black=0.0):
    """Gain 1, no dark current, no clip: the raw value is the drawn charge (+ read noise)."""
    return np.array([0.0, read_noise, 1e9, 1.0, black, 65535.0, exact_below])


def draw(mean, settings, shape=(400, 500), seed=11, frame=3):
    electrons = np.full(shape, mean, np.float32)
    empty = np.zeros((0, 0), np.float32)
    key = kernels.frame_key(seed, frame)
    return kernels.sensor_frame(electrons, empty, empty, settings, key, True).astype(np.float64)


@pytest.mark.parametrize("mean", [0.4, 3.5, 12.0, 25.0, 400.0])
def test_exact_shot_noise_has_the_poisson_law(mean):
    """Inversion below 10 e-, algorithm PD above: mean, variance and third central moment are
    all mu for Poisson (the normal approximation has a third moment of 0, and a variance off by
    5 % fails), and the distribution function matches scipy's."""
    counts = draw(mean, counting_settings()).ravel()
    n = counts.size
    assert np.all(counts == np.round(counts)) and counts.min() >= 0
    assert counts.mean() == pytest.approx(mean, abs=4 * np.sqrt(mean / n))
    # sample variance: standard error sqrt(2 / n) mu^2 (+ mu / n): 4 sigma
    assert counts.var() == pytest.approx(mean, rel=4 * np.sqrt(2 / n + 1 / (mean * n)))
    third = np.mean((counts - counts.mean()) ** 3)
    assert third == pytest.approx(mean, rel=0.25)
    values = np.arange(counts.max() + 1)
    empirical = np.searchsorted(np.sort(counts), values, side="right") / n
    assert np.abs(empirical - stats.poisson(mean).cdf(values)).max() < 1.63 / np.sqrt(n)


def test_above_the_threshold_shot_noise_is_the_normal_approximation():
    counts = draw(400.0, counting_settings(exact_below=100.0)).ravel()
    assert counts.mean() == pytest.approx(400.0, abs=0.2)
    assert counts.var() == pytest.approx(400.0, rel=0.02)
    # the normal law has no skewness: Poisson's third moment (400) is gone
    assert abs(np.mean((counts - counts.mean()) ** 3)) < 100.0


def test_read_noise_is_gaussian_with_its_sigma():
    values = draw(0.0, counting_settings(read_noise=2.4, black=100.0)).ravel()
    # rounding adds 1/12 DN^2 of quantisation noise
    assert values.mean() == pytest.approx(100.0, abs=0.03)
    assert values.var() == pytest.approx(2.4**2 + 1 / 12, rel=0.02)
    assert abs(stats.skew(values)) < 0.03 and abs(stats.kurtosis(values)) < 0.06


def test_a_frame_is_the_same_bits_at_any_thread_count_and_seed_frame_select_it():
    rng = np.random.default_rng(0)
    # every regime: dark (inversion), PD, the normal approximation above 1000 e-, saturation
    electrons = rng.choice([0.0, 3.0, 40.0, 900.0, 5000.0, 2e4], (90, 130)).astype(np.float32)
    settings = np.array([0.5, 2.4, 10500.0, 0.388, 16.0, 4095.0, 1000.0])
    prnu = (1 + 0.01 * rng.standard_normal((90, 130))).astype(np.float32)
    dsnu = rng.standard_normal((90, 130)).astype(np.float32)

    def frame(seed, index):
        key = kernels.frame_key(seed, index)
        return kernels.sensor_frame(electrons, prnu, dsnu, settings, key, True)

    before = numba.get_num_threads()
    try:
        frames = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            frames.append(frame(5, 2**40 + 1))
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[0], frame(6, 2**40 + 1))
    assert not np.array_equal(frames[0], frame(5, 1))  # the frame index's high word counts
    assert np.array_equal(frame(5, 2**40 + 1), frames[0])


def test_keys_are_checked():
    with pytest.raises(ValueError, match="seed"):
        kernels.frame_key(-1, 0)
    with pytest.raises(ValueError, match="frame_index"):
        kernels.frame_key(0, 2**64)
    electrons = np.ones((4, 5), np.float32)
    empty = np.zeros((0, 0), np.float32)
    with pytest.raises(ValueError, match="frame_key"):
        kernels.sensor_frame(electrons, empty, empty, counting_settings(), np.uint64(7), True)
