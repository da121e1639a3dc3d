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

Regions need not be square. Any integer map of regions is a valid ``group_ids``:
:func:`superpixel_group_ids` makes irregular ones from the barcodes (SLIC superpixels,
R. Achanta, A. Shaji, K. Smith, A. Lucchi, P. Fua, S. Susstrunk, "SLIC Superpixels Compared
to State-of-the-Art Superpixel Methods", IEEE TPAMI 34(11), 2012: k-means of pixels in
(spectrum, position) with its distance ``D = sqrt(d_c^2 + (d_s / S)^2 m^2)``, ``S`` the grid
step, ``m`` the compactness, each centre searching a ``2S x 2S`` window; here ``d_c`` is on
barcodes over the scene's mean barcode norm, and each superpixel is split into its
4-connected parts instead of the paper's merge of small parts), :func:`polygon_group_ids`
rasterises outlined polygons, :func:`region_labels` gives such regions their coarse labels and
:func:`check_group_ids` validates a map against the pixels (shape, integers, no negative ids).
The square cells of :func:`coarse_region_labels` are kept for the benchmark's group-noise row.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "check_group_ids",
    "coarse_region_labels",
    "matching_scores",
    "max_matching_loss",
    "max_matching_mask",
    "polygon_group_ids",
    "region_labels",
    "superpixel_group_ids",
]

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
        Group index per member (``[0, G)``; ids of groups absent from the batch are fine): any
        regions (square cells, :func:`superpixel_group_ids`, :func:`polygon_group_ids`), given
        for the member pixels only (drop pixels outside every region, id -1, first). A wrong
        shape, a negative id or one ``>= G`` is refused (:func:`check_group_ids`).
    group_labels : torch.Tensor, (G,), int64
    features : torch.Tensor, (N, D), optional
        For the group-correlation attention (:func:`matching_scores`).
    keep, tau : see :func:`max_matching_mask` and :func:`matching_scores`.

    Returns
    -------
    torch.Tensor, scalar
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, K); got shape {tuple(logits.shape)}")
    check_group_ids(group_ids, (logits.shape[0],), n_groups=int(group_labels.numel()))
    log_p = torch.log_softmax(logits, dim=1)
    scores = matching_scores(log_p, features, group_ids, group_labels, tau)
    mask = max_matching_mask(scores, group_ids, keep)
    targets = group_labels[group_ids]
    return F.nll_loss(log_p[mask], targets[mask])


def check_group_ids(group_ids, shape, n_groups: int | None = None):
    """Validate a map of region ids against the pixels it labels; returns it unchanged.

    Parameters
    ----------
    group_ids : numpy.ndarray or torch.Tensor, integer
        Region id of every pixel (``>= 0``; ``< n_groups`` when given).
    shape : tuple of int
        The shape the pixels have (e.g. ``(N,)`` for flattened logits, ``(S, H, W)``).
    n_groups : int, optional
        Number of regions ``G`` (the length of the region labels).

    Raises
    ------
    ValueError
        Naming the wrong shape, dtype, negative id or id out of range.
    """
    ids = group_ids
    is_tensor = isinstance(ids, torch.Tensor)
    if not is_tensor:
        ids = np.asarray(ids)
    got_shape = tuple(ids.shape)
    if got_shape != tuple(int(v) for v in shape):
        raise ValueError(f"group_ids must have the pixels' shape {tuple(shape)}; got {got_shape}")
    integer = (
        (not ids.dtype.is_floating_point and ids.dtype != torch.bool)
        if is_tensor
        else (np.issubdtype(ids.dtype, np.integer))
    )
    if not integer:
        raise ValueError(f"group_ids must be integer region ids; got dtype {ids.dtype}")
    if ids.numel() if is_tensor else ids.size:
        low, high = int(ids.min()), int(ids.max())
        if low < 0:
            raise ValueError(
                f"group_ids must be >= 0; got {low} (pixels outside every region, id -1, are "
                "no group's members: leave them out)"
            )
        if n_groups is not None and high >= int(n_groups):
            raise ValueError(f"group_ids must be < the number of groups {n_groups}; got {high}")
    return group_ids


