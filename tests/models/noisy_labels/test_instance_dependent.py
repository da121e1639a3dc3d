"""IDLN: the true-label posterior against its formula, spectral noise, and a win over CE."""

import numpy as np
import torch

from hyplex.models.noisy_labels import (
    IDLNConfig,
    spectral_label_noise,
    train_cross_entropy,
    train_idln,
    true_label_posterior,
)


def test_true_label_posterior_matches_the_mixture_formula():
    log_p = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    log_tau = torch.log(torch.tensor([[0.2, 0.2, 0.6]]))
    eta = torch.tensor([0.4])
    noisy = torch.tensor([2])
    r, q = true_label_posterior(log_p, eta, log_tau, noisy)
    expected_r = 0.4 * 0.6 / (0.6 * 0.1 + 0.4 * 0.6)
    assert abs(r.item() - expected_r) < 1e-6
    expected_q = expected_r * np.array([0.6, 0.3, 0.1]) + (1 - expected_r) * np.eye(3)[2]
    np.testing.assert_allclose(q[0].numpy(), expected_q, atol=1e-6)


def test_spectral_noise_flips_ambiguous_spectra_towards_the_nearest_class():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 3000)
    centres = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    points = centres[labels] + 0.3 * rng.standard_normal((3000, 2))
    noisy = spectral_label_noise(points, labels, 0.3, seed=0)
    assert abs((noisy != labels).mean() - 0.3) < 0.05
    flipped = noisy != labels
    # classes 0 and 1 are close: their flips go to each other, class 2 is rarely flipped
    assert np.all(np.isin(noisy[flipped & (labels == 0)], [1]))
    assert (flipped & (labels == 2)).mean() < (flipped & (labels != 2)).mean()


def _toy(n, seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=generator)
    centres = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return centres[labels] + 0.3 * torch.randn(n, 2, generator=generator), labels


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))


def test_idln_beats_cross_entropy_at_forty_percent_instance_dependent_noise():
    x, y = _toy(1500, 0)
    tx, ty = _toy(600, 1)
    noisy = torch.as_tensor(spectral_label_noise(x.numpy(), y.numpy(), 0.4, seed=0))
    ce = train_cross_entropy(_net(), x, noisy, 400, lr=1e-2, seed=0)
    config = IDLNConfig(warmup_steps=100, rounds=6, classifier_steps=50, noise_steps=50, lr=1e-2)
    idln, _, r = train_idln(_net(), x, noisy, 3, config, seed=0)
    with torch.no_grad():
        accuracy_ce = (ce(tx).argmax(1) == ty).float().mean().item()
        accuracy_idln = (idln(tx).argmax(1) == ty).float().mean().item()
    # 0.893 vs 0.883 when written: a small but deterministic gain on this toy
    assert accuracy_idln > accuracy_ce + 0.005, (accuracy_idln, accuracy_ce)
    # the instances called confusing are mostly the flipped ones
    assert r[noisy != y].mean() > r[noisy == y].mean()
