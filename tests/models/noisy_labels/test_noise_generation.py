"""Xia et al.'s instance-dependent noise generator: its noise rate, per-instance flip rates and
flip directions that follow the features through the random projections."""

import numpy as np
import pytest

from hyplex.models.noisy_labels import instance_dependent_label_noise, spectral_label_noise


def _data(n=6000, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    centres = rng.standard_normal((4, 9)) * 2.0
    return centres[labels] + rng.standard_normal((n, 9)), labels


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_measured_noise_rate_matches_the_requested_rate(rate):
    x, y = _data()
    noise = instance_dependent_label_noise(x, y, rate, seed=1)
    assert abs((noise.labels != y).mean() - rate) < 0.02
    # flip rates: the truncated normal around the rate (sigma 0.1) inside [0, 1]
    assert noise.flip_rate.min() >= 0 and noise.flip_rate.max() <= 1
    assert abs(noise.flip_rate.mean() - rate) < 0.01
    assert abs(noise.flip_rate.std() - 0.1) < 0.01
    np.testing.assert_allclose(noise.transition.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(noise.transition[np.arange(len(y)), y], 1 - noise.flip_rate)


def test_flip_probability_depends_on_the_instance():
    """The same class, two instances: different flip rates and different flip targets."""
    x, y = _data()
    noise = instance_dependent_label_noise(x, y, 0.4, seed=2)
    rows = noise.transition[y == 0]
    # per-instance flip rate: spread, not one class-wide number
    assert (1 - rows[:, 0]).std() > 0.05
    # the target among the other classes follows the instance's features (x W_y):
    # within class 0 the most likely wrong class differs between instances
    targets = rows[:, 1:].argmax(1)
    assert np.unique(targets).size >= 2
    # and the realised flips follow the rows: instances whose row favours class c flip to c
    flipped = (noise.labels != y) & (y == 0)
    favoured = noise.transition[flipped, 1:].argmax(1) + 1
    assert (noise.labels[flipped] == favoured).mean() > 0.6
    # a class-conditional (instance-independent) generator would give one row per class
    class_rows = np.unique(np.round(rows, 6), axis=0)
    assert len(class_rows) > 100


def test_generator_is_deterministic_per_seed_and_differs_from_the_nearest_mean_variant():
    x, y = _data(2000)
    a = instance_dependent_label_noise(x, y, 0.4, seed=3).labels
    b = instance_dependent_label_noise(x, y, 0.4, seed=3).labels
    np.testing.assert_array_equal(a, b)
    assert (a != instance_dependent_label_noise(x, y, 0.4, seed=4).labels).any()
    # the nearest-mean variant always flips towards the nearest other class mean; Xia's
    # generator spreads a class's flips over the other classes by the projection
    old = spectral_label_noise(x, y, 0.4, seed=3)
    targets_new = np.unique(a[(a != y) & (y == 0)])
    targets_old = np.unique(old[(old != y) & (y == 0)])
    assert targets_new.size > targets_old.size


def test_generator_rejects_bad_inputs():
    x, y = _data(100)
    with pytest.raises(ValueError, match="rate"):
        instance_dependent_label_noise(x, y, 1.0)
    with pytest.raises(ValueError, match="must agree"):
        instance_dependent_label_noise(x, y[:-1], 0.2)
    with pytest.raises(ValueError, match="two classes"):
        instance_dependent_label_noise(x, np.zeros(100, int), 0.2)
    with pytest.raises(ValueError, match="flip_rate_std"):
        instance_dependent_label_noise(x, y, 0.2, flip_rate_std=0.0)
