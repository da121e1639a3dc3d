"""Coverage: is a captured spectrum (or barcode) inside the convex hull of the training data?

S. Zhang, Y. Luo, Q. Wang, H. Chi, X. Chen, B. Han, J. Gao, J. Li, "Mixture Data for Training
Cannot Ensure Out-of-distribution Generalization", arXiv:2312.16243. The paper defines OOD
data *quantitatively* as data outside the convex hull ``Con(E_s)`` of the training mixture:
its risk bound guarantees generalisation to unseen data inside the hull, and none outside,
however much training data there is. It then selects *diverse* training data that widen the
hull.

Here the training mixture is the set of training barcodes (or spectra) ``X (N, D)`` and a
captured pixel ``p (D,)`` is covered when it is a convex combination of them::

    p in Con(X)   <=>   exists lambda >= 0, sum_i lambda_i = 1, X^T lambda = p

an exact linear feasibility problem, solved with ``scipy.optimize.linprog`` (HiGHS) after two
exact shortcuts: a point outside the bounding box of ``X`` is outside; a point equal to a
training point is inside. ``tolerance`` absorbs float rounding of the equality constraint.

* :func:`in_hull` / :func:`outside_share` answer per point and as a share of pixels;
* :func:`coverage_map` does so for barcode maps ``(H, W, D)`` (strided for speed);
* :func:`select_diverse` is the data selection: it greedily adds the pool point that is
  extreme in the direction of an uncovered target (a support point, so a hull vertex of the
  pool), until ``k`` are chosen or every target is covered.

Whether a held-out *category* is really unseen (:func:`category_novelty`) is the same
question asked of a whole material class with a nearest-neighbour distance instead of the
hull: a test category whose spectral shapes ``x / mean(x)`` lie as close to some training
spectrum as the known classes' spectra lie to each other (their median leave-one-out
nearest-neighbour distance within a class) is *seen* in effect, whatever its name. On the
twin's 400-1000 nm grid earthlib's "concrete" is such a case: its median distance to the
nearest "road"/"roof" spectrum is 0.013, below the known classes' 0.015 (README, issue 15
part B).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "in_hull",
    "outside_share",
    "coverage_map",
    "select_diverse",
    "hull_vertices",
    "nearest_shape_distance",
    "category_novelty",
]


def _points(values, name: str, dim: int | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) array of points; got {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(
            f"{name} have {array.shape[1]} channels but the training points have {dim}: "
            "mismatched channel counts"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    return array


def _feasible(training: np.ndarray, point: np.ndarray, tolerance: float) -> bool:
    from scipy.optimize import linprog

    n, d = training.shape
    # equality X^T lambda = p relaxed to |X^T lambda - p| <= tolerance (two inequalities)
    a_ub = np.vstack([training.T, -training.T])
    b_ub = np.concatenate([point + tolerance, -(point - tolerance)])
    result = linprog(
        np.zeros(n),
        A_ub=a_ub,
        b_ub=b_ub,
        A_eq=np.ones((1, n)),
        b_eq=[1.0],
        bounds=(0, None),
        method="highs",
    )
    if result.status not in (0, 2):
        raise RuntimeError(f"the hull membership LP failed: {result.message}")
    return result.status == 0


def in_hull(points, training, tolerance: float = 1e-9, progress: bool = False) -> np.ndarray:
    """Exact convex-hull membership of ``points (M, D)`` in ``Con(training (N, D))``.

    Parameters
    ----------
    points, training : (M, D), (N, D) float arrays in the same units (barcodes or
        reflectances).
    tolerance : absolute slack on each coordinate of ``X^T lambda = p`` (float rounding).
    progress : show a tqdm bar over the linear programs.

    Returns
    -------
    (M,) bool, True inside (or on) the hull.
    """
    from tqdm.auto import tqdm

    training = _points(training, "training points")
    points = _points(points, "points", training.shape[1])
    low, high = training.min(0) - tolerance, training.max(0) + tolerance
    inside = np.zeros(len(points), dtype=bool)
    boxed = ((points >= low) & (points <= high)).all(1)
    for i in tqdm(np.flatnonzero(boxed), desc="convex hull", disable=not progress):
        if (np.abs(training - points[i]).max(1) <= tolerance).any():
            inside[i] = True
        else:
            inside[i] = _feasible(training, points[i], tolerance)
    return inside


def hull_vertices(training, tolerance: float = 1e-9) -> np.ndarray:
    """Indices of the training points that are not convex combinations of the others (the
    hull's vertices); membership in the hull of these equals membership in the full hull."""
    training = _points(training, "training points")
    _, first = np.unique(training, axis=0, return_index=True)
    keep = np.sort(first)
    out = []
    for i in keep:
        others = training[keep[keep != i]]
        if len(others) == 0 or not _feasible(others, training[i], tolerance):
            out.append(int(i))
    return np.asarray(out, dtype=np.int64)


def outside_share(points, training, tolerance: float = 1e-9, progress: bool = False) -> float:
    """Fraction of ``points (M, D)`` outside ``Con(training)``, in [0, 1]."""
    return float(1.0 - in_hull(points, training, tolerance, progress).mean())


def coverage_map(
    barcodes, training, stride: int = 1, tolerance: float = 1e-9, progress: bool = False
) -> np.ndarray:
    """Hull membership of a barcode map.

    Parameters
    ----------
    barcodes : (H, W, D) map (or (D, H, W) when ``D`` matches the training points' and the
        last axis does not).
    training : (N, D) training points.
    stride : test every ``stride``-th pixel in both axes and repeat the answer over the
        ``stride x stride`` block (1 = every pixel, exact).

    Returns
    -------
    (H, W) bool, True where the pixel lies outside the hull.
    """
    training = _points(training, "training points")
    values = np.asarray(barcodes, dtype=np.float64)
    d = training.shape[1]
    if values.ndim == 3 and values.shape[-1] != d and values.shape[0] == d:
        values = values.transpose(1, 2, 0)
    if values.ndim != 3:
        raise ValueError(f"barcodes must be an (H, W, D) map; got shape {values.shape}")
    if values.shape[-1] != d:
        raise ValueError(
            f"barcodes have {values.shape[-1]} channels but the training points have {d}: "
            "mismatched channel counts"
        )
    if int(stride) < 1:
        raise ValueError(f"stride must be an integer >= 1; got {stride}")
    stride = int(stride)
    height, width = values.shape[:2]
    sampled = values[::stride, ::stride]
    inside = in_hull(sampled.reshape(-1, d), training, tolerance, progress)
    outside = ~inside.reshape(sampled.shape[:2])
    full = np.repeat(np.repeat(outside, stride, axis=0), stride, axis=1)
    return full[:height, :width]


def select_diverse(pool, targets, k: int, seed: int = 0, tolerance: float = 1e-9) -> np.ndarray:
    """Greedy diverse selection of ``k`` training points that cover ``targets``.

    Start from the pool point nearest the targets' mean; then, while targets lie outside the
    hull of the selection, take one of them (at random, ``seed``) and add the pool point that
    is extreme in its direction from the selection's centroid, ``argmax_i <x_i - c, t - c>``
    (a support point, hence a vertex of the pool's hull). Stops at ``k`` points, when all
    targets are covered, or when the pool has nothing further in any uncovered direction.

    Parameters
    ----------
    pool : (N, D) candidate training points.
    targets : (M, D) captured points to cover (unlabelled).
    k : the most points to select.

    Returns
    -------
    (<= k,) int64 indices into ``pool``, in the order chosen.
    """
    pool = _points(pool, "pool")
    targets = _points(targets, "targets", pool.shape[1])
    if int(k) < 1:
        raise ValueError(f"k must be an integer >= 1; got {k}")
    rng = np.random.default_rng(seed)
    chosen = [int(np.argmin(np.linalg.norm(pool - targets.mean(0), axis=1)))]
    while len(chosen) < int(k):
        outside = ~in_hull(targets, pool[chosen], tolerance)
        if not outside.any():
            break
        order = rng.permutation(np.flatnonzero(outside))
        added = False
        centre = pool[chosen].mean(0)
        for j in order:
            direction = targets[j] - centre
            gains = (pool - centre) @ direction
            gains[chosen] = -np.inf
            best = int(np.argmax(gains))
            if np.isfinite(gains[best]) and gains[best] > 0:
                chosen.append(best)
                added = True
                break
        if not added:
            break
    return np.asarray(chosen, dtype=np.int64)


def _shapes(values, name: str) -> np.ndarray:
    array = _points(values, name)
    if (array < 0).any():
        raise ValueError(f"{name} must be non-negative spectra (reflectance or barcodes)")
    return array / np.maximum(array.mean(1, keepdims=True), 1e-12)


def nearest_shape_distance(points, training, batch_size: int = 512) -> np.ndarray:
    """RMS distance from each spectral shape of ``points`` to the nearest training shape.

    The shape of a spectrum ``x (L,)`` is ``x / mean(x)`` (brightness removed), and the
    distance of two shapes is ``sqrt(mean_l (a_l - b_l)^2)``.

    Parameters
    ----------
    points : (M, L) non-negative spectra (unitless reflectance, or barcodes).
    training : (N, L) non-negative spectra in the same unit and on the same grid.
    batch_size : points compared at a time (memory ``batch_size x N x L``).

    Returns
    -------
    (M,) float64, unitless (a fraction of the mean level).
    """
    training = _shapes(training, "training spectra")
    points = _shapes(points, "points")
    if points.shape[1] != training.shape[1]:
        raise ValueError(
            f"points have {points.shape[1]} bands but the training spectra {training.shape[1]}"
        )
    out = np.empty(len(points))
    for start in range(0, len(points), int(batch_size)):
        chunk = points[start : start + int(batch_size)]
        squared = ((chunk[:, None, :] - training[None]) ** 2).mean(-1)
        out[start : start + len(chunk)] = np.sqrt(squared.min(1))
    return out


def category_novelty(categories: dict, training, training_labels, reference_labels=None) -> dict:
    """Which held-out categories are unseen in effect by the training spectra.

    A category is *novel* when the median, over its spectra, of the nearest-training shape
    distance (:func:`nearest_shape_distance`) exceeds the reference: the median leave-one-out
    nearest-neighbour distance of the ``reference_labels`` spectra within their own label (how
    far a new sample of a *trained* class typically lies from the training set).

    Parameters
    ----------
    categories : dict of str -> (M_k, L) array
        Spectra of each held-out category.
    training : (N, L) array
        Every spectrum training may see (known classes, backgrounds, auxiliary outliers).
    training_labels : sequence of str, (N,)
        Label of each training spectrum.
    reference_labels : sequence of str, optional
        Labels that set the reference (default: every training label with >= 2 spectra).

    Returns
    -------
    dict of str -> dict
        Per category: ``median_distance``, ``reference`` (unitless), ``seen_share`` (share of
        its spectra nearer than the reference) and ``novel`` (bool).
    """
    training = np.asarray(training, dtype=np.float64)
    labels = np.asarray(list(training_labels))
    if labels.shape != (len(training),):
        raise ValueError(
            f"training_labels must give one label per training spectrum ({len(training)}); "
            f"got {labels.shape}"
        )
    names = sorted(set(labels.tolist())) if reference_labels is None else list(reference_labels)
    within = []
    for name in names:
        members = training[labels == name]
        if len(members) < 2:
            if reference_labels is not None:
                raise ValueError(f"reference label {name!r} needs >= 2 training spectra")
            continue
        shapes = _shapes(members, f"training spectra of {name!r}")
        squared = ((shapes[:, None, :] - shapes[None]) ** 2).mean(-1)
        np.fill_diagonal(squared, np.inf)
        within.append(np.sqrt(squared.min(1)))
    if not within:
        raise ValueError("no training label has >= 2 spectra to set the reference distance")
    reference = float(np.median(np.concatenate(within)))
    out = {}
    for name, spectra in categories.items():
        distance = nearest_shape_distance(spectra, training)
        median = float(np.median(distance))
        out[str(name)] = {
            "median_distance": median,
            "reference": reference,
            "seen_share": float((distance < reference).mean()),
            "novel": bool(median > reference),
        }
    return out