def region_labels(class_maps, group_ids, seed: int = 0, by_area: bool = True):
    """Group-noise labels for any regions: one class per region, drawn among those it holds.

    :func:`coarse_region_labels` for an arbitrary region map (superpixels, polygons).

    Parameters
    ----------
    class_maps : array_like, (S, H, W), int
        True class ids.
    group_ids : array_like, (S, H, W), int
        Region id of every pixel, ``>= 0`` (unique over the set; ids need not be contiguous).
    seed : int
        Draws each region's label (regions in increasing id order).
    by_area : bool
        As in :func:`coarse_region_labels`.

    Returns
    -------
    group_ids : numpy.ndarray, (S, H, W), int64
        The regions renumbered ``0 .. G-1`` in increasing order of the given ids.
    group_labels : numpy.ndarray, (G,), int64
    pixel_labels : numpy.ndarray, (S, H, W), int64
    """
    maps = np.asarray(class_maps)
    if maps.ndim != 3 or not np.issubdtype(maps.dtype, np.integer):
        raise ValueError(f"class_maps must be integer (S, H, W); got {maps.dtype} {maps.shape}")
    check_group_ids(group_ids, maps.shape)
    _, compact = np.unique(np.asarray(group_ids), return_inverse=True)
    compact = compact.reshape(maps.shape).astype(np.int64)
    n_groups = int(compact.max()) + 1
    rng = np.random.default_rng(seed)
    labels = np.zeros(n_groups, dtype=np.int64)
    order = np.argsort(compact.reshape(-1), kind="stable")
    bounds = np.searchsorted(compact.reshape(-1)[order], np.arange(n_groups + 1))
    flat_maps = maps.reshape(-1)
    for g in range(n_groups):
        values, counts = np.unique(flat_maps[order[bounds[g] : bounds[g + 1]]], return_counts=True)
        weights = counts if by_area else np.ones_like(counts)
        labels[g] = rng.choice(values, p=weights / weights.sum())
    return compact, labels, labels[compact]


