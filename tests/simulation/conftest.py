"""Shared, session-scoped inputs of the simulation tests (built once: colour-science, numba
and the thin-film encoder take seconds)."""

import numpy as np
import pytest

from hyplex.simulation.camera import default_camera
from hyplex.simulation.grids import hyplex_grid, prototype_grid


@pytest.fixture(scope="session")
def grid204():
    return hyplex_grid()


@pytest.fixture(scope="session")
def grid34():
    return prototype_grid()


@pytest.fixture(scope="session")
def camera34(grid34):
    """Thin-film encoder on a 96 x 128 sensor, 34 bands."""
    return default_camera(grid34, (96, 128), pitch_px=5.5, rotation_deg=1.0)


@pytest.fixture
def rng():
    """A fresh generator per test: a shared one would hand each test draws that depend on
    which tests ran before it (the order is random)."""
    return np.random.default_rng(1234)
