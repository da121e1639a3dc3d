"""IDLN: the true-label posterior and the eta step against their formulas, the frozen
noisy-label probability, spectral noise, and a win over CE."""

import dataclasses

import numpy as np
import pytest
import torch

from hyplex.models.noisy_labels import (
    IDLNConfig,
    confusing_probability_step,
    noisy_label_probability,
    spectral_label_noise,
    train_cross_entropy,
    train_idln,
    true_label_posterior,
)


def test_true_label_posterior_matches_the_mixture_formula():
    p = np.array([0.6, 0.3, 0.1])
    eta, tau, noisy = 0.4, 0.6, 2
    log_p = torch.log(torch.tensor(p[None]))
    r, q = true_label_posterior(log_p, torch.tensor([eta]), torch.tensor([tau]), torch.tensor([2]))
    expected_r = eta * tau / ((1 - eta) * p[noisy] + eta * tau)
    assert abs(r.item() - expected_r) < 1e-6
    # Bayes' rule with the noise model p(y~ | y) = (1 - eta) 1[y~ = y] + eta tau
    likelihood = (1 - eta) * np.eye(3)[noisy] + eta * tau
    expected_q = p * likelihood / (p * likelihood).sum()
    np.testing.assert_allclose(q[0].numpy(), expected_q, atol=1e-6)


def test_confusing_probability_step_follows_the_authors_update():
    eta = torch.tensor([0.01, 0.2, 0.5, 0.9])
    q = torch.tensor([0.9, 0.99, 0.3, 1.0])
    tau = torch.tensor([0.5, 0.2, 0.8, 0.1])
    stepped = confusing_probability_step(eta, q, tau, eta_lr=0.05)
    by_hand = [
        min(1.0, max(0.0, e + 0.05 * ((1 - qq) + qq * e * (t - 1)) / e))
        for e, qq, t in zip(eta.tolist(), q.tolist(), tau.tolist(), strict=True)
    ]
    np.testing.assert_allclose(stepped.numpy(), by_hand, rtol=1e-6)
    # a doubted label raises eta, a label the classifier is sure of lowers it
    assert stepped[0] > eta[0] and stepped[3] < eta[3]
    with pytest.raises(ValueError, match="eta_lr"):
        confusing_probability_step(eta, q, tau, eta_lr=0.0)


def test_noisy_label_probability_is_the_softmax_of_the_given_label():
    net = torch.nn.Linear(2, 3)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        expected = torch.softmax(net(x), 1)[torch.arange(5), labels]
    torch.testing.assert_close(noisy_label_probability(net, x, labels), expected)


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
    """About 13 passes over the data after the warm-up, near the authors' 15 epochs."""
    x, y = _toy(1500, 0)
    tx, ty = _toy(600, 1)
    noisy = torch.as_tensor(spectral_label_noise(x.numpy(), y.numpy(), 0.4, seed=0))
    # cross-entropy gets as many steps as IDLN's warm-up plus alternating steps
    ce = train_cross_entropy(_net(), x, noisy, 400, lr=1e-2, batch_size=64, seed=0)
    config = IDLNConfig(warmup_steps=100, steps=300, lr=1e-2, batch_size=64)
    idln, eta, r = train_idln(_net(), x, noisy, 3, config, seed=0)
    with torch.no_grad():
        accuracy_ce = (ce(tx).argmax(1) == ty).float().mean().item()
        accuracy_idln = (idln(tx).argmax(1) == ty).float().mean().item()
    # 0.893 vs 0.863 when written (with eta frozen at 0.01 the same steps reach 0.892: on this
    # toy the gain is not the eta step's, which the assertions below pin instead)
    assert accuracy_idln > accuracy_ce + 0.01, (accuracy_idln, accuracy_ce)
    # the eta step raises the confusing probability of the flipped instances, not of the rest
    flipped = noisy != y
    assert eta[flipped].mean() > 3 * eta[~flipped].mean()
    assert eta[~flipped].mean() < 0.03
    assert r[flipped].mean() > r[~flipped].mean()


def test_separate_noisy_network_gives_tau_and_leaves_the_classifier_at_its_start():
    """The authors' realisation: tau from a copy trained on the noisy labels (``pretrain.py``),
    the classifier itself untouched until the alternation (``main.py`` starts a new network)."""
    x, y = _toy(300, 0)
    start = [p.detach().clone() for p in _net().parameters()]
    config = IDLNConfig(warmup_steps=60, steps=0, lr=1e-2, batch_size=64)
    separate = dataclasses.replace(config, separate_noisy_network=True)
    classifier, eta, r = train_idln(_net(), x, y, 3, separate, seed=0)
    for before, after in zip(start, classifier.parameters(), strict=True):
        torch.testing.assert_close(before, after)  # not the warm-up's network
    noisy_network = train_cross_entropy(_net(), x, y, 60, lr=1e-2, batch_size=64, seed=0)
    tau = noisy_label_probability(noisy_network, x, y)
    expected_r, _ = true_label_posterior(torch.log_softmax(_net()(x), 1), eta, tau, y)
    torch.testing.assert_close(r, expected_r)
    assert tau.mean() > 0.6  # the copy did learn the labels (1/3 at the start)
    continued, _, _ = train_idln(_net(), x, y, 3, config, seed=0)
    for before, after in zip(start, continued.parameters(), strict=True):
        assert not torch.equal(before, after)  # the default: the warm-up network goes on


def test_train_idln_refuses_labels_outside_the_classes():
    with pytest.raises(ValueError, match="noisy labels"):
        train_idln(_net(), torch.zeros(4, 2), torch.tensor([0, 1, 2, 3]), 3)
