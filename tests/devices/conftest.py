"""Shared inputs of the devices tests: a small camera twin and scene (built once), frame
sequences on disk, and the viky GenTL producer."""

import os

import cv2
import numpy as np
import pytest

from hyplex.devices.clock import VirtualClock
from hyplex.devices.sim_camera import SimulatedCamera

SENSOR_SHAPE = (96, 128)


@pytest.fixture(scope="session")
def twin():
    from hyplex.simulation.camera import default_camera
    from hyplex.simulation.grids import prototype_grid

    return default_camera(prototype_grid(), SENSOR_SHAPE, pitch_px=5.5, rotation_deg=1.0)


@pytest.fixture(scope="session")
def scene(twin):
    """The shared scene, with the twin's renderer warmed on it once.

    On a fresh checkout the first frame a simulated camera renders compiles its numba kernels
    (seconds on a loaded 2-core machine; a clean-clone CI run timed out at 5 s waiting for it
    in a streaming test). One snap of a throwaway camera here does it before any test reads a
    stream, whatever order the tests run in; it draws from its own noise stream only."""
    from hyplex.simulation.scenes import make_scene

    scene = make_scene((48, 64), twin.wavelengths_nm, n_objects=3, seed=1)
    with SimulatedCamera(scene, twin, clock=VirtualClock()) as camera:
        camera.snap()
    return scene


@pytest.fixture
def sim_camera(twin, scene):
    """A SimulatedCamera on a virtual clock (nothing sleeps)."""
    return SimulatedCamera(scene, twin, clock=VirtualClock(), frame_rate_hz=30.0)


@pytest.fixture(scope="session")
def png_sequence(tmp_path_factory):
    """12 frames of 16-bit PNG, 40 x 56; frame i has pixel value 100 i + column."""
    folder = tmp_path_factory.mktemp("pngseq")
    for index in range(12):
        image = (100 * index + np.arange(56, dtype=np.uint16))[None, :].repeat(40, 0)
        assert cv2.imwrite(str(folder / f"frame_{index:04d}.png"), image.astype(np.uint16))
    return str(folder / "frame_%04d.png")


@pytest.fixture(scope="session")
def viky():
    from hyplex.devices.genicam_camera import simulator_producer

    path = simulator_producer()
    if path is None or os.name != "posix":
        pytest.skip("the genicam wheel with viky.cti is not installed")
    return path
