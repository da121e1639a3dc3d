"""Instance-dependent label noise: confusing and unconfusing instances, alternating optimisation.

Method: Q. Wang, B. Han, T. Liu, G. Niu, J. Yang, C. Gong, "Tackling Instance-Dependent Label
Noise via a Universal Probabilistic Model", AAAI 2021 (arXiv:2101.05467); its abstract,
introduction and the authors' figure 2 caption were read (no equation numbers cited).

The probabilistic model: each instance ``x`` is *confusing* with probability ``eta(x)`` (the
label-confusing probability); an unconfusing instance's noisy label equals its true label, a
confusing one's is drawn from the noisy-label probability ``tau(. | x)``::

    p(y~ | x) = (1 - eta(x)) p_theta(y = y~ | x) + eta(x) tau_phi(y~ | x)

so the posterior of the true label given the noisy one is

    r_i     = eta_i tau_i(y~_i) / [(1 - eta_i) p_i(y~_i) + eta_i tau_i(y~_i)]   (confusing?)
    q_i(y)  = (1 - r_i) 1[y = y~_i] + r_i p_theta(y | x_i)

and training alternates (the paper's alternating optimisation): (E) estimate ``r`` and ``q``
with the networks fixed; (M1) fit the classifier ``p_theta`` to the soft true labels ``q``;
(M2) fit the noise model (``eta_phi``, ``tau_phi``: one small network with a sigmoid and a
softmax output) by maximising the noisy-label likelihood with ``p_theta`` fixed. ``eta``
thereby decides per instance how much to learn from the given label versus the model's own
prediction. A warm-up of plain cross-entropy comes first (networks fit clean patterns before
noisy ones), and a small penalty ``sparsity * mean(eta)`` encodes that most instances are
unconfusing (without it the noise model may call every instance confusing and explain every
label by ``tau``, the degenerate maximum of the likelihood). The penalty and warm-up are ours.

hyplex's auto-labels (k-means clusters of spectra, thresholds on an index) are wrong where a
spectrum lies near another class's, so their noise depends on the instance:
:func:`spectral_label_noise` makes such labels from barcodes (the flip probability grows as a
pixel's barcode approaches another class's mean barcode, and the flip goes to that class).
Instances are barcode pixels ``(N, F)``; any per-pixel classifier ``(N, F) -> (N, K)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "IDLNConfig",
    "NoiseModel",
    "spectral_label_noise",
    "train_cross_entropy",
    "train_idln",
    "true_label_posterior",
]


def spectral_label_noise(points, labels, rate: float, seed: int = 0):
    """Instance-dependent noisy labels whose flips depend on the spectrum (barcode).

    For pixel ``i`` of class ``y``, with ``d_own`` the distance of its barcode to the mean
    barcode of class ``y`` and ``d_other`` to the nearest other class mean (class ``c``), the
    confusability is ``s_i = d_own / (d_own + d_other)`` in [0, 1]; the flip probability is
    ``min(0.95, rate * s_i / mean(s))`` (mean ``rate`` up to the clip), and a flipped label
    becomes ``c``.

    Parameters
    ----------
    points : array_like, (N, F)
        Barcodes (or any spectral features).
    labels : array_like, (N,), int
        True class ids (>= 0).
    rate : float
        Mean flip probability in [0, 1).
    seed : int

    Returns
    -------
    numpy.ndarray, (N,), int64
        Noisy labels.
    """
    x = np.asarray(points, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"points (N, F) and labels (N,) must agree; got {x.shape}, {y.shape}")
    if not 0 <= rate < 1:
        raise ValueError(f"rate must be a probability in [0, 1); got {rate}")
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError("need at least two classes to flip between")
    means = np.stack([x[y == c].mean(0) for c in classes])
    distance = np.linalg.norm(x[:, None, :] - means[None], axis=-1)  # (N, C)
    own = np.searchsorted(classes, y)
    d_own = distance[np.arange(len(y)), own]
    distance[np.arange(len(y)), own] = np.inf
    other = distance.argmin(1)
    d_other = distance[np.arange(len(y)), other]
    s = d_own / (d_own + d_other + 1e-12)
    flip_probability = np.minimum(0.95, rate * s / max(s.mean(), 1e-12))
    rng = np.random.default_rng(seed)
    flip = rng.random(len(y)) < flip_probability
    noisy = y.copy()
    noisy[flip] = classes[other[flip]]
    return noisy


class NoiseModel(nn.Module):
    """``x (N, F) -> (eta (N,), log tau (N, K))``: confusing probability and noisy-label
    distribution, one MLP with two heads."""

    def __init__(self, in_features: int, n_classes: int, width: int = 32, eta_init: float = 0.2):
        super().__init__()
        if not 0 < eta_init < 1:
            raise ValueError(f"eta_init must lie in (0, 1); got {eta_init}")
        self.body = nn.Sequential(nn.Linear(in_features, width), nn.ReLU())
        self.eta = nn.Linear(width, 1)
        self.tau = nn.Linear(width, n_classes)
        nn.init.zeros_(self.eta.weight)
        nn.init.constant_(self.eta.bias, float(np.log(eta_init / (1 - eta_init))))

    def forward(self, x: torch.Tensor):
        h = self.body(x)
        return torch.sigmoid(self.eta(h)).squeeze(1), torch.log_softmax(self.tau(h), dim=1)


def true_label_posterior(log_p, eta, log_tau, noisy):
    """``(r (N,), q (N, K))``: posterior of "confusing" and of the true label (module eqs.).

    Parameters
    ----------
    log_p : torch.Tensor, (N, K)
        Classifier log posteriors ``log p_theta(y | x)``.
    eta : torch.Tensor, (N,)
        Confusing probabilities in (0, 1).
    log_tau : torch.Tensor, (N, K)
        Log noisy-label distribution of a confusing instance.
    noisy : torch.Tensor, (N,), int64
        Given labels.
    """
    with torch.no_grad():
        p_noisy = log_p.gather(1, noisy[:, None]).squeeze(1).exp()
        tau_noisy = log_tau.gather(1, noisy[:, None]).squeeze(1).exp()
        confusing = eta * tau_noisy
        r = confusing / ((1 - eta) * p_noisy + confusing).clamp_min(1e-12)
        q = r[:, None] * log_p.exp()
        q[torch.arange(len(noisy)), noisy] += 1 - r
        return r, q


@dataclass(frozen=True)
class IDLNConfig:
    """Settings of :func:`train_idln`.

    Attributes
    ----------
    warmup_steps : plain cross-entropy steps first.
    rounds : alternating rounds; each does ``classifier_steps`` and ``noise_steps``.
    lr, batch_size : Adam learning rate, instances per step.
    sparsity : weight of ``mean(eta)`` in the noise model's loss.
    eta_init : initial confusing probability.
    """

    warmup_steps: int = 200
    rounds: int = 10
    classifier_steps: int = 40
    noise_steps: int = 40
    lr: float = 3e-3
    batch_size: int = 512
    sparsity: float = 0.1
    eta_init: float = 0.2


def _batches(n, batch_size, rng):
    return rng.choice(n, min(batch_size, n), replace=False)


def train_cross_entropy(classifier, points, labels, steps, lr=3e-3, batch_size=512, seed=0):
    """The baseline: Adam on plain cross-entropy to the given labels (in place).

    Parameters
    ----------
    classifier : torch.nn.Module, ``(N, F) -> (N, K)``.
    points : torch.Tensor, (N, F); labels : torch.Tensor, (N,) int64.
    steps, lr, batch_size, seed : Adam steps, learning rate, instances per step, draws.
    """
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    classifier.train()
    for _ in range(int(steps)):
        rows = torch.as_tensor(_batches(len(points), batch_size, rng))
        loss = F.cross_entropy(classifier(points[rows]), labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return classifier.eval()


def train_idln(
    classifier: nn.Module,
    points: torch.Tensor,
    noisy: torch.Tensor,
    n_classes: int,
    config: IDLNConfig = IDLNConfig(),
    seed: int = 0,
    progress: bool = False,
):
    """Train ``classifier`` on noisy labels with the universal probabilistic model (in place).

    Parameters
    ----------
    classifier : torch.nn.Module
        ``(N, F) -> logits (N, K)``.
    points : torch.Tensor, (N, F)
        Instances (barcode pixels).
    noisy : torch.Tensor, (N,), int64
        Given (noisy) labels.
    n_classes : int
    config : IDLNConfig
    seed : int
        Batches and the noise model's initialisation.
    progress : bool
        Show a tqdm bar over the rounds.

    Returns
    -------
    (classifier (eval mode), NoiseModel, r (N,) posterior of "confusing" per instance)
    """
    if points.ndim != 2 or noisy.shape != (points.shape[0],):
        raise ValueError(
            f"points (N, F) and noisy (N,) must agree; got {tuple(points.shape)}, "
            f"{tuple(noisy.shape)}"
        )
    rng = np.random.default_rng(seed)
    train_cross_entropy(
        classifier, points, noisy, config.warmup_steps, config.lr, config.batch_size, seed
    )
    generator = torch.Generator().manual_seed(int(seed))
    noise = NoiseModel(points.shape[1], n_classes, eta_init=config.eta_init)
    for module in (noise.body[0], noise.tau):
        nn.init.normal_(module.weight, std=module.weight.shape[1] ** -0.5, generator=generator)
        nn.init.zeros_(module.bias)
    classifier_optimizer = torch.optim.Adam(classifier.parameters(), lr=config.lr)
    noise_optimizer = torch.optim.Adam(noise.parameters(), lr=config.lr)
    rounds = range(int(config.rounds))
    if progress:
        from tqdm.auto import tqdm

        rounds = tqdm(rounds, desc="IDLN rounds", leave=False)
    for _ in rounds:
        # (M2) the noise model, classifier fixed: maximise the noisy-label likelihood
        classifier.eval()
        noise.train()
        for _ in range(int(config.noise_steps)):
            rows = torch.as_tensor(_batches(len(points), config.batch_size, rng))
            with torch.no_grad():
                p_noisy = torch.softmax(classifier(points[rows]), 1)
                p_noisy = p_noisy.gather(1, noisy[rows, None]).squeeze(1)
            eta, log_tau = noise(points[rows])
            tau_noisy = log_tau.gather(1, noisy[rows, None]).squeeze(1).exp()
            likelihood = (1 - eta) * p_noisy + eta * tau_noisy
            loss = -likelihood.clamp_min(1e-12).log().mean() + config.sparsity * eta.mean()
            noise_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            noise_optimizer.step()
        # (E) + (M1) the classifier on the estimated true labels, noise model fixed
        noise.eval()
        classifier.train()
        for _ in range(int(config.classifier_steps)):
            rows = torch.as_tensor(_batches(len(points), config.batch_size, rng))
            logits = classifier(points[rows])
            log_p = torch.log_softmax(logits, 1)
            with torch.no_grad():
                eta, log_tau = noise(points[rows])
            _, q = true_label_posterior(log_p.detach(), eta, log_tau, noisy[rows])
            loss = -(q * log_p).sum(1).mean()
            classifier_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            classifier_optimizer.step()
    classifier.eval()
    with torch.no_grad():
        eta, log_tau = noise(points)
        r, _ = true_label_posterior(torch.log_softmax(classifier(points), 1), eta, log_tau, noisy)
    return classifier, noise, r
