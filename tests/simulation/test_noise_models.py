"""Fixed-pattern noise in frames, and the numba / numpy / torch noise paths against each other."""

import numba
import numpy as np
import pytest
import torch

from hyplex.simulation.barcodes import BarcodeExtractor
from hyplex.simulation.camera import CameraTwin
from hyplex.simulation.differentiable import TorchCamera
from hyplex.simulation.sensor import SensorModel

EXPOSURE_US = 1000.0


def frames(twin, electrons, backend, count=16):
    """``count`` raw frames (count, H, W) float64 of the same expected electrons."""
    if backend == "torch":
        batch = torch.from_numpy(electrons.astype(np.float64)).expand(count, -1, -1)
        generator = torch.Generator().manual_seed(11)
        camera = TorchCamera(twin, dtype=torch.float64)
        return np.floor(camera.capture(batch, EXPOSURE_US, generator, "none").numpy() + 0.5)
    return np.stack(
        [
            twin.capture(electrons, EXPOSURE_US, seed=3, frame_index=k, backend=backend)
            for k in range(count)
        ]
    ).astype(np.float64)


@pytest.mark.parametrize("backend", ["numba", "numpy", "torch"])
def test_dsnu_and_prnu_appear_in_frames_in_electrons(camera34, backend):
    """Spatial variance of a 16-frame average: K^2 dsnu^2 in the dark, plus K^2 (prnu mu_e)^2
    when lit; the temporal part left in the average (variance / 16) is added."""
    sensor = SensorModel(shape=(192, 192), dsnu_e=4.0, prnu_percent=1.0, fixed_pattern_seed=9)
    twin = CameraTwin(camera34.encoder, sensor)
    k = sensor.system_gain_dn_per_e
    for level, fixed in ((0.0, 4.0**2), (5000.0, 4.0**2 + (0.01 * 5000.0) ** 2)):
        stack = frames(twin, np.full(sensor.shape, level, np.float32), backend)
        temporal = stack.var(0, ddof=1).mean()
        assert temporal == pytest.approx(sensor.variance_dn2(level, EXPOSURE_US), rel=0.05)
        spatial = stack.mean(0).var()
        assert spatial == pytest.approx(k**2 * fixed + temporal / 16, rel=0.05), level


def test_numba_and_numpy_noise_statistics_agree(camera34):
    """Per level (Poisson below 10 e-, PTRS, the normal approximation above 1000 e-, and
    saturation), the two backends give the same mean and temporal variance."""
    sensor = SensorModel(shape=(96, 224), dark_current_e_per_s=2000.0)
    twin = CameraTwin(camera34.encoder, sensor)
    levels = np.array([0.0, 3.0, 30.0, 300.0, 3000.0, 9000.0, 20000.0])
    electrons = np.repeat(levels, 32)[None, :].repeat(96, 0).astype(np.float32)
    stacks = {backend: frames(twin, electrons, backend, 8) for backend in ("numba", "numpy")}
    for index, level in enumerate(levels):
        block = slice(32 * index, 32 * index + 32)
        means = {b: s[:, :, block].mean() for b, s in stacks.items()}
        variances = {b: s[:, :, block].var(0, ddof=1).mean() for b, s in stacks.items()}
        tolerance = 5 * np.sqrt(2 * variances["numpy"] / stacks["numpy"][:, :, block].size)
        assert means["numba"] == pytest.approx(means["numpy"], abs=tolerance + 0.02), level
        assert variances["numba"] == pytest.approx(variances["numpy"], rel=0.08), level


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_frames_and_barcodes_do_not_depend_on_the_thread_count(camera34, rng):
    electrons = (rng.random(camera34.sensor.shape) * 3000).astype(np.float32)
    extractor = BarcodeExtractor(camera34.encoder.layout, camera34.sensor.shape)
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            raw = camera34.capture(electrons, EXPOSURE_US, seed=8, frame_index=5)
            results.append((raw, extractor(raw)))
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1], equal_nan=True)


def test_default_full_well_just_fills_the_adc():
    sensor = SensorModel(shape=(4, 4))
    top = sensor.black_level_dn + sensor.system_gain_dn_per_e * sensor.full_well_e
    assert sensor.max_dn - 10 < top <= sensor.max_dn


def test_prnu_and_dsnu_maps_come_from_independent_streams():
    both = SensorModel(shape=(50, 60), prnu_percent=1.0, dsnu_e=3.0, fixed_pattern_seed=2)
    dsnu_only = SensorModel(shape=(50, 60), prnu_percent=0.0, dsnu_e=3.0, fixed_pattern_seed=2)
    assert np.array_equal(both.fixed_pattern()[1], dsnu_only.fixed_pattern()[1])
    prnu = both.fixed_pattern()[0]
    assert abs(np.corrcoef(prnu.ravel(), both.fixed_pattern()[1].ravel())[0, 1]) < 0.1
