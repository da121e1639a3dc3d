"""The residual design of the conditional flow (its estimator is trained exactly like the plain
MST-class decoder; with the flow at the identity its mean is that estimate) and the split
conformal calibration of its per-band scale."""

import math

import numpy as np
import pytest
import torch

from hyplex.models.reconstruction import SpectralTransformer
from hyplex.models.restoration.conditional_flow import (
    ConditionalFlowDecoder,
    FlowTraining,
    train_flow,
)
from hyplex.models.restoration.posterior_calibration import (
    calibrate_band_scale,
    interval_coverage,
    interval_scores,
)

from .flow_checks import autograd_slogdet

SMALL_MEAN = {"mean_width": 8, "mean_blocks": 1, "mean_stages": 1}


def _toy(count, seed):
    """cube = A y + sigma(y) eps, sigma growing with the first channel (3 -> 4 channels)."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.rand(count, 3, 8, 8, generator=generator)
    mixing = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, -0.5], [0.3, 0.0, 1.0], [0.5, 0.5, 0.5]])
    noise = torch.randn(count, 4, 8, 8, generator=generator)
    return y, torch.einsum("lc,bchw->blhw", mixing, y) + (0.02 + 0.2 * y[:, :1]) * noise


def test_interval_scores_match_a_hand_computation():
    residual = torch.tensor([0.2, -0.3, 0.0, 0.5, -0.2])
    lower = torch.tensor([-0.1, -0.1, -0.1, 0.1, 0.05])
    upper = torch.tensor([0.4, 0.4, 0.4, -0.2, 0.3])
    # 0.2 / 0.4; -0.3 / -0.1; 0 is inside at any scale; an interval below mu never holds a
    # positive residual, one above it never a negative one
    expected = torch.tensor([0.5, 3.0, 0.0, math.inf, math.inf])
    assert torch.allclose(interval_scores(residual, lower, upper), expected)
    with pytest.raises(ValueError, match="one shape"):
        interval_scores(residual, lower[:2], upper)


def test_the_estimator_trains_exactly_like_the_plain_mst_decoder():
    """mu gets the L1 steps the MST decoder gets (same seed, patches, loss, Adam): the flow's
    NLL and its gradient clipping must not reach it."""
    y, x = _toy(6, 0)
    settings = FlowTraining(steps=15, batch_size=4, patch_size=8, seed=3)
    torch.manual_seed(0)
    mst = SpectralTransformer(3, 4, width=8, n_blocks=1, n_stages=1)
    optimizer = torch.optim.Adam(mst.parameters(), lr=settings.learning_rate)
    rng = np.random.default_rng(settings.seed)
    for _ in range(settings.steps):  # benchmarks/learning_flow_translation.train_regressor
        index = rng.integers(0, 6, 4)
        rng.integers(0, 1, 4), rng.integers(0, 1, 4)  # top, left: 0 (patch = the 8x8 map)
        loss = (mst(y[index]) - x[index]).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.manual_seed(0)
    flow = ConditionalFlowDecoder(3, 4, width=8, hidden=8, n_blocks=1, **SMALL_MEAN)
    history = train_flow(flow, y, x, settings)
    assert history[-1]["nll"] != history[0]["nll"]  # the flow itself did train
    with torch.no_grad():
        estimate = flow.estimate(flow.condition(y))
        assert (estimate - mst.eval()(y)).abs().max() < 1e-6


def test_with_the_flow_at_identity_the_mode_and_mean_are_the_estimate():
    torch.manual_seed(0)
    flow = ConditionalFlowDecoder(3, 4, width=8, hidden=8, n_blocks=2, **SMALL_MEAN).eval()
    y, _ = _toy(2, 1)
    flow.band_scale.fill_(0.05)
    with torch.no_grad():
        estimate = flow.estimate(flow.condition(y))
        assert torch.equal(flow(y), estimate)
        samples = flow.sample(y, 400, torch.Generator().manual_seed(2))
    # samples are estimate + 0.05 N(0, I): the mean is within 4 standard errors of the estimate
    assert (samples.mean(0) - estimate).abs().max() < 4 * 0.05 / 20 * 1.2
    assert float(samples.std(0).mean()) == pytest.approx(0.05, rel=0.05)


def test_the_band_scale_is_an_exact_flow_layer():
    torch.manual_seed(0)
    model = ConditionalFlowDecoder(3, 5, width=4, hidden=6, n_blocks=1, **SMALL_MEAN).double()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in model.flow_parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator,
                                              dtype=parameter.dtype))  # fmt: skip
        model.band_scale.copy_(torch.tensor([0.1, 0.5, 2.0, 1.0, 0.03]))
    barcodes = torch.rand(1, 3, 2, 3, generator=generator, dtype=torch.float64)
    cube = torch.rand(1, 5, 2, 3, generator=generator, dtype=torch.float64)
    condition = model.condition(barcodes).detach()
    _, expected = autograd_slogdet(model, cube, condition)
    z, logdet = model.to_latent(cube, condition)
    assert float(logdet[0].detach()) == pytest.approx(float(expected), abs=1e-8)
    assert (model.from_latent(z, condition) - cube).abs().max() < 1e-10


def test_calibration_hits_its_rank_on_the_calibration_split():
    """The scale is the ceil((n + 1) level)-th smallest score, so with the same latents the
    calibration split's own coverage per band is k / n (k - 1 / n at a float tie)."""
    torch.manual_seed(0)
    flow = ConditionalFlowDecoder(3, 4, width=8, hidden=8, n_blocks=1, **SMALL_MEAN).eval()
    y, x = _toy(3, 4)
    calibrate_band_scale(flow, y, x, 0.8, 16, torch.Generator().manual_seed(5), batch_size=3)
    summary = flow.posterior(y, 16, torch.Generator().manual_seed(5), level=0.8)
    count = 3 * 8 * 8
    rank = math.ceil((count + 1) * 0.8)
    per_band = np.array(interval_coverage(x, summary.lower, summary.upper)["per_band"])
    assert np.all(per_band <= rank / count + 1e-6)  # float32 means
    assert np.all(per_band >= (rank - 1) / count - 1e-6)