def polygon_group_ids(polygons, height: int, width: int) -> np.ndarray:
    """Rasterise outlined polygons into a region map ``(H, W)`` int64 (-1 outside all).

    Pixel ``(r, c)`` belongs to polygon ``g`` when its centre ``(x, y) = (c, r)`` lies inside
    by the even-odd rule; where polygons overlap the later one wins. Region ``g`` is the
    ``g``-th polygon (a polygon that covers no pixel centre has no member).

    Parameters
    ----------
    polygons : sequence of array_like, each (V, 2)
        Vertices ``(x, y)`` in pixels (x along a row: the column; y: the row), V >= 3.
    height, width : int
        The frame in pixels (>= 1).
    """
    h, w = int(height), int(width)
    if h < 1 or w < 1:
        raise ValueError(f"height and width must be >= 1 pixel; got {height}, {width}")
    ids = np.full((h, w), -1, dtype=np.int64)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    for g, polygon in enumerate(polygons):
        vertices = np.asarray(polygon, dtype=np.float64)
        if vertices.ndim != 2 or vertices.shape[1] != 2 or len(vertices) < 3:
            raise ValueError(f"polygon {g} must be (V >= 3, 2) vertices (x, y); got "
                             f"shape {vertices.shape}")  # fmt: skip
        if not np.isfinite(vertices).all():
            raise ValueError(f"polygon {g} has non-finite vertices")
        inside = np.zeros((h, w), dtype=bool)
        x0, y0 = vertices[:, 0], vertices[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        for ax, ay, bx, by in zip(x0, y0, x1, y1, strict=True):
            crosses = (ay > yy) != (by > yy)
            if not crosses.any():
                continue
            x_at = ax + (yy - ay) * (bx - ax) / np.where(by != ay, by - ay, 1.0)
            inside ^= crosses & (xx < x_at)
        ids[inside] = g
    return ids


def _slic_scene(image: np.ndarray, n_segments: int, compactness: float, iterations: int):
    """SLIC labels ``(H, W)`` of one scene ``(H, W, F)`` (see the module docstring)."""
    h, w, _ = image.shape
    step = max(1.0, float(np.sqrt(h * w / n_segments)))
    scale = float(np.linalg.norm(image, axis=-1).mean()) or 1.0
    x = image / scale
    rows = np.arange(step / 2, h, step)
    cols = np.arange(step / 2, w, step)
    cy, cx = (v.ravel() for v in np.meshgrid(rows, cols, indexing="ij"))
    colours = x[cy.astype(int), cx.astype(int)]
    weight = (float(compactness) / step) ** 2
    radius = int(np.ceil(step))
    labels = np.zeros((h, w), dtype=np.int64)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    for _ in range(int(iterations)):
        best = np.full((h, w), np.inf)
        for k in range(len(cy)):
            r0, r1 = max(0, int(cy[k]) - radius), min(h, int(cy[k]) + radius + 1)
            c0, c1 = max(0, int(cx[k]) - radius), min(w, int(cx[k]) + radius + 1)
            d_c = ((x[r0:r1, c0:c1] - colours[k]) ** 2).sum(-1)
            d_s = (yy[r0:r1, c0:c1] - cy[k]) ** 2 + (xx[r0:r1, c0:c1] - cx[k]) ** 2
            d = d_c + weight * d_s
            closer = d < best[r0:r1, c0:c1]
            best[r0:r1, c0:c1][closer] = d[closer]
            labels[r0:r1, c0:c1][closer] = k
        counts = np.bincount(labels.ravel(), minlength=len(cy)).astype(np.float64)
        alive = counts > 0
        for array, values in ((cy, yy), (cx, xx)):
            sums = np.bincount(labels.ravel(), values.ravel(), minlength=len(cy))
            array[alive] = sums[alive] / counts[alive]
        for f in range(x.shape[-1]):
            sums = np.bincount(labels.ravel(), x[..., f].ravel(), minlength=len(cy))
            colours[alive, f] = sums[alive] / counts[alive]
    return labels


def superpixel_group_ids(
    barcodes, n_segments: int, compactness: float = 10.0, iterations: int = 10
) -> np.ndarray:
    """SLIC superpixels of every scene as a region map ``(S, H, W)`` int64, ids ``0 .. G-1``.

    Each SLIC superpixel is split into its 4-connected parts, so every region is one
    connected piece; ids are unique over the set (scene by scene, in raster order of first
    pixel within a scene).

    Parameters
    ----------
    barcodes : array_like, (S, H, W, F)
        Scenes' barcodes (filter last).
    n_segments : int
        About how many superpixels per scene (>= 1; grid step ``S = sqrt(H W / n)`` px).
    compactness : float
        SLIC's ``m`` (> 0): larger, squarer superpixels; smaller, closer to the spectra.
        The spectral distance is in units of the scene's mean barcode norm.
    iterations : int
        SLIC iterations (>= 1; the paper finds 10 enough).
    """
    from scipy import ndimage

    x = np.asarray(barcodes, dtype=np.float64)
    if x.ndim != 4 or min(x.shape) < 1:
        raise ValueError(f"barcodes must be (S, H, W, F); got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("barcodes must be finite")
    if int(n_segments) < 1 or int(iterations) < 1 or not compactness > 0:
        raise ValueError(
            f"need n_segments >= 1, iterations >= 1 and compactness > 0; got {n_segments}, "
            f"{iterations}, {compactness}"
        )
    out = np.empty(x.shape[:3], dtype=np.int64)
    offset = 0
    for s in range(x.shape[0]):
        labels = _slic_scene(x[s], int(n_segments), float(compactness), int(iterations))
        scene = np.full(labels.shape, -1, dtype=np.int64)
        for k in np.unique(labels):
            parts, count = ndimage.label(labels == k)
            scene[parts > 0] = offset + parts[parts > 0] - 1
            offset += count
        _, first = np.unique(scene.ravel(), return_index=True)  # renumber in raster order
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        _, inverse = np.unique(scene.ravel(), return_inverse=True)
        base = offset - len(first)
        out[s] = (base + rank[inverse]).reshape(labels.shape)
    return out
