"""Tests for hyplex.optics.geometry shape classes and their use as RCWA patterns."""

from __future__ import annotations

import pytest
import torch

from hyplex.optics import geometry, rcwa


@pytest.mark.parametrize(
    ("shape", "grid"),
    [
        (geometry.Disk(100.0), geometry.disk(100.0, 400.0, grid=(128, 128))),
        (geometry.Rectangle(200.0, 120.0), geometry.rectangle(200.0, 120.0, 400.0, (128, 128))),
        (geometry.Cross(300.0, 100.0), geometry.cross(300.0, 100.0, 400.0, (128, 128))),
    ],
)
def test_shape_renders_like_the_grid_function(shape, grid):
    torch.testing.assert_close(shape.render(400.0), grid)


def test_rcwa_takes_a_shape_as_pattern_without_touching_the_callers_layers():
    layers = [rcwa.Layer(150.0, 3.5, geometry.Disk(100.0))]
    with_shape = rcwa.solve(layers, [600.0, 800.0], 400.0, harmonics=3)
    assert isinstance(layers[0].pattern, geometry.Disk)
    grid = geometry.disk(100.0, 400.0, grid=(128, 128))
    with_grid = rcwa.solve([rcwa.Layer(150.0, 3.5, grid)], [600.0, 800.0], 400.0, harmonics=3)
    torch.testing.assert_close(with_shape.T, with_grid.T)


def test_shape_symmetry_and_fit():
    assert geometry.Disk(100.0).is_c4(400.0)
    assert not geometry.Disk(100.0).is_c4((400.0, 500.0))
    assert not geometry.Rectangle(200.0, 100.0).is_c4(400.0)
    assert geometry.Cross(300.0, 100.0).is_c4(400.0)
    with pytest.raises(ValueError, match="radius_nm"):
        geometry.Disk(250.0).check_fits(400.0)
    with pytest.raises(ValueError, match="fit the cell"):
        geometry.Rectangle(500.0, 100.0).check_fits(400.0)
