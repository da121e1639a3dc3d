"""Low-light noise model and the flow as a denoiser."""

import numpy as np
import pytest
import torch

from hyplex.models.data import generate_scenes
from hyplex.models.metrics import psnr
from hyplex.models.restoration.conditional_flow import FlowTraining, train_flow
from hyplex.models.restoration.denoising import (
    DenoiserTraining,
    PlainDenoiser,
    flow_denoiser,
    low_light_cube,
    train_denoiser,
)


def test_low_light_noise_has_the_shot_plus_read_variance():
    cube = torch.full((1, 2, 200, 200), 0.25)
    noisy = low_light_cube(cube, 40.0, 3.0, torch.Generator().manual_seed(0))
    # variance in electrons: R n (shot) + sigma_read^2, divided by n^2
    expected = (0.25 * 40.0 + 9.0) / 40.0**2
    assert float(noisy.mean()) == pytest.approx(0.25, abs=2e-3)
    assert float(noisy.var()) == pytest.approx(expected, rel=0.03)
    with pytest.raises(ValueError, match="white_electrons"):
        low_light_cube(cube, 0.0)


@pytest.mark.slow
def test_flow_and_plain_denoisers_beat_the_noisy_input():
    torch.manual_seed(0)
    grid = np.linspace(400.0, 730.0, 12)
    clean = generate_scenes(grid, 10, seed=0, shape=(24, 24)).tensors()[0]
    test = generate_scenes(grid, 4, seed=1, shape=(24, 24)).tensors()[0]
    generator = torch.Generator().manual_seed(0)
    noisy, noisy_test = (low_light_cube(c, 30.0, 2.0, generator) for c in (clean, test))
    flow = flow_denoiser(12, width=16, hidden=24, n_blocks=2)
    train_flow(flow, noisy, clean, FlowTraining(steps=300, batch_size=8, patch_size=16))
    plain = PlainDenoiser(12, width=24, depth=4)
    train_denoiser(plain, noisy, clean, DenoiserTraining(steps=300))
    with torch.no_grad():
        flow_mean = flow.posterior(noisy_test, 16, torch.Generator().manual_seed(1)).mean
        scores = {
            "noisy": psnr(noisy_test.clamp(0, 1), test),
            "flow": psnr(flow_mean.clamp(0, 1), test),
            "plain": psnr(plain(noisy_test).clamp(0, 1), test),
        }
    assert scores["flow"] > scores["noisy"] + 3.0, scores
    assert scores["plain"] > scores["noisy"] + 3.0, scores
