"""Instance-dependent label noise: confusing and unconfusing instances, alternating optimisation.

Method: Q. Wang, B. Han, T. Liu, G. Niu, J. Yang, C. Gong, "Tackling Instance-Dependent Label
Noise via a Universal Probabilistic Model", AAAI 2021 (arXiv:2101.05467). Read here: its
abstract, introduction, figure 2 caption and the authors' released code
(github.com/QizhouWang/instance-dependent-label-noise, ``main.py`` and ``pretrain.py``); the
method section's equations could not be read, so no equation numbers are cited and the update
rules below follow the authors' code.

The probabilistic model: instance ``i`` is *confusing* with probability ``eta_i`` (its
label-confusing probability); an unconfusing instance's noisy label equals its true label, a
confusing one's is drawn from the noisy-label probability ``tau(. | x_i)``::

    p(y~ | y, x_i) = (1 - eta_i) 1[y~ = y] + eta_i tau(y~ | x_i)

so the posterior of the true label given the noisy one, with the classifier's
``p_theta(y | x)`` as the prior, is::

    q_i(y) ∝ p_theta(y | x_i) [(1 - eta_i) 1[y = y~_i] + eta_i tau_i],  tau_i = tau(y~_i | x_i)
           = (1 - r_i) 1[y = y~_i] + r_i p_theta(y | x_i)
    r_i    = eta_i tau_i / [(1 - eta_i) p_theta(y~_i | x_i) + eta_i tau_i]   (confusing?)

As in the authors' realisation: ``tau`` comes from a network trained on the noisy labels with
plain cross-entropy and is then frozen; ``eta`` is one free number per instance (not a
network), started small (``eta_init`` = 0.01: most instances are unconfusing); and the
alternating optimisation runs per batch: (E) ``q`` with everything fixed; (M1) one step of
the classifier on ``-sum_y q_i(y) log p_theta(y | x_i)``; (M2) one ascent step on the batch's
``eta_i`` (:func:`confusing_probability_step`). ``eta_i`` grows where the classifier trusts
the given label less than the noisy network does, so the classifier learns from its own
prediction there and from the label elsewhere. The authors hold ``eta`` for their first epoch
(``eta_hold_steps``; the benchmark holds it for one pass over the pixels).

Which network gives ``tau`` matters. The authors train it first (``pretrain.py``, 15 epochs of
the same architecture on the noisy labels) and then train a *new* classifier (``main.py``):
``separate_noisy_network=True`` does that within the budget (the warm-up trains a copy of the
classifier's initial weights; the classifier starts from those weights). Without it the
warm-up network goes on as the classifier, so ``tau`` and ``p_theta`` come from nearly the
same network, ``tau_i ~ p_theta(y~_i | x_i)``, the eta step is near zero and IDLN stays
within about a point of CE. With a separate noisy network that has fitted the noisy labels,
the fresh classifier doubts the flipped labels that the noisy network has taken in, their
``eta`` rises (development seeds 10-12, 40 % standard noise, 4800 steps: mean ``eta`` 0.08-0.12
on flipped pixels, 0.04-0.05 on the rest) and the classifier stops learning them.

What the method can and cannot do here: it is a label-cleaning self-training, and its gain in
the paper comes from deep networks that memorise flipped labels. hyplex's per-pixel MLP on
16k barcodes memorises them only slowly: under the standard instance-dependent noise
(:mod:`hyplex.models.noisy_labels.noise_generation`) at 40 % cross-entropy predicts the
flipped label on 4-6 % of the flipped training pixels after 1200 Adam steps (held-out mIoU
0.487, development seeds 10-12), 6-11 % after 4800 (0.413) and 10-20 % after 12000 (0.390).
At 1200 steps, where CE has not yet taken the noise in, IDLN can only match it; at 4800 (the
benchmark's budget since) it recovers what CE lost. A fast ``eta`` (the authors' ``eta_lr``
0.05) raises the confusing probability of every pixel its classifier doubts, the correctly
labelled pixels of small classes among them, whose labels it then replaces by the majority's
prediction (development seed 11 at 1200 steps: the smallest class's IoU 0.43 with CE, 0.23
with IDLN; 0.47 with ``eta_lr`` 0.005).

hyplex's auto-labels (k-means clusters of spectra, thresholds on an index) are wrong where a
spectrum lies near another class's, so their noise depends on the instance. The benchmark's
instance-dependent noise is the field's standard generator
(:func:`hyplex.models.noisy_labels.instance_dependent_label_noise`, Xia et al. 2020);
:func:`spectral_label_noise` is the earlier nearest-mean variant, kept and reported beside it
(the flip probability grows as a pixel's barcode approaches another class's mean barcode, and
the flip goes to that class; on the twin that distance follows brightness).
Instances are barcode pixels ``(N, F)``; any per-pixel classifier ``(N, F) -> (N, K)``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "IDLNConfig",
    "confusing_probability_step",
    "noisy_label_probability",
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

    Notes
    -----
    The class means are a coarse model of a class: on the twin's raw barcodes (9 Gaussian
    filters, shaded scenes, ``benchmarks/learning_methods.py --quick`` seeds 0-2) the nearest
    mean names the true class of only 22-46 % of pixels, since brightness dominates the
    distance. There the flip's direction depends on the barcode (mostly its brightness) but its
    probability hardly does: at ``rate=0.4`` 80 % of pixels flip with probability 0.26-0.52.
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


def noisy_label_probability(classifier: nn.Module, points: torch.Tensor, noisy: torch.Tensor):
    """``tau_i = p_noisy(y~_i | x_i)`` (N,): the noisy-label probability of each given label.

    The paper takes it from a network trained on the noisy labels with plain cross-entropy
    (the authors' ``pretrain.py``) and keeps it fixed while the classifier and ``eta`` are
    trained; :func:`train_idln` uses its own warm-up network.

    Parameters
    ----------
    classifier : torch.nn.Module, ``(N, F) -> logits (N, K)``, trained on the noisy labels.
    points : torch.Tensor, (N, F); noisy : torch.Tensor, (N,) int64.
    """
    classifier.eval()
    with torch.no_grad():
        probabilities = torch.softmax(classifier(points), 1)
    return probabilities.gather(1, noisy[:, None]).squeeze(1)


def confusing_probability_step(eta, q_noisy, tau_noisy, eta_lr: float):
    """One ascent step on each instance's confusing probability ``eta_i`` (the M-step for eta).

    The expected complete-data log-likelihood of instance ``i`` is
    ``q_i log(1 - eta_i + eta_i tau_i) + (1 - q_i) log(eta_i tau_i)`` with ``q_i = q_i(y~_i)``
    (the posterior that the given label is the true one); its derivative is
    ``(1 - q_i) / eta_i + q_i (tau_i - 1) / (1 - eta_i + eta_i tau_i)``. The authors' code
    (``main.py`` of github.com/QizhouWang/instance-dependent-label-noise) takes the last
    denominator as 1 ("we actually assume pnl is close to 1") and steps::

        eta_i <- clip(eta_i + eta_lr [(1 - q_i) + q_i eta_i (tau_i - 1)] / eta_i, 0, 1)

    which is what this function does (``eta_i`` in the division is floored at 1e-5). The
    un-approximated derivative changed nothing that mattered in the noisy-label benchmark
    (development seeds 10-12, 40 % standard noise, IDLN minus CE mIoU: -5.2 vs -5.1 points at
    ``eta_lr`` 0.05, +0.6 vs +0.6 at 0.005).

    Parameters
    ----------
    eta, q_noisy, tau_noisy : torch.Tensor, (N,)
        Current ``eta``, ``q_i(y~_i)`` and ``tau_i``, all in [0, 1].
    eta_lr : float
        Step size (> 0; the authors use 0.05).

    Returns
    -------
    torch.Tensor, (N,), in [0, 1].
    """
    if eta_lr <= 0:
        raise ValueError(f"eta_lr must be > 0; got {eta_lr}")
    disparity = (1 - q_noisy) + q_noisy * eta * (tau_noisy - 1)
    return (eta + eta_lr * disparity / eta.clamp_min(1e-5)).clamp(0.0, 1.0)


def true_label_posterior(log_p, eta, tau_noisy, noisy):
    """``(r (N,), q (N, K))``: posterior of "confusing" and of the true label (module eqs.).

    Parameters
    ----------
    log_p : torch.Tensor, (N, K)
        Classifier log posteriors ``log p_theta(y | x)``.
    eta : torch.Tensor, (N,)
        Confusing probabilities in [0, 1].
    tau_noisy : torch.Tensor, (N,)
        Noisy-label probability of each given label, ``tau(y~_i | x_i)``.
    noisy : torch.Tensor, (N,), int64
        Given labels.
    """
    with torch.no_grad():
        p_noisy = log_p.gather(1, noisy[:, None]).squeeze(1).exp()
        confusing = eta * tau_noisy
        r = confusing / ((1 - eta) * p_noisy + confusing).clamp_min(1e-12)
        q = r[:, None] * log_p.exp()
        q[torch.arange(len(noisy)), noisy] += 1 - r
        return r, q


@dataclass(frozen=True)
class IDLNConfig:
    """Settings of :func:`train_idln` (defaults: the authors' ``eta_init`` and ``eta_lr``).

    Attributes
    ----------
    warmup_steps : plain cross-entropy steps on the noisy labels; the warm-up network gives the
        noisy-label probability ``tau`` (the paper's network trained on noisy labels).
    steps : alternating steps after the warm-up (each: E-step on a batch, one classifier step,
        one ``eta`` step for the batch's instances).
    eta_hold_steps : alternating steps before ``eta`` starts to move (the authors hold it for
        their first epoch).
    lr, batch_size : Adam learning rate and instances per step (classifier).
    eta_init, eta_lr : initial confusing probability of every instance and its step size.
    separate_noisy_network : the authors' realisation (``pretrain.py`` then ``main.py``): the
        warm-up trains a *copy* of the classifier (same initial weights) on the noisy labels,
        that copy gives ``tau``, and the classifier itself starts the alternating steps from
        its initial weights. False: the warm-up network is the classifier and goes on training.
    """

    warmup_steps: int = 300
    steps: int = 900
    eta_hold_steps: int = 0
    lr: float = 3e-3
    batch_size: int = 512
    eta_init: float = 0.01
    eta_lr: float = 0.05
    separate_noisy_network: bool = False

    def __post_init__(self):
        if min(self.warmup_steps, self.steps, self.eta_hold_steps) < 0 or self.batch_size < 1:
            raise ValueError(f"step counts must be >= 0 and batch_size >= 1; got {self}")
        if not 0 < self.eta_init < 1 or self.eta_lr <= 0 or self.lr <= 0:
            raise ValueError(f"need 0 < eta_init < 1, eta_lr > 0 and lr > 0; got {self}")


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

    ``config.warmup_steps`` of cross-entropy on the noisy labels first; the warm-up network's
    noisy-label probabilities ``tau_i`` are then frozen (:func:`noisy_label_probability`) and
    the same network goes on for ``config.steps`` alternating steps: (E) ``q`` from the
    classifier, ``eta`` and ``tau`` (:func:`true_label_posterior`), (M1) one Adam step of the
    classifier on ``-sum_y q(y) log p_theta(y | x)``, (M2) one step of the batch's ``eta``
    (:func:`confusing_probability_step`). The total is ``warmup_steps + steps`` network
    steps: give the cross-entropy baseline as many. With ``config.separate_noisy_network``
    the warm-up trains a copy of ``classifier`` (the noisy network) and ``classifier`` starts
    the alternating steps from its initial weights (the authors' ``pretrain.py``/``main.py``).

    Parameters
    ----------
    classifier : torch.nn.Module
        ``(N, F) -> logits (N, K)``.
    points : torch.Tensor, (N, F)
        Instances (barcode pixels).
    noisy : torch.Tensor, (N,), int64
        Given (noisy) labels in ``[0, n_classes)``.
    n_classes : int
    config : IDLNConfig
    seed : int
        Batches.
    progress : bool
        Show a tqdm bar over the alternating steps.

    Returns
    -------
    (classifier (eval mode), eta (N,) final confusing probabilities, r (N,) posterior of
    "confusing" per instance under the final classifier)
    """
    if points.ndim != 2 or noisy.shape != (points.shape[0],):
        raise ValueError(
            f"points (N, F) and noisy (N,) must agree; got {tuple(points.shape)}, "
            f"{tuple(noisy.shape)}"
        )
    if noisy.numel() and (int(noisy.min()) < 0 or int(noisy.max()) >= n_classes):
        raise ValueError(f"noisy labels must lie in [0, {n_classes}); got {noisy.unique()}")
    rng = np.random.default_rng(seed)
    noisy_network = copy.deepcopy(classifier) if config.separate_noisy_network else classifier
    train_cross_entropy(
        noisy_network, points, noisy, config.warmup_steps, config.lr, config.batch_size, seed
    )
    tau = noisy_label_probability(noisy_network, points, noisy)
    del noisy_network
    eta = torch.full((len(points),), float(config.eta_init))
    optimizer = torch.optim.Adam(classifier.parameters(), lr=config.lr)
    classifier.train()
    steps = range(int(config.steps))
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="IDLN", leave=False)
    for step in steps:
        rows = torch.as_tensor(_batches(len(points), config.batch_size, rng))
        log_p = torch.log_softmax(classifier(points[rows]), 1)
        # (E) the true-label posterior with the networks and eta fixed
        _, q = true_label_posterior(log_p.detach(), eta[rows], tau[rows], noisy[rows])
        # (M1) the classifier on the estimated true labels
        loss = -(q * log_p).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # (M2) each instance's confusing probability
        if step >= config.eta_hold_steps:
            q_noisy = q.gather(1, noisy[rows, None]).squeeze(1)
            eta[rows] = confusing_probability_step(eta[rows], q_noisy, tau[rows], config.eta_lr)
    classifier.eval()
    with torch.no_grad():
        r, _ = true_label_posterior(torch.log_softmax(classifier(points), 1), eta, tau, noisy)
    return classifier, eta, r
