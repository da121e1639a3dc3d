"""Max-Matching: learning from coarse region labels that fit only some of the region's pixels.

Method: Q. Wang, J. Yao, C. Gong, T. Liu, M. Gong, H. Yang, B. Han, "Learning with Group Noise",
AAAI 2021 (arXiv:2103.09468). Read here: its abstract, introduction, figure 2 caption and the
authors' released code (github.com/QizhouWang/Max-Matching, ``mm.py`` and ``main.py``, the
recommendation setting); the method section's equations could not be read, so no equation
numbers are cited.

Group noise: a *group* of objects carries one label whose coarse relation is right (some member
has it) while the fine relation of each member may be wrong. Max-Matching scores every member
by combining a *pair matching* (the member's own confidence in the group's label) with a
*group weighting* (the member's importance from the correlations inside the group), and
learns from the member with the largest score only (max-pooling), so the members the label
does not fit are dropped. In the authors' code the score is a sum of log terms and the loss
is ``-max_i score_i``, their group weighting being a learned attention over the group that is
compared with the target. Per group ``G`` with label ``y_G``, here::

    matching  m_i = p_theta(y_G | x_i) * a_i,      a_i = softmax_{j in G}(s(x_i, G) / tau)
    selection i* = argmax_{i in G} m_i
    loss      L  = sum_G -log p_theta(y_G | x_{i*})

``s(x_i, G)`` is the cosine similarity of a member's feature to the group's mean feature: a
fixed, label-blind stand-in for the learned weighting (ours), so with ``features=None`` (or
``tau -> inf``) the selection is the plain most-confident member. Being label-blind, it favours
the group's majority, the wrong member when the label names a minority of the group; the
benchmark (``benchmarks/learning_methods.py``) trains without it. The argmax is not
differentiated through (the selected member's cross-entropy is; with fixed features the
authors' ``log a_i`` term has no gradient).

In hyplex a group is a region of a frame that a person outlined (a polygon or a superpixel)
and gave one class: :func:`coarse_region_labels` makes such labels from a class map (square
cells stand in for superpixels, each labelled with a class drawn among those it holds, by
area), and :func:`max_matching_mask` picks the pixels to learn from (``keep`` most confident
per group; the paper's is ``keep=1``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["coarse_region_labels", "matching_scores", "max_matching_mask", "max_matching_loss"]

IGNORE_INDEX = -100


def coarse_region_labels(class_maps, cell: int, seed: int = 0, by_area: bool = True):
    """Group-noise labels: one class per ``cell x cell`` region, drawn among the classes it holds.

    Parameters
    ----------
    class_maps : array_like, (S, H, W), int
        True class ids.
    cell : int
        Region size in pixels (>= 1).
    seed : int
        Draws each region's label.
    by_area : bool
        Draw a region's label with probability proportional to its classes' areas (an
        annotator who names what covers most of it); False: uniformly among the classes
        present (one who names any of them: more of the region's pixels are mislabelled).

    Returns
    -------
    group_ids : numpy.ndarray, (S, H, W), int64
        Region index of every pixel (unique over the whole set).
    group_labels : numpy.ndarray, (G,), int64
        The label of each region.
    pixel_labels : numpy.ndarray, (S, H, W), int64
        ``group_labels[group_ids]``: the coarse label seen by plain cross-entropy.
    """
    maps = np.asarray(class_maps)
    if maps.ndim != 3 or not np.issubdtype(maps.dtype, np.integer):
        raise ValueError(f"class_maps must be integer (S, H, W); got {maps.dtype} {maps.shape}")
    if int(cell) < 1:
        raise ValueError(f"cell must be >= 1 pixel; got {cell}")
    count, height, width = maps.shape
    rows, cols = -(-height // cell), -(-width // cell)
    r = np.arange(height)[:, None] // cell
    c = np.arange(width)[None, :] // cell
    group_ids = (np.arange(count)[:, None, None] * rows * cols + r * cols + c).astype(np.int64)
    rng = np.random.default_rng(seed)
    n_groups = count * rows * cols
    labels = np.zeros(n_groups, dtype=np.int64)
    flat_ids, flat_maps = group_ids.reshape(-1), maps.reshape(-1)
    order = np.argsort(flat_ids, kind="stable")
    bounds = np.searchsorted(flat_ids[order], np.arange(n_groups + 1))
    for g in range(n_groups):
        members = flat_maps[order[bounds[g] : bounds[g + 1]]]
        values, counts = np.unique(members, return_counts=True)
        weights = counts if by_area else np.ones_like(counts)
        labels[g] = rng.choice(values, p=weights / weights.sum())
    return group_ids, labels, labels[group_ids]


def matching_scores(
    log_probabilities: torch.Tensor,
    features: torch.Tensor | None,
    group_ids: torch.Tensor,
    group_labels: torch.Tensor,
    tau: float = 1.0,
) -> torch.Tensor:
    """Max-Matching's matching score ``m_i = p(y_G | x_i) a_i`` of every member (detached).

    Parameters
    ----------
    log_probabilities : torch.Tensor, (N, K)
        Log class posteriors of the ``N`` members (all groups).
    features : torch.Tensor, (N, D), optional
        Member features for the group-correlation attention; None = uniform attention.
    group_ids : torch.Tensor, (N,), int64
        Group of each member, in ``[0, G)``.
    group_labels : torch.Tensor, (G,), int64
    tau : float
        Attention temperature (> 0).

    Returns
    -------
    torch.Tensor, (N,)
        Scores in [0, 1].
    """
    n = log_probabilities.shape[0]
    if group_ids.shape != (n,):
        raise ValueError(f"group_ids must be ({n},); got {tuple(group_ids.shape)}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0; got {tau}")
    with torch.no_grad():
        targets = group_labels[group_ids]
        p = log_probabilities.gather(1, targets[:, None]).squeeze(1).exp()
        if features is None:
            return p
        n_groups = int(group_labels.numel())
        unit = F.normalize(features.float(), dim=1)
        sums = torch.zeros(n_groups, unit.shape[1], dtype=unit.dtype, device=unit.device)
        sums.index_add_(0, group_ids, unit)
        similarity = (unit * F.normalize(sums, dim=1)[group_ids]).sum(1) / tau
        top = torch.full((n_groups,), -torch.inf, dtype=unit.dtype, device=unit.device)
        top = top.scatter_reduce(0, group_ids, similarity, "amax")
        weight = (similarity - top[group_ids]).exp()
        total = torch.zeros(n_groups, dtype=unit.dtype, device=unit.device)
        total.index_add_(0, group_ids, weight)
        return p * weight / total[group_ids]


def max_matching_mask(scores: torch.Tensor, group_ids: torch.Tensor, keep: int = 1):
    """Boolean mask ``(N,)`` of the ``keep`` best-matching members of every group.

    Ties go to the lower index. ``keep=1`` is the paper's "only the most confident object".
    """
    if int(keep) < 1:
        raise ValueError(f"keep must be >= 1; got {keep}")
    if scores.shape != group_ids.shape or scores.ndim != 1:
        raise ValueError("scores and group_ids must both be (N,)")
    # sort by group, then by score descending; rank within each group
    order = torch.argsort(-scores.double(), stable=True)
    order = order[torch.argsort(group_ids[order], stable=True)]
    sorted_groups = group_ids[order]
    first = torch.ones_like(sorted_groups, dtype=torch.bool)
    first[1:] = sorted_groups[1:] != sorted_groups[:-1]
    starts = torch.cummax(torch.where(first, torch.arange(len(order)), 0), 0).values
    rank = torch.arange(len(order)) - starts
    mask = torch.zeros_like(group_ids, dtype=torch.bool)
    mask[order[rank < int(keep)]] = True
    return mask


def max_matching_loss(
    logits: torch.Tensor,
    group_ids: torch.Tensor,
    group_labels: torch.Tensor,
    features: torch.Tensor | None = None,
    keep: int = 1,
    tau: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy of each group's best-matching member(s) to the group's label.

    Parameters
    ----------
    logits : torch.Tensor, (N, K)
        Member logits (pixels of a batch, flattened).
    group_ids : torch.Tensor, (N,), int64
        Group index per member (``[0, G)``; ids of groups absent from the batch are fine).
    group_labels : torch.Tensor, (G,), int64
    features : torch.Tensor, (N, D), optional
        For the group-correlation attention (:func:`matching_scores`).
    keep, tau : see :func:`max_matching_mask` and :func:`matching_scores`.

    Returns
    -------
    torch.Tensor, scalar
    """
    log_p = torch.log_softmax(logits, dim=1)
    scores = matching_scores(log_p, features, group_ids, group_labels, tau)
    mask = max_matching_mask(scores, group_ids, keep)
    targets = group_labels[group_ids]
    return F.nll_loss(log_p[mask], targets[mask])
