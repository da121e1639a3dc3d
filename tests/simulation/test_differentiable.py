"""The torch path agrees with the numba path in mean and noise, and is differentiable."""

import numpy as np
import pytest
import torch

from hyplex.simulation.camera import CameraTwin
from hyplex.simulation.differentiable import TorchCamera
from hyplex.simulation.encoder import Encoder
from hyplex.simulation.layout import MosaicLayout
from hyplex.simulation.sensor import SensorModel


def test_torch_mean_matches_numba(camera34, grid34, rng):
    cube = (rng.random((48, 64, 34)) * 0.02).astype(np.float32)
    numba_electrons = camera34.expected_electrons(cube, grid34, 2000.0)
    torch_camera = TorchCamera(camera34)
    radiance = torch.from_numpy(cube).permute(2, 0, 1).unsqueeze(0)
    torch_electrons = torch_camera.expected_electrons(radiance, exposure_us=2000.0)[0]
    assert np.allclose(torch_electrons.numpy(), numba_electrons, rtol=1e-4)


@pytest.mark.parametrize("level", [30.0, 600.0, 5000.0])
def test_torch_noise_statistics_match_numba(camera34, level):
    torch_camera = TorchCamera(camera34, dtype=torch.float64)
    electrons = np.full(camera34.sensor.shape, level, np.float32)
    generator = torch.Generator().manual_seed(3)
    frames = torch_camera.capture(
        torch.from_numpy(electrons.astype(np.float64)).expand(8, -1, -1), 3000.0, generator
    ).numpy()
    raw = np.stack([camera34.capture(electrons, 3000.0, seed=5, frame_index=i) for i in range(8)])
    raw = raw.astype(np.float64)
    assert frames.mean() == pytest.approx(raw.mean(), abs=0.05 + 1e-4 * raw.mean())
    # temporal variance per pixel, averaged (removes the shared fixed pattern)
    assert frames.var(0, ddof=1).mean() == pytest.approx(raw.var(0, ddof=1).mean(), rel=0.03)
    predicted = camera34.sensor.variance_dn2(level, 3000.0)
    assert raw.var(0, ddof=1).mean() == pytest.approx(predicted, rel=0.05)


def test_gradients_reach_the_responses(camera34, grid34, rng):
    torch_camera = TorchCamera(camera34, dtype=torch.float64)
    responses = torch.tensor(camera34.encoder.responses, requires_grad=True)
    radiance = torch.from_numpy(rng.random((2, 34, 24, 32)) * 0.01)
    values = torch_camera.render(
        radiance,
        responses,
        1000.0,
        torch.Generator().manual_seed(0),
        quantization="straight_through",
    )
    values.mean().backward()
    assert torch.isfinite(responses.grad).all() and responses.grad.abs().sum() > 0
    # expected electrons are linear in the responses: check one derivative exactly
    probe = responses.detach().clone().requires_grad_(True)
    torch_camera.expected_electrons(radiance, probe, 1000.0).sum().backward()
    step = torch.zeros_like(probe)
    step[4, 10] = 1e-3
    plus = torch_camera.expected_electrons(radiance, probe.detach() + step, 1000.0).sum()
    base = torch_camera.expected_electrons(radiance, probe.detach(), 1000.0).sum()
    assert ((plus - base) / 1e-3).item() == pytest.approx(probe.grad[4, 10].item(), rel=1e-6)


def test_default_responses_follow_the_radiance_dtype_and_device(camera34, rng):
    torch_camera = TorchCamera(camera34)  # float32 constants on the CPU
    radiance = torch.from_numpy(rng.random((1, 34, 24, 32)) * 0.01)  # float64
    electrons = torch_camera.expected_electrons(radiance, exposure_us=500.0)
    assert electrons.dtype == torch.float64 and torch.isfinite(electrons).all()
    # radiance on another device than the constants (meta: shapes only, no data)
    meta = torch.empty((2, 34, 24, 32), device="meta", dtype=torch.float64)
    out = torch_camera.expected_electrons(meta, exposure_us=500.0)
    assert out.device.type == "meta" and out.shape == (2, *camera34.sensor.shape)


def test_gradients_are_finite_without_any_noise_variance(camera34):
    """A dark pixel with no read noise and no dark current has zero shot-noise variance."""
    sensor = SensorModel(
        shape=camera34.sensor.shape, read_noise_e=0.0, dark_current_e_per_s=0.0, dsnu_e=0.0
    )
    torch_camera = TorchCamera(CameraTwin(camera34.encoder, sensor), dtype=torch.float64)
    responses = torch.tensor(camera34.encoder.responses, requires_grad=True)
    radiance = torch.zeros((1, 34, 24, 32), dtype=torch.float64)
    radiance[..., :12, :] = 0.01  # half the scene lit, half dark
    values = torch_camera.render(
        radiance, responses, 1000.0, torch.Generator().manual_seed(0), quantization="none"
    )
    values.sum().backward()
    assert torch.isfinite(responses.grad).all() and responses.grad.abs().sum() > 0


def test_saturated_pixels_keep_the_read_noise(camera34):
    """Only the collected charge saturates: read noise is added after the full-well clip."""
    sensor = SensorModel(
        shape=camera34.sensor.shape, full_well_e=5000.0, read_noise_e=4.0, prnu_percent=0.0
    )
    twin = CameraTwin(camera34.encoder, sensor)
    electrons = np.full(sensor.shape, 3 * sensor.full_well_e, np.float32)
    predicted = sensor.system_gain_dn_per_e**2 * sensor.read_noise_e**2 + 1 / 12
    for backend in ("numba", "numpy"):
        a, b = (
            twin.capture(electrons, 1000.0, seed=2, frame_index=k, backend=backend).astype(float)
            for k in (0, 1)
        )
        assert 0.5 * np.var(a - b) == pytest.approx(predicted, rel=0.1), backend
    frames = TorchCamera(twin, dtype=torch.float64).capture(
        torch.from_numpy(electrons.astype(np.float64)).expand(2, -1, -1),
        1000.0,
        torch.Generator().manual_seed(1),
    )
    assert 0.5 * (frames[0] - frames[1]).var().item() == pytest.approx(predicted, rel=0.1)


def test_torch_mean_matches_numba_with_crosstalk(grid34, rng):
    layout = MosaicLayout.fit((60, 80), pitch_px=6.3, rotation_deg=0.7, crosstalk_length_px=1.5)
    twin = CameraTwin(Encoder(grid34, rng.random((9, 34)), layout), SensorModel(shape=(60, 80)))
    assert twin.maps[2].size and twin.maps[2].max() > 0.4  # crosstalk is on
    cube = (rng.random((30, 40, 34)) * 0.02).astype(np.float32)
    numba_electrons = twin.expected_electrons(cube, grid34, 1500.0)
    radiance = torch.from_numpy(cube.astype(np.float64)).permute(2, 0, 1).unsqueeze(0)
    torch_electrons = TorchCamera(twin, dtype=torch.float64).expected_electrons(
        radiance, exposure_us=1500.0
    )[0]
    assert np.allclose(torch_electrons.numpy(), numba_electrons, rtol=1e-5)
