"""Tests for hyplex.optics.geometry: shape classes, bounds, differentiable rendering, and their
use as RCWA patterns and FDTD primitives."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from hyplex.optics import cell, geometry, rcwa
from hyplex.optics.fdtd_structure import describe


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


# ----------------------------------------------------------------- parametric shapes

PERIOD = 400.0
PIXEL = PERIOD / 64


def _interior(cls, min_feature=40.0, fraction=0.0):
    """A point inside the feasible box with distinct parameters (an L narrower than its
    extents, an H bar narrower than its legs) and edges off the pixel boundaries."""
    low, high = cls.bounds(PERIOD, min_feature)
    spread = np.array([0.37, 0.61, 0.23, 0.13])[: low.size]
    return low + (spread + fraction) * (high - low) + 0.123


#: area (nm^2) of each family as a function of its parameter tensor
AREAS = {
    "disk": lambda p: math.pi * p[0] ** 2,
    "square": lambda p: p[0] ** 2,
    "ellipse": lambda p: math.pi * p[0] * p[1],
    "rectangle": lambda p: p[0] * p[1],
    "cross": lambda p: 2 * p[0] * p[1] - torch.minimum(p[0], p[1]) ** 2,
    "L": lambda p: (p[0] + p[1] - p[2]) * p[2],
    "H": lambda p: (2 * p[0] + p[1]) * p[3] + 2 * p[0] * (p[2] - p[3]),
}


def test_registry_covers_the_families_and_vectors_round_trip():
    assert set(geometry.SHAPES) == {"disk", "square", "ellipse", "rectangle", "cross", "L", "H"}
    for name, cls in geometry.SHAPES.items():
        assert issubclass(cls, geometry.ParametricShape) and geometry.get_shape(name) is cls
        vector = _interior(cls)
        shape = cls.from_vector(vector)
        np.testing.assert_array_equal(shape.to_vector(), vector)
        assert cls.from_vector(torch.as_tensor(vector)) == shape
        with pytest.raises(ValueError, match="parameters"):
            cls.from_vector(np.append(vector, 1.0))
    with pytest.raises(ValueError, match="unknown shape family 'hexagon'"):
        geometry.get_shape("hexagon")


@pytest.mark.parametrize("name", sorted(geometry.SHAPES))
def test_every_corner_of_the_box_is_a_shape_that_fits(name):
    cls = geometry.SHAPES[name]
    low, high = cls.bounds(PERIOD, 40.0)
    assert low.shape == high.shape == (len(cls.parameter_names),) and (low <= high).all()
    for corner in itertools.product(*zip(low, high, strict=True)):
        shape = cls.from_vector(corner)
        shape.check_fits(PERIOD)
        ex, ey = cls._extent(np.asarray(corner))
        assert ex <= PERIOD - 40.0 + 1e-9 and ey <= PERIOD - 40.0 + 1e-9  # gap to neighbours
    # without a minimum feature the box still excludes the empty shape
    assert (cls.bounds(PERIOD)[0] > 0).all()


@pytest.mark.parametrize("name", sorted(geometry.SHAPES))
def test_render_batch_area_and_its_gradient_match_the_analytic_area(name):
    cls = geometry.SHAPES[name]
    params = torch.tensor(_interior(cls), dtype=torch.float64, requires_grad=True)
    fill = cls.render_batch(params, PERIOD, (64, 64))
    assert fill.shape == (64, 64) and fill.min() >= 0 and fill.max() <= 1
    area = fill.sum() * PIXEL**2
    (gradient,) = torch.autograd.grad(area, params)
    exact = AREAS[name](params)
    (exact_gradient,) = torch.autograd.grad(exact, params)
    tolerance = 2e-3 if name in ("disk", "ellipse") else 1e-9  # boxes are rendered exactly
    assert abs(float(area.detach() / exact.detach()) - 1) < tolerance
    assert torch.isfinite(gradient).all() and (gradient.abs() > 0).all()
    torch.testing.assert_close(gradient, exact_gradient, rtol=10 * tolerance, atol=1e-6)


@pytest.mark.parametrize("name", sorted(geometry.SHAPES))
def test_render_batch_is_batched_and_agrees_with_the_supersampled_render(name):
    cls = geometry.SHAPES[name]
    vectors = np.stack([_interior(cls, fraction=f) for f in (-0.1, 0.0, 0.3)])
    batch = cls.render_batch(torch.as_tensor(vectors).reshape(3, 1, -1), PERIOD, (32, 32))
    assert batch.shape == (3, 1, 32, 32)
    for i, vector in enumerate(vectors):
        single = cls.render_batch(torch.as_tensor(vector), PERIOD, (32, 32))
        torch.testing.assert_close(batch[i, 0], single)
        reference = geometry.ParametricShape.render(cls.from_vector(vector), PERIOD, (32, 32), 16)
        assert (single - reference).abs().max() < 0.08  # curved edges: one-pixel tangent model


def test_gradient_is_finite_at_the_cell_centre_and_on_pixel_boundaries():
    # odd grids put a pixel centre at (0, 0); 100 nm is exactly on a pixel boundary at 64 px
    for cls, value in ((geometry.Disk, [100.0]), (geometry.Ellipse, [100.0, 50.0])):
        params = torch.tensor(value, dtype=torch.float64, requires_grad=True)
        for grid in ((63, 63), (64, 64)):
            (gradient,) = torch.autograd.grad(cls.render_batch(params, PERIOD, grid).sum(), params)
            assert torch.isfinite(gradient).all() and (gradient > 0).all()
    side = torch.tensor([200.0], dtype=torch.float64, requires_grad=True)  # edges on boundaries
    (gradient,) = torch.autograd.grad(geometry.Square.render_batch(side, PERIOD).sum(), side)
    assert float(gradient) * PIXEL**2 == pytest.approx(
        2 * 200.0
    )  # d(side^2)/d(side), no double count


def test_render_batch_gradient_flows_through_rcwa():
    params = torch.tensor([150.0, 60.0], dtype=torch.float64, requires_grad=True)
    pattern = geometry.LShape.render_batch(torch.cat([params, params[1:]]), PERIOD, (24, 24))
    result = rcwa.solve([rcwa.Layer(120.0, 3.5, pattern)], [600.0, 750.0], PERIOD, harmonics=1)
    (gradient,) = torch.autograd.grad(result.unpolarized("T").sum(), params)
    assert torch.isfinite(gradient).all() and (gradient.abs() > 0).all()


def test_infeasible_bounds_and_bad_parameters_get_clear_errors():
    with pytest.raises(ValueError, match="min_feature_nm=250 is infeasible for a Disk"):
        geometry.Disk.bounds(PERIOD, 250.0)
    with pytest.raises(ValueError, match="infeasible for a Square"):
        geometry.Square.bounds(PERIOD, 500.0)  # larger than the period
    with pytest.raises(ValueError, match="below 100 nm"):
        geometry.HShape.bounds(PERIOD, 120.0)  # two legs and a slot need 3 features + a gap
    with pytest.raises(ValueError, match="min_feature_nm must be >= 0"):
        geometry.Cross.bounds(PERIOD, -1.0)
    with pytest.raises(ValueError, match="period_nm"):
        geometry.Cross.bounds(0.0)
    with pytest.raises(ValueError, match=r"params \(\.\.\., 3\)"):
        geometry.LShape.render_batch(torch.ones(2), PERIOD)
    with pytest.raises(ValueError, match=">= 0 nm"):
        geometry.Ellipse.render_batch(torch.tensor([-1.0, 50.0]), PERIOD)
    with pytest.raises(ValueError, match="does not fit the cell"):
        geometry.HShape(150.0, 120.0, 200.0, 50.0).check_fits(PERIOD)
    with pytest.raises(ValueError, match="must be > 0"):
        geometry.Square(0.0).check_fits(PERIOD)


def test_symmetry_flags_and_birefringence():
    l_shape, h_shape = geometry.LShape(250.0, 200.0, 80.0), geometry.HShape(60, 80, 250, 60)
    assert not (l_shape.mirror_x or l_shape.mirror_y or l_shape.is_c4(PERIOD))
    assert h_shape.mirror_x and h_shape.mirror_y and not h_shape.is_c4(PERIOD)
    assert geometry.Square(100.0).is_c4(PERIOD) and not geometry.Square(100.0).is_c4((400, 500))
    assert geometry.Ellipse(80.0, 80.0).is_c4(PERIOD) and not geometry.Ellipse(90, 80).is_c4(PERIOD)
    wl = [600.0, 800.0]
    T = rcwa.solve([rcwa.Layer(150.0, 3.5, l_shape.render(PERIOD, (24, 24)))], wl, PERIOD, 2).T
    assert (T[..., 0] - T[..., 1]).abs().max() > 1e-3  # not C4: TE != TM
    T = rcwa.solve([rcwa.Layer(150.0, 3.5, geometry.Square(180.0))], wl, PERIOD, 2).T
    assert (T[..., 0] - T[..., 1]).abs().max() < 1e-9


@pytest.mark.parametrize("name", ["square", "rectangle", "cross", "L", "H", "disk"])
def test_fdtd_primitives_draw_the_rendered_shape(name):
    shape = geometry.SHAPES[name].from_vector(_interior(geometry.SHAPES[name]))
    x, y = cell.subpixel_coordinates((64, 64), (PERIOD, PERIOD), 4)
    inside = torch.zeros_like(x, dtype=torch.bool)
    for item in shape.primitives():
        cx, cy = item["center"]
        if item["kind"] == "cylinder":
            inside |= (x - cx) ** 2 + (y - cy) ** 2 <= item["radius"] ** 2
        else:
            sx, sy = item["size"]
            inside |= ((x - cx).abs() <= sx / 2) & ((y - cy).abs() <= sy / 2)
    drawn = cell.area_fraction(inside, 4)
    assert (drawn - shape.render(PERIOD, (64, 64))).abs().mean() < 0.01


def test_ellipse_without_fdtd_form_is_refused_clearly():
    assert geometry.Ellipse(80.0, 80.0).primitives()[0]["kind"] == "cylinder"
    layer = rcwa.Layer(100.0, 3.5, geometry.Ellipse(150.0, 80.0))
    with pytest.raises(ValueError, match="no exact FDTD form"):
        describe([layer], np.array([600.0]), (PERIOD, PERIOD), "air", 1.45)


def test_plot_returns_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for shape in (geometry.Disk(100.0), geometry.HShape(60, 80, 250, 60)):
        figure, ax = plt.subplots()
        assert shape.plot(PERIOD, ax=ax) is ax and ax.get_xlabel() == "x (nm)"
        plt.close(figure)
    figure, ax = plt.subplots()
    free = geometry.FreeForm(torch.rand(16, 16, dtype=torch.float64), min_feature_nm=50.0)
    assert free.plot(PERIOD, ax=ax) is ax
    plt.close(figure)


# ----------------------------------------------------------------- free-form density


def test_conic_filter_is_periodic_and_keeps_the_mean():
    density = torch.rand(2, 24, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    filtered = geometry.conic_filter(density, 60.0, PERIOD)
    torch.testing.assert_close(filtered.mean((-2, -1)), density.mean((-2, -1)))
    shifted = geometry.conic_filter(torch.roll(density, (5, -3), (-2, -1)), 60.0, PERIOD)
    torch.testing.assert_close(shifted, torch.roll(filtered, (5, -3), (-2, -1)))
    torch.testing.assert_close(geometry.conic_filter(density, 0.0, PERIOD), density)


def test_projection_maps_the_ends_and_sharpens():
    x = torch.tensor([0.0, 0.3, 0.5, 0.7, 1.0], dtype=torch.float64)
    for beta in (1.0, 8.0, 64.0):
        y = geometry.tanh_projection(x, beta, 0.5)
        torch.testing.assert_close(y[[0, 2, 4]], x[[0, 2, 4]])
    assert (
        geometry.tanh_projection(x, 64.0)[1]
        < 1e-3
        < 1 - 1e-3
        < geometry.tanh_projection(x, 64.0)[3]
    )
    with pytest.raises(ValueError, match="beta"):
        geometry.tanh_projection(x, 0.0)
    with pytest.raises(ValueError, match="eta"):
        geometry.tanh_projection(x, 8.0, 1.5)


def test_freeform_removes_specks_below_the_minimum_feature_and_is_differentiable():
    latent = torch.full((32, 32), -6.0, dtype=torch.float64)
    latent[16, 16] = 6.0  # a one-pixel (12.5 nm) speck
    latent[4:14, 4:14] = 6.0  # a 125 nm square
    latent.requires_grad_(True)
    free = geometry.FreeForm.from_latent(latent, min_feature_nm=50.0, beta=32.0)
    fill = free.fill(PERIOD)
    assert fill[16, 16] < 0.05 and fill[9, 9] > 0.95  # the speck is gone, the square stays
    binary = free.binary(PERIOD)
    assert set(binary.unique().tolist()) <= {0.0, 1.0} and binary[9, 9] == 1 and binary[16, 16] == 0
    (gradient,) = torch.autograd.grad((fill * torch.linspace(0, 1, 32)).sum(), latent)
    assert torch.isfinite(gradient).all() and gradient.abs().max() > 0


def test_freeform_rejects_infeasible_length_scales_and_bad_densities():
    density = torch.full((16, 16), 0.5, dtype=torch.float64)
    with pytest.raises(ValueError, match="min_feature_nm=250 is infeasible"):
        geometry.freeform_fill(density, PERIOD, 250.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        geometry.freeform_fill(density + 1.0, PERIOD, 50.0)
    with pytest.raises(ValueError, match="radius_nm"):
        geometry.conic_filter(density, -5.0, PERIOD)
