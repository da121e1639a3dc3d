"""Acceptance tests of inverse design (hyplex.optics.inverse) and the particle swarm
(hyplex.optics.swarm): recovery of a known design's spectrum, bounds, seeding, errors.

Small and fast on purpose: 6 wavelengths, harmonics M = 1..2, 48 x 48 pixel cells. At these
harmonics the spectra are not converged physics, but they are a fixed, smooth forward model,
which is all an inverse-design test needs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hyplex.optics import geometry, inverse
from hyplex.optics.swarm import particle_swarm

WAVELENGTHS = np.linspace(520.0, 880.0, 6)
SETTINGS = {
    "period_nm": 400.0,
    "thickness_bounds_nm": (80.0, 250.0),
    "min_feature_nm": 40.0,
    "harmonics": 2,
    "grid": (48, 48),
    "progress": False,
}
FAST = inverse.Budget(screen=24, polish=2, polish_evaluations=25)


def _spectrum(family, design, harmonics=2):
    space = inverse.DesignSpace(family, 400.0, (80.0, 250.0), 40.0)
    forward = inverse.RCWASpectrum(
        space, torch.as_tensor(WAVELENGTHS), harmonics=harmonics, grid=(48, 48)
    )
    with torch.no_grad():
        return forward(torch.tensor([design], dtype=torch.float64))[0].numpy(), forward


@pytest.fixture(scope="module")
def disk_result():
    target, _ = _spectrum("disk", [95.0, 170.0])
    return inverse.design(target, WAVELENGTHS, "disk", "rcwa", budget=FAST, **SETTINGS)


def test_gradient_descent_through_rcwa_recovers_a_known_spectrum(disk_result):
    result = disk_result
    assert result.rms_error < 0.02, result.to_dict()
    assert isinstance(result.shape, geometry.Disk) and result.method == "rcwa"
    low, high = inverse.DesignSpace("disk", 400.0, (80.0, 250.0), 40.0).box()
    design = torch.tensor([*result.shape.to_vector(), result.thickness_nm])
    assert ((design >= low) & (design <= high)).all()
    assert result.history[-1] <= result.history[0]
    assert all(b <= a + 1e-15 for a, b in zip(result.history, result.history[1:], strict=False))


class TableSurrogate:
    """TEST STAND-IN for a trained surrogate (hyplex.optics.surrogate): bilinear interpolation
    in a table of 12 x 12 RCWA spectra over a 2-parameter design space; crude between the
    nodes, but differentiable and cheap."""

    def __init__(self, forward, nodes=12):
        self.space, self.wavelengths_nm = forward.space, WAVELENGTHS
        axis = torch.linspace(0.0, 1.0, nodes, dtype=torch.float64)
        grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1)
        with torch.no_grad():
            self.table = forward(self.space.from_unit(grid))  # (nodes, nodes, L)

    def __call__(self, params):
        position = self.space.to_unit(params).clamp(0, 1) * (self.table.shape[0] - 1)
        corner = position.floor().clamp(max=self.table.shape[0] - 2).long()
        weight = (position - corner).unsqueeze(-1)
        (i, j), (wi, wj) = corner.unbind(-1), weight.unbind(-2)
        row0 = self.table[i, j] * (1 - wj) + self.table[i, j + 1] * wj
        row1 = self.table[i + 1, j] * (1 - wj) + self.table[i + 1, j + 1] * wj
        return row0 * (1 - wi) + row1 * wi


def test_surrogate_then_rcwa_recovers_a_square_spectrum():
    target, forward = _spectrum("square", [170.0, 140.0])
    budget = inverse.Budget(surrogate_screen=512, verify=4, polish=2)
    result = inverse.design(
        target,
        WAVELENGTHS,
        "square",
        "surrogate",
        surrogate=TableSurrogate(forward),
        budget=budget,
        **SETTINGS,
    )
    assert result.rms_error < 0.02, result.to_dict()
    assert isinstance(result.shape, geometry.Square)
    assert result.rcwa_evaluations <= 4 + 2 * 25 + 1


def test_particle_swarm_baseline_is_seeded_and_respects_the_bounds():
    target, _ = _spectrum("rectangle", [180.0, 120.0, 150.0])
    budget = inverse.Budget(swarm_size=8, swarm_iterations=4)
    settings = {**SETTINGS, "harmonics": 1, "min_feature_nm": 60.0}
    runs = [
        inverse.design(target, WAVELENGTHS, "rectangle", "swarm", budget=budget, **settings)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].achieved_T, runs[1].achieved_T)
    assert runs[0].rcwa_evaluations == 8 * 4 + 1
    low, high = geometry.Rectangle.bounds(400.0, 60.0)
    assert (runs[0].shape.to_vector() >= low).all() and (runs[0].shape.to_vector() <= high).all()
    assert 80.0 <= runs[0].thickness_nm <= 250.0
    assert runs[0].history[-1] <= runs[0].history[0]


def test_particle_swarm_finds_the_minimum_of_a_shifted_quadratic():
    centre = torch.tensor([0.2, 0.7, 0.45], dtype=torch.float64)
    calls = []

    def objective(x):
        calls.append(x.shape)
        return ((x - centre) ** 2).sum(-1)

    result = particle_swarm(objective, 3, swarm_size=20, iterations=60, seed=3)
    assert result.best_value < 1e-5 and torch.allclose(result.best_position, centre, atol=5e-3)
    assert calls == [(20, 3)] * 60 and result.evaluations == 1200
    with pytest.raises(ValueError, match="one value per particle"):
        particle_swarm(lambda x: x.sum(), 2, swarm_size=4, iterations=2)


def test_result_serialises_and_plots(disk_result):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    record = json.loads(json.dumps(disk_result.to_dict()))
    assert record["family"] == "disk" and set(record["parameters_nm"]) == {"radius_nm"}
    assert len(record["achieved_T"]) == len(WAVELENGTHS) and record["harmonics"] == 2
    figure = disk_result.plot()
    assert len(figure.axes) == 2
    plt.close(figure)


def test_bad_input_gets_clear_errors():
    target = np.full(WAVELENGTHS.size, 0.5)
    with pytest.raises(ValueError, match="target_T has 6 values but wavelengths_nm has 5"):
        inverse.design(target, WAVELENGTHS[:5])
    with pytest.raises(ValueError, match="min_feature_nm=300 is infeasible for a Disk"):
        inverse.design(target, WAVELENGTHS, min_feature_nm=300.0)
    with pytest.raises(ValueError, match="min_feature_nm=450 is infeasible for a Cross"):
        inverse.design(target, WAVELENGTHS, "cross", min_feature_nm=450.0)  # above the period
    with pytest.raises(ValueError, match="thickness_bounds_nm"):
        inverse.design(target, WAVELENGTHS, thickness_bounds_nm=(300.0, 100.0))
    with pytest.raises(ValueError, match="unknown shape family"):
        inverse.design(target, WAVELENGTHS, "star")
    with pytest.raises(ValueError, match="method must be one of"):
        inverse.design(target, WAVELENGTHS, method="annealing")
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        inverse.design(target + 1.0, WAVELENGTHS)
    with pytest.raises(ValueError, match="needs surrogate"):
        inverse.design(target, WAVELENGTHS, method="surrogate")

    class OtherGrid:
        wavelengths_nm = np.linspace(400.0, 1000.0, 6)

        def __call__(self, params):
            return torch.zeros(*params.shape[:-1], 6)

    with pytest.raises(ValueError, match="wavelength grid .* does not match the target's"):
        inverse.design(target, WAVELENGTHS, method="surrogate", surrogate=OtherGrid())
    with pytest.raises(ValueError, match="surrogate returns 3 values per design"):
        inverse.design(
            target,
            WAVELENGTHS,
            method="surrogate",
            surrogate=lambda params: torch.zeros(*params.shape[:-1], 3),
        )
