"""Fabrication error model: shift, broadening and scale do what they say."""

import numpy as np
import pytest

from hyplex.simulation.fabrication import FabricationError, fabricate, fabricated_encoder
from hyplex.simulation.grids import prototype_grid


def _peak(grid, centre, width=10.0):
    return 0.8 * np.exp(-0.5 * ((grid - centre) / width) ** 2)


def test_pure_shift_moves_the_peak_by_the_drawn_amount():
    grid = np.arange(400.0, 731.0, 1.0)
    design = np.stack([_peak(grid, 500), _peak(grid, 600)])
    made = fabricate(design, grid, FabricationError(shift_nm=10, broadening_nm=0, scale=0), seed=3)
    for row, centre, shift in zip(made.responses, (500.0, 600.0), made.shift_nm, strict=True):
        centroid = np.sum(grid * row) / np.sum(row)
        assert centroid - centre == pytest.approx(shift, abs=0.3)
    assert np.all(np.abs(made.shift_nm) > 0)
    np.testing.assert_allclose(made.scale, 1.0)


def test_broadening_adds_variance_and_keeps_area():
    grid = np.arange(400.0, 731.0, 1.0)
    design = _peak(grid, 560, width=8.0)[None]
    made = fabricate(design, grid, FabricationError(shift_nm=0, broadening_nm=6, scale=0), seed=1)
    row = made.responses[0]
    variance = np.sum((grid - 560) ** 2 * row) / row.sum()
    assert variance == pytest.approx(8.0**2 + made.broadening_nm[0] ** 2, rel=0.03)
    assert row.sum() == pytest.approx(design.sum(), rel=1e-3)
    assert row.max() < design.max()


def test_scale_and_clip_and_determinism():
    grid = prototype_grid()
    design = np.full((9, grid.size), 0.95)
    error = FabricationError(shift_nm=0, broadening_nm=0, scale=0.2)
    first = fabricate(design, grid, error, seed=7)
    again = fabricate(design, grid, error, seed=7)
    np.testing.assert_array_equal(first.responses, again.responses)
    expected = np.clip(0.95 * first.scale, 0, 1)
    np.testing.assert_allclose(first.responses, np.repeat(expected[:, None], grid.size, 1))
    assert first.responses.max() <= 1.0


def test_bad_inputs_are_clear_errors():
    grid = prototype_grid()
    with pytest.raises(ValueError, match="n_filters, L=34"):
        fabricate(np.ones((9, 10)), grid)
    with pytest.raises(ValueError, match=">= 0"):
        fabricate(-np.ones((9, 34)), grid)
    with pytest.raises(ValueError, match="scale"):
        FabricationError(scale=0.7)


def test_fabricated_encoder_keeps_layout():
    from hyplex.simulation.encoder import thin_film_encoder

    encoder = thin_film_encoder(prototype_grid())
    made, errors = fabricated_encoder(encoder, seed=2)
    assert made.layout == encoder.layout
    assert made.responses.shape == encoder.responses.shape
    assert not np.allclose(made.responses, encoder.responses)
    assert errors.shift_nm.shape == (encoder.n_filters,)
