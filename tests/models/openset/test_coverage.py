"""The convex-hull check is exact on points constructed inside and outside the hull."""

import numpy as np
import pytest

from hyplex.models.openset.coverage import (
    category_novelty,
    coverage_map,
    hull_vertices,
    in_hull,
    nearest_shape_distance,
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


def _bumps(rng, centre_nm, count, grid):
    """``count`` Gaussian reflectance bumps centred near ``centre_nm`` (60 nm wide)."""
    centres = centre_nm + rng.normal(0, 3, (count, 1))
    return 0.1 + 0.5 * np.exp(-0.5 * ((grid[None] - centres) / 60.0) ** 2)


def test_category_novelty_flags_a_test_category_that_training_already_holds():
    """A held-out category whose spectra (any brightness) duplicate an auxiliary category is
    seen in effect; one whose spectral shape no training spectrum has is novel."""
    rng = np.random.default_rng(0)
    grid = np.linspace(400, 1000, 61)
    known = {"a": _bumps(rng, 500, 20, grid), "b": _bumps(rng, 700, 20, grid)}
    auxiliary = _bumps(rng, 900, 20, grid)
    training = np.vstack([known["a"], known["b"], auxiliary])
    labels = ["a"] * 20 + ["b"] * 20 + ["aux"] * 20
    duplicate = 0.3 * auxiliary[:10]  # same shapes, darker: the shape distance ignores it
    np.testing.assert_allclose(nearest_shape_distance(duplicate, training), 0.0, atol=1e-12)
    novel = _bumps(rng, 600, 10, grid) * np.linspace(1.5, 0.5, 61)  # a shape nowhere in training
    report = category_novelty({"dup": duplicate, "new": novel}, training, labels, ("a", "b"))
    assert not report["dup"]["novel"] and report["dup"]["seen_share"] == 1.0
    assert report["new"]["novel"] and report["new"]["seen_share"] < 0.5
    assert report["new"]["median_distance"] > report["new"]["reference"] > 0
    with pytest.raises(ValueError, match="one label per training spectrum"):
        category_novelty({"new": novel}, training, labels[:-1])
    with pytest.raises(ValueError, match="bands"):
        nearest_shape_distance(novel[:, :30], training)
