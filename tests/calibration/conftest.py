"""Shared inputs of the calibration tests: small camera twins with known ground truth.

The encoder is nine Gaussian filters (no thin-film solve: fast), on a sensor of a few hundred
pixels square; the bench is the simulated lamp + monochromator + power meter on a virtual
clock, so a sweep takes no wall time beyond rendering.
"""

import numpy as np
import pytest

from hyplex.simulation.camera import CameraTwin
from hyplex.simulation.encoder import Encoder
from hyplex.simulation.grids import prototype_grid
from hyplex.simulation.layout import MosaicLayout
from hyplex.simulation.sensor import SensorModel


def gaussian_responses(wavelengths_nm, n_filters=9, seed=0):
    """Nine smooth, distinct, broadband transmissions (0.15-0.95) on the grid."""
    rng = np.random.default_rng(seed)
    grid = np.asarray(wavelengths_nm)
    centres = np.linspace(grid[0] - 20, grid[-1] + 20, n_filters)
    rng.shuffle(centres)
    widths = rng.uniform(60.0, 140.0, n_filters)
    floors = rng.uniform(0.1, 0.3, n_filters)
    peaks = np.exp(-0.5 * ((grid[None] - centres[:, None]) / widths[:, None]) ** 2)
    return floors[:, None] + (0.95 - floors[:, None]) * peaks


def make_twin(
    shape=(150, 160),
    pitch_px=5.0,
    rotation_deg=0.0,
    per_block=(4, 4),
    gap=1,
    offset=None,
    metapixels=None,
    sensor=None,
    seed=0,
    grid=None,
):
    grid = prototype_grid() if grid is None else np.asarray(grid, float)
    if offset is None:
        layout = MosaicLayout.fit(
            shape,
            pitch_px=pitch_px,
            rotation_deg=rotation_deg,
            metapixels_per_block=per_block,
            gap_subfilters=gap,
        )
    else:
        layout = MosaicLayout(
            metapixels=metapixels,
            pitch_px=pitch_px,
            rotation_deg=rotation_deg,
            metapixels_per_block=per_block,
            gap_subfilters=gap,
            offset_px=offset,
        )
    encoder = Encoder(grid, gaussian_responses(grid, seed=seed), layout, name="gaussian test")
    sensor = sensor or SensorModel(shape=shape)
    return CameraTwin(encoder, sensor)


def white_flat(twin, fill=0.5, seed=1, n_frames=1):
    """Raw flat frames (mean of ``n_frames``) of a uniform white source at ``fill`` of full
    well in the brightest channel."""
    grid = twin.wavelengths_nm
    electrons = twin.expected_electrons(np.ones((1, 1, grid.size)), grid, 1.0)
    electrons = electrons * (fill * twin.sensor.full_well_e / electrons.max())
    frames = [twin.capture(electrons, 1000.0, seed=seed, frame_index=i) for i in range(n_frames)]
    return np.mean(frames, axis=0)


@pytest.fixture(scope="session")
def small_twin():
    return make_twin()
