"""Auto-labels: k-means of spectral shapes named by clicks or references, a band-ratio threshold,
and on a twin scene labels right well above chance, wrong where spectra lie near a boundary."""

import numpy as np
import pytest

from hyplex.models.noisy_labels.auto_labels import (
    band_ratio_index,
    box_mean_barcodes,
    cluster_auto_labels,
    kmeans,
    name_clusters_by_annotation,
    reference_barcodes,
    spectral_shape,
    threshold_auto_labels,
)

GRID_NM = np.linspace(400.0, 1000.0, 31)


def _blobs(seed=0, per=200):
    rng = np.random.default_rng(seed)
    centres = np.array([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]])
    points = np.concatenate([c + 0.03 * rng.standard_normal((per, 3)) for c in centres])
    return points, np.repeat(np.arange(3), per)


def test_kmeans_recovers_separated_clusters_and_is_deterministic_per_seed():
    points, truth = _blobs()
    centres, distance = kmeans(points, 3, seed=4)
    assignment = distance.argmin(1)
    # each true cluster maps to one k-means cluster and back
    for k in range(3):
        assert np.unique(assignment[truth == k]).size == 1
    assert np.unique(assignment).size == 3
    again, _ = kmeans(points, 3, seed=4)
    np.testing.assert_array_equal(centres, again)
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans(points, 0)
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        kmeans(points[0], 2)


def test_clusters_follow_the_spectral_shape_not_the_brightness():
    points, truth = _blobs(1)
    brightness = np.random.default_rng(2).uniform(0.05, 5.0, (len(points), 1))
    clicks = np.array([0, 200, 400])  # one named pixel per blob
    auto = cluster_auto_labels(
        points * brightness, 3, 3, annotated_index=clicks, annotated_labels=truth[clicks]
    )
    np.testing.assert_array_equal(auto.labels, truth)
    np.testing.assert_allclose(np.linalg.norm(spectral_shape(points * brightness), axis=1), 1.0)
    assert (auto.margin > 0).all() and (auto.margin <= 1).all()


def test_unannotated_clusters_take_the_nearest_named_cluster():
    centres = np.array([[0.0, 0.0], [0.0, 1.0], [10.0, 10.0], [10.0, 11.0]])
    assignment = np.array([0, 1, 2, 3])
    names = name_clusters_by_annotation(assignment, centres, np.array([0, 2]), np.array([4, 7]), 8)
    np.testing.assert_array_equal(names, [4, 4, 7, 7])
    with pytest.raises(ValueError, match="annotated_labels must lie"):
        name_clusters_by_annotation(assignment, centres, np.array([0]), np.array([8]), 8)
    with pytest.raises(ValueError, match="annotated_index must lie"):
        name_clusters_by_annotation(assignment, centres, np.array([9]), np.array([1]), 8)


def test_clusters_named_by_library_spectra_through_the_encoder():
    from hyplex.models.encoder_baselines import FixedResponseEncoder

    centres_nm = np.linspace(420.0, 980.0, 9)
    responses = np.exp(-0.5 * ((GRID_NM[None] - centres_nm[:, None]) / 40.0) ** 2)
    encoder = FixedResponseEncoder(responses, GRID_NM)
    leaf = 0.05 + 0.45 / (1 + np.exp(-(GRID_NM - 715.0) / 12.0))  # red edge
    brick = np.linspace(0.1, 0.5, GRID_NM.size)  # rising slowly
    references = reference_barcodes(encoder, np.stack([leaf, brick]))
    assert references.shape == (2, 9)
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 100)
    scale = rng.uniform(0.3, 1.0, (200, 1))
    pixels = references[truth] * scale * (1 + 0.02 * rng.standard_normal((200, 9)))
    auto = cluster_auto_labels(
        pixels, 4, 2, references=references, reference_labels=np.array([0, 1]), seed=1
    )
    np.testing.assert_array_equal(auto.labels, truth)
    with pytest.raises(ValueError, match="either by annotations"):
        cluster_auto_labels(pixels, 4, 2)


