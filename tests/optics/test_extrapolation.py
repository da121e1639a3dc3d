"""Tests for hyplex.optics.extrapolation: Richardson extrapolation with a fitted order."""

from __future__ import annotations

import numpy as np
import pytest

from hyplex.optics.extrapolation import (
    extrapolate,
    fit_order,
    pointwise_order,
    richardson,
)

LADDERS = [
    np.array([100.0, 200.0, 400.0]),  # geometric, 3 levels
    np.array([80.0, 120.0, 160.0]),  # non-geometric
    np.array([50.0, 100.0, 200.0, 400.0, 800.0]),  # 5 levels: least squares
    np.array([60.0, 80.0, 100.0, 120.0]),
]


def _sequence(resolutions, order, seed=0, shape=(17, 2)):
    """T(r) = T_inf + C r^-p exactly, with T_inf and C random per point."""
    rng = np.random.default_rng(seed)
    T_inf = rng.random(shape)
    C = rng.normal(size=shape) * 30.0
    return T_inf, T_inf + C * resolutions.reshape((-1,) + (1,) * len(shape)) ** (-order)


@pytest.mark.parametrize("order", [1.0, 2.0, 0.7])
@pytest.mark.parametrize("resolutions", LADDERS, ids=lambda r: "-".join(f"{x:.0f}" for x in r))
def test_exact_on_power_law_sequences(resolutions, order):
    T_inf, T = _sequence(resolutions, order)
    result = extrapolate(resolutions, T)
    assert result.order_fitted
    assert abs(result.order - order) < 1e-8
    np.testing.assert_allclose(result.value, T_inf, atol=1e-12)
    # The model holds exactly, so every point has the same order: no spread, no error.
    assert result.error.max() < 1e-10
    # Richardson's estimate of the finest level's error is exact here.
    np.testing.assert_allclose(result.correction, np.abs(T[-1] - T_inf), atol=1e-12)
    np.testing.assert_allclose(result.gci, 1.25 * result.correction)
    assert result.notes == []


def test_order_from_the_geometric_formula():
    r = np.array([100.0, 200.0, 400.0])
    T = np.array([0.50, 0.46, 0.45])  # differences 0.04 then 0.01: p = log2(4) = 2
    assert fit_order(r, T).order == pytest.approx(2.0, abs=1e-10)
    assert pointwise_order(r, T) == pytest.approx(2.0, abs=1e-10)
    assert extrapolate(r, T).value == pytest.approx(0.45 - 0.01 / 3, abs=1e-12)


def test_unsorted_input_is_sorted():
    r = np.array([400.0, 100.0, 200.0])
    T_inf, T = _sequence(np.array([400.0, 100.0, 200.0]), 1.0)
    result = extrapolate(r, T)
    np.testing.assert_array_equal(result.resolutions, [100.0, 200.0, 400.0])
    np.testing.assert_allclose(result.value, T_inf, atol=1e-12)


def test_two_levels_use_the_assumed_order_and_roache_factor_three():
    r = np.array([200.0, 400.0])
    T_inf, T = _sequence(r, 1.0)
    result = extrapolate(r, T, assumed_order=1.0)
    assert not result.order_fitted and result.fit is None
    np.testing.assert_allclose(result.value, T_inf, atol=1e-12)
    np.testing.assert_allclose(result.error, 3.0 * np.abs(T[-1] - T[-2]) / (2.0 - 1.0))
    assert any("two levels" in note for note in result.notes)
    # The wrong assumed order is visibly wrong (the test can fail).
    wrong = extrapolate(r, T, assumed_order=2.0)
    assert np.abs(wrong.value - T_inf).max() > 1e-3


def test_fixed_order_is_used_as_given():
    r = LADDERS[0]
    T_inf, T = _sequence(r, 2.0)
    result = extrapolate(r, T, order=2.0)
    assert result.order == 2.0 and not result.order_fitted
    np.testing.assert_allclose(result.value, T_inf, atol=1e-12)


def test_richardson_two_level_formula():
    assert richardson(1.0, 2.0, 2.0, 1.0) == pytest.approx(0.0)
    assert richardson(1.0, 2.0, 2.0, 2.0) == pytest.approx(1.0 - 1.0 / 3.0)
    with pytest.raises(ValueError, match="ratio"):
        richardson(1.0, 2.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="order"):
        richardson(1.0, 2.0, 2.0, -1.0)


def test_sign_changes_are_robust_and_reported():
    """A first-order ladder plus noise that flips the sign of the differences at some points:
    the global order still comes out near 1, and those points carry the last change as error."""
    r = np.array([100.0, 200.0, 400.0])
    T_inf, T = _sequence(r, 1.0, shape=(40,))
    rng = np.random.default_rng(1)
    T = T + rng.normal(scale=1e-3, size=T.shape) * (rng.random(40) < 0.2)
    T[:, 0] = T_inf[0] + np.array([0.01, -0.005, 0.002])  # oscillatory at point 0
    result = extrapolate(r, T)
    assert 0.8 < result.order < 1.25
    assert np.isnan(pointwise_order(r, T)[0])
    assert result.error[0] == pytest.approx(abs(T[2, 0] - T[1, 0]))
    assert any("non-monotonically" in note for note in result.notes)


def test_order_outside_bounds_is_clamped_with_a_warning():
    r = LADDERS[0]
    _, T = _sequence(r, 6.0)
    with pytest.warns(UserWarning, match="clamped"):
        result = extrapolate(r, T, order_bounds=(0.5, 4.0))
    assert result.order == 4.0 and result.fit.clamped
    assert np.all(result.error >= result.correction)  # not asymptotic: the whole step counts
    assert any("clamped" in note for note in result.notes)
    assert result.fit.raw_order == pytest.approx(6.0, abs=1e-3)  # T_inf + 1e-11: round-off


def test_diverging_ladder_is_flagged():
    r = LADDERS[0]
    T = np.array([[0.1, 0.2], [0.15, 0.1], [0.3, 0.4]])  # differences grow
    with pytest.warns(UserWarning, match="does not converge"):
        fit = fit_order(r, T)
    assert fit.clamped and np.isnan(fit.raw_order) and fit.order == 0.5


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        extrapolate([100.0], [[0.5]])
    with pytest.raises(ValueError, match="shape"):
        extrapolate([100.0, 200.0], np.zeros((3, 4)))
    with pytest.raises(ValueError, match="distinct"):
        extrapolate([100.0, 100.0], np.zeros((2, 4)))
    with pytest.raises(ValueError, match="positive"):
        extrapolate([-100.0, 100.0], np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        extrapolate([100.0, 200.0], [[np.nan], [0.1]])
    with pytest.raises(ValueError, match="at least 3"):
        fit_order([100.0, 200.0], np.zeros((2, 4)))
    with pytest.raises(ValueError, match="order_bounds"):
        fit_order(LADDERS[0], np.random.default_rng(0).random((3, 4)), order_bounds=(2.0, 1.0))


def test_fit_on_the_finest_levels_ignores_a_preasymptotic_coarse_level():
    r = np.array([50.0, 100.0, 200.0, 400.0])
    T_inf, T = _sequence(r, 1.0)
    T[0] += 0.3  # the coarsest level is far off the power law
    all_levels = extrapolate(r, T)
    finest = extrapolate(r, T, fit_levels=3)
    assert abs(finest.order - 1.0) < 1e-8
    np.testing.assert_allclose(finest.value, T_inf, atol=1e-12)
    assert np.abs(all_levels.value - T_inf).max() > 1e-3
    with pytest.raises(ValueError, match="fit_levels"):
        extrapolate(r, T, fit_levels=2)