def test_calibration_moves_held_out_coverage_into_the_target_band():
    """Fitted on two scenes, the flow learns the training residuals, which are smaller than
    new ones: its 90 % interval covers 0.71 of the test values (measured); the scale fitted on
    separate calibration scenes brings it to 0.90."""
    torch.manual_seed(0)
    y_train, x_train = _toy(2, 0)
    y_calibration, x_calibration = _toy(16, 1)
    y_test, x_test = _toy(16, 2)
    flow = ConditionalFlowDecoder(3, 4, width=8, hidden=16, n_blocks=1, **SMALL_MEAN)
    train_flow(flow, y_train, x_train, FlowTraining(steps=60, batch_size=8, patch_size=8))
    latents = torch.Generator()
    with torch.no_grad():
        before = flow.posterior(y_test, 32, latents.manual_seed(6))
        coverage_before = interval_coverage(x_test, before.lower, before.upper)["mean"]
        calibrate_band_scale(flow, y_calibration, x_calibration, 0.9, 32, latents.manual_seed(7))
        after = flow.posterior(y_test, 32, latents.manual_seed(6))
        coverage_after = interval_coverage(x_test, after.lower, after.upper)["mean"]
    assert coverage_before < 0.8, coverage_before
    assert 0.85 <= coverage_after <= 0.95, coverage_after


def test_calibration_refuses_bad_inputs():
    flow = ConditionalFlowDecoder(3, 4, width=8, hidden=8, n_blocks=1, **SMALL_MEAN)
    y, x = _toy(2, 0)
    with pytest.raises(ValueError, match="level"):
        calibrate_band_scale(flow, y, x, 1.5)
    with pytest.raises(ValueError, match="same N"):
        calibrate_band_scale(flow, y, x[:1])
    with pytest.raises(ValueError, match="L = 4"):
        calibrate_band_scale(flow, y, x[:, :3])
