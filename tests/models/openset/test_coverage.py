"""The convex-hull check is exact on points constructed inside and outside the hull."""

import numpy as np
import pytest

from hyplex.models.openset.coverage import (
    coverage_map,
    hull_vertices,
    in_hull,
    outside_share,
    select_diverse,
)


def test_exact_on_a_simplex_and_its_neighbourhood():
    rng = np.random.default_rng(0)
    d = 9
    vertices = np.vstack([np.zeros(d), np.eye(d)])  # the unit simplex corner set
    training = np.vstack([vertices, rng.dirichlet(np.ones(d + 1), 30) @ vertices])
    inside = rng.dirichlet(np.ones(d + 1), 50) @ vertices  # convex combinations
    # outside by construction: coordinates sum to 1 + 1e-3 (beyond the face x_1+..+x_d = 1)
    # while every coordinate stays in [0, 1] (inside the bounding box, so the LP decides)
    face = rng.dirichlet(np.ones(d), 50)
    outside = face * (1 + 1e-3)
    assert in_hull(inside, training).all()
    assert not in_hull(outside, training).any()
    assert in_hull(vertices, training).all()  # the vertices themselves
    assert not in_hull(np.full((1, d), -0.01), training).any()  # outside the box
    points = np.vstack([inside, outside])
    assert outside_share(points, training) == pytest.approx(0.5)


def test_vertices_map_and_bad_input():
    square = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5]], float)
    assert sorted(hull_vertices(square).tolist()) == [0, 1, 2, 3]
    grid = np.stack(np.meshgrid(np.linspace(-0.5, 1.5, 8), np.linspace(-0.5, 1.5, 8)), -1)
    outside = coverage_map(grid, square)
    expected = ((grid < 0) | (grid > 1)).any(-1)
    np.testing.assert_array_equal(outside, expected)
    with pytest.raises(ValueError, match="mismatched channel counts"):
        in_hull(np.zeros((2, 3)), square)


def test_diverse_selection_covers_the_targets():
    rng = np.random.default_rng(1)
    pool = rng.uniform(-1, 1, (200, 3))
    targets = rng.uniform(-0.5, 0.5, (40, 3))
    chosen = select_diverse(pool, targets, k=40, seed=0)
    assert len(set(chosen.tolist())) == len(chosen) <= 40
    covered = in_hull(targets, pool[chosen])
    assert covered.mean() > 0.95
    random = rng.choice(200, len(chosen), replace=False)
    assert covered.mean() >= in_hull(targets, pool[random]).mean()