def test_band_ratio_threshold_labels_vegetation_by_its_red_edge():
    red, nir = 3, 6  # filters centred at 630 and 840 nm
    barcodes = np.zeros((3, 9))
    barcodes[0, [red, nir]] = [0.05, 0.5]  # leaf: red absorbed, NIR scattered
    barcodes[1, [red, nir]] = [0.3, 0.35]  # soil
    barcodes[2, [red, nir]] = [0.0, 0.0]  # dark
    index = band_ratio_index(barcodes, nir, red)
    np.testing.assert_allclose(index, [0.45 / 0.55, 0.05 / 0.65, 0.0])
    np.testing.assert_array_equal(threshold_auto_labels(index, 0.4, 1, -100), [1, -100, -100])
    with pytest.raises(ValueError, match="distinct filter indices"):
        band_ratio_index(barcodes, 3, 3)


def test_box_mean_averages_a_window_and_refuses_an_even_one():
    barcodes = np.zeros((1, 5, 5, 2))
    barcodes[0, 2, 2] = 9.0
    smoothed = box_mean_barcodes(barcodes, 3)
    np.testing.assert_allclose(smoothed[0, 1:4, 1:4], 1.0)
    assert smoothed[0, 0, 0, 0] == 0.0
    with pytest.raises(ValueError, match="odd"):
        box_mean_barcodes(barcodes, 2)


def test_twin_auto_labels_are_right_well_above_chance_and_wrong_near_cluster_boundaries():
    """8 twin scenes of 32 x 32 px (9 Gaussian filters, as the benchmark): 100 clicked pixels
    name 32 clusters of 3 x 3-averaged spectral shapes. When written: accuracy 0.769 (the
    majority class alone: 0.641), balanced accuracy 0.480 (chance 1/6), label mIoU 0.406;
    error rate 0.326 in the quarter of pixels nearest a cluster boundary, 0.113 in the quarter
    farthest from one."""
    from hyplex.models.data import generate_scenes
    from hyplex.models.encoder_baselines import FixedResponseEncoder
    from hyplex.models.label_metrics import mean_iou
    from hyplex.models.unlearning.segmenter_forgetting import encode_scenes

    centres_nm = np.linspace(420.0, 980.0, 9)
    responses = np.exp(-0.5 * ((GRID_NM[None] - centres_nm[:, None]) / 40.0) ** 2)
    encoder = FixedResponseEncoder(responses, GRID_NM)
    classes = ("vegetation", "soil", "paint", "metal")
    scenes = generate_scenes(GRID_NM, 8, 3, (32, 32), classes=classes)
    coded = encode_scenes(encoder, scenes, seed=3)
    barcodes = box_mean_barcodes(coded.barcodes.permute(0, 2, 3, 1).numpy(), 3).reshape(-1, 9)
    truth = coded.labels.numpy().reshape(-1)
    k = scenes.n_classes
    clicks = np.random.default_rng(0).choice(len(truth), 100, replace=False)
    auto = cluster_auto_labels(
        barcodes, 32, k, annotated_index=clicks, annotated_labels=truth[clicks], seed=0
    )
    accuracy = (auto.labels == truth).mean()
    majority = np.bincount(truth).max() / len(truth)
    balanced = np.mean([(auto.labels[truth == c] == c).mean() for c in np.unique(truth)])
    assert accuracy > majority + 0.08, (accuracy, majority)
    assert balanced > 2.5 / k, balanced
    assert mean_iou(auto.labels, truth, k) > 3 * majority / k  # the majority rule's mIoU
    # instance-dependent: the errors sit where the spectrum is near another cluster
    wrong = auto.labels != truth
    near, far = np.quantile(auto.margin, [0.25, 0.75])
    assert wrong[auto.margin <= near].mean() > 2 * wrong[auto.margin >= far].mean()
    # and whole clusters are right or wrong: the noise is a function of the spectrum
    per_cluster = np.array([wrong[auto.clusters == c].mean() for c in np.unique(auto.clusters)])
    assert per_cluster.min() < 0.1 and per_cluster.max() > 0.6, per_cluster
