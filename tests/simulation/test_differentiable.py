"""The torch path agrees with the numba path in mean and noise, and is differentiable."""

import numpy as np
import pytest
import torch

from hyplex.simulation.differentiable import TorchCamera


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
