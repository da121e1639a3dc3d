"""Auto-labels: training labels from unlabelled barcodes, as a lab makes them with few annotations.

What a lab does when it has a video of a scene and (almost) no annotation, followed here:

* **cluster, then name the clusters** (the "cluster-then-label" scheme of semi-supervised
  learning; X. Zhu, A. B. Goldberg, "Introduction to Semi-Supervised Learning", Morgan &
  Claypool 2009, ch. 3): k-means (S. P. Lloyd, "Least squares quantization in PCM", IEEE
  Trans. Inf. Theory 28(2), 1982, Lloyd's iteration; D. Arthur, S. Vassilvitskii,
  "k-means++: The Advantages of Careful Seeding", SODA 2007, its D^2 seeding) of each pixel's
  *spectral shape*, the barcode divided by its Euclidean norm, so that shading and
  illumination level drop out and the Euclidean distance between shapes is a monotone
  function of the spectral angle (the spectral angle mapper: F. A. Kruse et al., "The
  Spectral Image Processing System (SIPS) - Interactive Visualization and Analysis of Imaging
  Spectrometer Data", Remote Sens. Environ. 44, 1993). Optionally the barcodes are first
  averaged over a small square window (``window``), as one smooths a short-exposure frame
  against shot noise before clustering. Each cluster is then named either by the few
  annotated pixels that fall in it (majority vote; a cluster with none takes the name of the
  nearest named cluster centre), :func:`name_clusters_by_annotation`, or by the nearest
  reference spectrum, library spectra passed through the encoder
  (:func:`reference_barcodes`, :func:`name_clusters_by_reference`);
* **a threshold on a band-ratio index** (the normalised difference vegetation index: J. W.
  Rouse et al., "Monitoring vegetation systems in the Great Plains with ERTS", NASA SP-351,
  1974; C. J. Tucker, "Red and photographic infrared linear combinations for monitoring
  vegetation", Remote Sens. Environ. 8, 1979): ``(b_nir - b_red) / (b_nir + b_red)`` of two
  filters, above a threshold one class (:func:`band_ratio_index`,
  :func:`threshold_auto_labels`).

Their noise is **instance-dependent**: a pixel's auto-label is wrong where its spectrum lies
near another class's cluster (k-means) or near the threshold (index), so whether and how a
label is wrong is a function of the spectrum, not a coin flip independent of it. That is the
setting of :mod:`hyplex.models.noisy_labels.instance_dependent` (IDLN). :class:`AutoLabels`
carries each pixel's *margin* to the next cluster, ``(d_2 - d_1) / (d_2 + d_1)`` of its
shape's distances to the nearest and second-nearest centre (0 on a cluster boundary): the
errors concentrate at small margins (``tests/models/noisy_labels/test_auto_labels.py``).

What IDLN makes of them (``benchmarks/learning_methods.py --quick --only noisy_labels``, row
``auto_labels``: 3 x 3 box, 32 clusters, 100 clicked pixels, 1200 steps): CE 0.450, IDLN 0.453
held-out mIoU on seeds 0-2, CE 0.511, IDLN 0.482 on development seeds 10-12. IDLN does not
beat CE here: the errors of a clustering are whole regions of spectral space, which the
classifier fits as readily as the true classes, so it never doubts them and their confusing
probability stays near that of the right labels (README, *Auto-labels*).

Arrays: barcodes ``(N, F)`` (pixels, filter values; non-negative), or ``(S, H, W, F)`` for the
spatial window. Randomness (k-means++ seeding) takes a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "AutoLabels",
    "band_ratio_index",
    "box_mean_barcodes",
    "cluster_auto_labels",
    "kmeans",
    "name_clusters_by_annotation",
    "name_clusters_by_reference",
    "reference_barcodes",
    "spectral_shape",
    "threshold_auto_labels",
]


def _points(barcodes, name="barcodes") -> np.ndarray:
    x = np.asarray(barcodes, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must be (N, F) with N, F >= 1; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite")
    return x


def spectral_shape(barcodes) -> np.ndarray:
    """Each barcode over its Euclidean norm: ``(N, F)`` unit rows (brightness removed).

    ``|a - b|^2 = 2 - 2 cos(angle)`` for unit rows, so k-means on shapes clusters by spectral
    angle. An all-zero barcode stays zero.

    Parameters
    ----------
    barcodes : array_like, (N, F)
        Filter values (any linear unit: counts, normalised barcodes).
    """
    x = _points(barcodes)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def box_mean_barcodes(barcodes, window: int) -> np.ndarray:
    """Barcodes averaged over a ``window x window`` pixel box (edges: nearest pixel repeated).

    Parameters
    ----------
    barcodes : array_like, (S, H, W, F)
        Scenes' barcodes, filter last.
    window : int
        Box side in pixels (odd, >= 1; 1 returns a copy).

    Returns
    -------
    numpy.ndarray, (S, H, W, F), float64
    """
    from scipy.ndimage import uniform_filter

    x = np.asarray(barcodes, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(f"barcodes must be (S, H, W, F); got shape {x.shape}")
    if int(window) < 1 or int(window) % 2 == 0:
        raise ValueError(f"window must be an odd number of pixels >= 1; got {window}")
    if int(window) == 1:
        return x.copy()
    return uniform_filter(x, size=(1, int(window), int(window), 1), mode="nearest")


def _squared_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None]
    return np.maximum(d, 0.0)


def kmeans(points, n_clusters: int, seed: int = 0, iterations: int = 100, tol: float = 1e-8):
    """k-means: k-means++ (D^2) seeding, then Lloyd's iteration until no centre moves.

    Parameters
    ----------
    points : array_like, (N, D)
    n_clusters : int
        ``1 <= n_clusters <= N``.
    seed : int
        Draws the seeding.
    iterations : int
        At most this many Lloyd steps (>= 1).
    tol : float
        Stop once the largest squared centre shift is below this.

    Returns
    -------
    centres : numpy.ndarray, (C, D)
    squared_distances : numpy.ndarray, (N, C)
        Of every point to every final centre (the assignment is its row argmin).
    """
    x = _points(points, "points")
    n = len(x)
    k = int(n_clusters)
    if not 1 <= k <= n:
        raise ValueError(f"n_clusters must lie in [1, N={n}]; got {n_clusters}")
    if int(iterations) < 1:
        raise ValueError(f"iterations must be >= 1; got {iterations}")
    rng = np.random.default_rng(seed)
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(n)]
    nearest = _squared_distances(x, centres[:1])[:, 0]
    for j in range(1, k):
        total = nearest.sum()
        index = rng.choice(n, p=nearest / total) if total > 0 else rng.integers(n)
        centres[j] = x[index]
        nearest = np.minimum(nearest, _squared_distances(x, centres[j : j + 1])[:, 0])
    for _ in range(int(iterations)):
        assignment = _squared_distances(x, centres).argmin(1)
        sums = np.zeros_like(centres)
        np.add.at(sums, assignment, x)
        counts = np.bincount(assignment, minlength=k)[:, None]
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centres)  # empty: stays
        shift = ((new - centres) ** 2).sum(1).max()
        centres = new
        if shift < tol:
            break
    return centres, _squared_distances(x, centres)


def name_clusters_by_annotation(
    assignment, centres, annotated_index, annotated_labels, n_classes: int
) -> np.ndarray:
    """Class of every cluster from the few annotated pixels (majority vote in the cluster).

    A cluster that holds no annotated pixel takes the name of the nearest centre that does.
    Ties go to the lower class id.

    Parameters
    ----------
    assignment : array_like, (N,), int
        Cluster of every pixel, in ``[0, C)``.
    centres : array_like, (C, D)
        Cluster centres (spectral shapes).
    annotated_index : array_like, (A,), int
        Indices of the annotated pixels in ``[0, N)`` (A >= 1).
    annotated_labels : array_like, (A,), int
        Their classes in ``[0, n_classes)``.
    n_classes : int

    Returns
    -------
    numpy.ndarray, (C,), int64
    """
    assignment = np.asarray(assignment)
    centres = _points(centres, "centres")
    index = np.asarray(annotated_index)
    labels = np.asarray(annotated_labels)
    if index.ndim != 1 or labels.shape != index.shape or index.size < 1:
        raise ValueError(
            f"annotated_index and annotated_labels must be (A,) with A >= 1; got {index.shape},"
            f" {labels.shape}"
        )
    if not (np.issubdtype(index.dtype, np.integer) and np.issubdtype(labels.dtype, np.integer)):
        raise ValueError("annotated_index and annotated_labels must be integers")
    if index.min() < 0 or index.max() >= len(assignment):
        raise ValueError(f"annotated_index must lie in [0, N={len(assignment)})")
    if labels.min() < 0 or labels.max() >= int(n_classes):
        raise ValueError(f"annotated_labels must lie in [0, n_classes={n_classes})")
    k = len(centres)
    votes = np.zeros((k, int(n_classes)))
    np.add.at(votes, (assignment[index], labels), 1.0)
    names = votes.argmax(1).astype(np.int64)
    named = votes.sum(1) > 0
    if not named.all():
        distance = _squared_distances(centres, centres)
        distance[:, ~named] = np.inf
        names[~named] = names[distance[~named].argmin(1)]
    return names


def reference_barcodes(encoder, reflectances) -> np.ndarray:
    """Noise-free barcodes ``(M, F)`` of reference spectra through an encoder.

    Parameters
    ----------
    encoder : hyplex.models.encoder.SpectralEncoder
        Called as ``encoder(cube (1, L, 1, M), noise=False) -> (1, F, 1, M)``.
    reflectances : array_like, (M, L)
        Library spectra (apparent reflectance, unitless) on the encoder's grid.
    """
    import torch

    spectra = _points(reflectances, "reflectances")
    cube = torch.as_tensor(spectra.T[None, :, None, :], dtype=torch.float32)
    with torch.no_grad():
        codes = encoder(cube, noise=False)
    return codes[0, :, 0, :].T.double().cpu().numpy()


def name_clusters_by_reference(centres, references, reference_labels) -> np.ndarray:
    """Class of every cluster: that of the reference barcode nearest in spectral angle.

    Parameters
    ----------
    centres : array_like, (C, F)
        Cluster centres of spectral shapes.
    references : array_like, (M, F)
        Reference barcodes (:func:`reference_barcodes`).
    reference_labels : array_like, (M,), int
        Their classes (>= 0).

    Returns
    -------
    numpy.ndarray, (C,), int64
    """
    c = spectral_shape(centres)
    r = spectral_shape(references)
    labels = np.asarray(reference_labels)
    if c.shape[1] != r.shape[1]:
        raise ValueError(f"centres have {c.shape[1]} filters, references {r.shape[1]}")
    if labels.shape != (len(r),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"reference_labels must be ({len(r)},) integers; got {labels.shape}")
    return labels[(c @ r.T).argmax(1)].astype(np.int64)


@dataclass(frozen=True)
class AutoLabels:
    """Result of :func:`cluster_auto_labels`.

    Attributes
    ----------
    labels : numpy.ndarray, (N,), int64
        Auto-label of every pixel.
    clusters : numpy.ndarray, (N,), int64
        Its cluster.
    margin : numpy.ndarray, (N,), float
        ``(d_2 - d_1) / (d_2 + d_1)`` in [0, 1] of its shape's distances to the nearest and
        second-nearest centre (0 on a boundary; 1 with one cluster).
    cluster_names : numpy.ndarray, (C,), int64
        Class of every cluster.
    centres : numpy.ndarray, (C, F)
        Cluster centres (spectral shapes).
    """

    labels: np.ndarray
    clusters: np.ndarray
    margin: np.ndarray
    cluster_names: np.ndarray
    centres: np.ndarray


def cluster_auto_labels(
    barcodes,
    n_clusters: int,
    n_classes: int,
    annotated_index=None,
    annotated_labels=None,
    references=None,
    reference_labels=None,
    seed: int = 0,
    iterations: int = 100,
) -> AutoLabels:
    """Auto-labels by k-means of spectral shapes, clusters named by annotations or references.

    Give either ``annotated_index`` and ``annotated_labels`` (a few pixels a person named) or
    ``references`` and ``reference_labels`` (library spectra through the encoder).

    Parameters
    ----------
    barcodes : array_like, (N, F)
        The pixels to label (already window-averaged if wanted: :func:`box_mean_barcodes`).
    n_clusters : int
        k of k-means (more clusters than classes: a class spans several spectral shapes).
    n_classes : int
        Classes of the label set (>= 2).
    annotated_index, annotated_labels : array_like, (A,), int, optional
    references : array_like, (M, F), optional
    reference_labels : array_like, (M,), int, optional
    seed, iterations : see :func:`kmeans`.

    Returns
    -------
    AutoLabels
    """
    if int(n_classes) < 2:
        raise ValueError(f"n_classes must be >= 2; got {n_classes}")
    by_annotation = annotated_index is not None or annotated_labels is not None
    by_reference = references is not None or reference_labels is not None
    if by_annotation == by_reference:
        raise ValueError(
            "name the clusters either by annotations (annotated_index, annotated_labels) or "
            "by references (references, reference_labels), not both nor neither"
        )
    shapes = spectral_shape(barcodes)
    centres, distance = kmeans(shapes, n_clusters, seed, iterations)
    clusters = distance.argmin(1).astype(np.int64)
    if by_annotation:
        if annotated_index is None or annotated_labels is None:
            raise ValueError("annotated_index and annotated_labels go together")
        names = name_clusters_by_annotation(
            clusters, centres, annotated_index, annotated_labels, n_classes
        )
    else:
        if references is None or reference_labels is None:
            raise ValueError("references and reference_labels go together")
        names = name_clusters_by_reference(centres, references, reference_labels)
        if names.min() < 0 or names.max() >= int(n_classes):
            raise ValueError(f"reference_labels must lie in [0, n_classes={n_classes})")
    if len(centres) > 1:
        ordered = np.sqrt(np.partition(distance, 1, axis=1)[:, :2])
        margin = (ordered[:, 1] - ordered[:, 0]) / np.maximum(ordered.sum(1), 1e-12)
    else:
        margin = np.ones(len(shapes))
    return AutoLabels(names[clusters], clusters, margin, names, centres)


def band_ratio_index(barcodes, high: int, low: int) -> np.ndarray:
    """Normalised difference ``(b_high - b_low) / (b_high + b_low)`` of two filters, ``(N,)``.

    With ``high`` a near-infrared filter and ``low`` a red one it is the NDVI of the filter
    pair (Rouse et al. 1974): near +1 on green vegetation (red absorbed by chlorophyll, NIR
    scattered by the leaf), near 0 or below on soil, paint, metal. A pixel with
    ``b_high + b_low = 0`` gets 0.

    Parameters
    ----------
    barcodes : array_like, (N, F)
        Non-negative filter values.
    high, low : int
        Filter indices in ``[0, F)`` (distinct).
    """
    x = _points(barcodes)
    f = x.shape[1]
    if not (0 <= int(high) < f and 0 <= int(low) < f) or int(high) == int(low):
        raise ValueError(f"high and low must be distinct filter indices in [0, {f}); got "
                         f"{high}, {low}")  # fmt: skip
    a, b = x[:, int(high)], x[:, int(low)]
    total = a + b
    return np.where(total != 0, (a - b) / np.where(total != 0, total, 1.0), 0.0)


def threshold_auto_labels(index, threshold: float, above: int, below: int) -> np.ndarray:
    """Labels by a threshold on an index: ``above`` where ``index > threshold``, else ``below``.

    ``below`` may be ``-100`` (the ignore index of :func:`torch.nn.functional.cross_entropy`)
    when the rule says nothing about the pixels under the threshold.

    Parameters
    ----------
    index : array_like, (N,)
        E.g. :func:`band_ratio_index`.
    threshold : float
    above, below : int
        Classes.

    Returns
    -------
    numpy.ndarray, (N,), int64
    """
    values = np.asarray(index, dtype=np.float64)
    if values.ndim != 1 or not np.isfinite(values).all():
        raise ValueError(f"index must be a finite (N,) array; got shape {values.shape}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite; got {threshold}")
    return np.where(values > threshold, int(above), int(below)).astype(np.int64)
