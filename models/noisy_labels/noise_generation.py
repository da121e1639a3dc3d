"""The field's standard instance-dependent label-noise generator (per-instance flip rates).

Method: X. Xia, T. Liu, B. Han, N. Wang, M. Gong, H. Liu, G. Niu, D. Tao, M. Sugiyama,
"Part-dependent Label Noise: Towards Instance-dependent Label Noise", NeurIPS 2020
(arXiv:2006.07836), its instance-dependent label-noise generation (the algorithm of its
experiments, "Algorithm 2" of the arXiv version; read here in the authors' reference code
``get_instance_noisy_label``, which later instance-dependent-noise papers, including those
of the IDLN authors' group, reuse for their "IDN-20 % / IDN-40 %" settings). For a noise
rate ``n`` and instances ``x_i`` (S features) with true labels ``y_i`` of K classes::

    q_i  ~ N(n, sigma^2) truncated to [0, 1]           per-instance flip rate (sigma = 0.1)
    W_k  ~ N(0, 1)^{S x K},  k = 1..K                  one random projection per true class
    p    = x_i W_{y_i};  p_{y_i} = -inf                scores of the other classes
    T_i  = q_i softmax(p);  T_i[y_i] = 1 - q_i         the instance's transition row
    y~_i ~ Categorical(T_i)

so both how likely an instance is to be flipped (``q_i``) and where it goes (its features
through ``W_{y_i}``) belong to the instance. In hyplex the features are the standardised
barcode of a pixel (each filter minus its mean over the instances, over its standard
deviation; the reference code feeds normalised images): an auto-labeller's confusion then
follows the spectrum's direction in filter space, not its brightness alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["InstanceDependentNoise", "instance_dependent_label_noise"]


@dataclass(frozen=True)
class InstanceDependentNoise:
    """Result of :func:`instance_dependent_label_noise`.

    Attributes
    ----------
    labels : numpy.ndarray, (N,), int64
        Noisy labels.
    flip_rate : numpy.ndarray, (N,), float
        Per-instance flip rate ``q_i`` in [0, 1].
    transition : numpy.ndarray, (N, C), float
        Each instance's transition row ``T_i`` over the C classes present (columns in the
        order of ``classes``); rows sum to 1.
    classes : numpy.ndarray, (C,), int64
        The class ids, sorted.
    """

    labels: np.ndarray
    flip_rate: np.ndarray
    transition: np.ndarray
    classes: np.ndarray


def _truncated_normal(mean: float, std: float, size: int, rng: np.random.Generator):
    """``size`` draws of N(mean, std^2) truncated to [0, 1] (rejection: exact)."""
    out = np.empty(size)
    filled = 0
    while filled < size:
        draws = rng.normal(mean, std, 2 * (size - filled) + 16)
        draws = draws[(draws >= 0.0) & (draws <= 1.0)][: size - filled]
        out[filled : filled + draws.size] = draws
        filled += draws.size
    return out


def instance_dependent_label_noise(
    features, labels, rate: float, seed: int = 0, flip_rate_std: float = 0.1, standardise=True
) -> InstanceDependentNoise:
    """Instance-dependent noisy labels by Xia et al.'s generator (module docstring).

    Parameters
    ----------
    features : array_like, (N, S)
        Instance features (barcodes: S = 9 filter values per pixel).
    labels : array_like, (N,), int
        True class ids (>= 0; at least two distinct).
    rate : float
        Noise rate ``n`` in [0, 1): the mean of the truncated normal of flip rates (the
        measured share of flipped labels is close to it when ``n`` is well inside [0, 1]).
    seed : int
        Draws the flip rates, the projections and the labels.
    flip_rate_std : float
        ``sigma`` of the flip-rate distribution (> 0; 0.1 in the paper).
    standardise : bool
        Standardise each feature over the instances first (zero mean, unit std).

    Returns
    -------
    InstanceDependentNoise
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features (N, S) and labels (N,) must agree; got {x.shape}, {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise ValueError("labels must be non-negative integer class ids")
    if not 0 <= rate < 1:
        raise ValueError(f"rate must be a probability in [0, 1); got {rate}")
    if flip_rate_std <= 0:
        raise ValueError(f"flip_rate_std must be > 0; got {flip_rate_std}")
    y = y.astype(np.int64)
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError("need at least two classes to flip between")
    if standardise:
        x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
    rng = np.random.default_rng(seed)
    n, k = len(y), classes.size
    flip_rate = _truncated_normal(rate, flip_rate_std, n, rng)
    projections = rng.standard_normal((k, x.shape[1], k))  # W_k, (C, S, C)
    own = np.searchsorted(classes, y)
    scores = np.einsum("ns,nsc->nc", x, projections[own])
    scores[np.arange(n), own] = -np.inf
    scores -= scores.max(1, keepdims=True)
    others = np.exp(scores)
    transition = flip_rate[:, None] * others / others.sum(1, keepdims=True)
    transition[np.arange(n), own] = 1.0 - flip_rate
    cumulative = np.cumsum(transition, 1)
    cumulative[:, -1] = 1.0
    chosen = (rng.random(n)[:, None] > cumulative).sum(1)
    return InstanceDependentNoise(classes[chosen], flip_rate, transition, classes)
