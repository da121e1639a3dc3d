"""The shared anomaly-head plumbing: barcode shapes, scene labels, the BCE detector."""

import numpy as np
import pytest
import torch

from hyplex.models.openset import build_detector
from hyplex.models.openset.anomaly_head import (
    AnomalyHeadTraining,
    BCEAnomalyHead,
    as_points,
    openset_anomaly_labels,
    scene_points,
)


def test_points_and_maps_round_trip_their_shapes():
    maps = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    points, shape = as_points(maps, 3)
    assert points.shape == (40, 3) and shape == (2, 4, 5)
    assert torch.equal(points[7], maps[0, :, 1, 2])
    with pytest.raises(ValueError, match="C=4"):
        as_points(maps, 4)
    with pytest.raises(ValueError, match=r"\(N, C\) points or \(B, C, H, W\)"):
        as_points(torch.ones(3), 3)


def test_scene_labels_are_checked():
    with pytest.raises(ValueError, match="shape"):
        scene_points(torch.ones(1, 3, 4, 4), torch.zeros(1, 4, 5), 3)
    labels = openset_anomaly_labels(torch.tensor([[-1, 0, 2]]))
    assert labels.tolist() == [[1, 0, 0]]


def test_heads_are_deterministic_and_shading_invariant():
    rng = np.random.default_rng(0)
    normal = rng.uniform(0.5, 1.0, (200, 9))
    anomalous = normal[:, ::-1].copy()
    first, second = BCEAnomalyHead(9), BCEAnomalyHead(9)
    torch.manual_seed(123)  # the global RNG must not matter
    first.fit(normal, anomalous, AnomalyHeadTraining(steps=30, seed=4))
    torch.manual_seed(999)
    second.fit(normal, anomalous, AnomalyHeadTraining(steps=30, seed=4))
    assert torch.equal(first.predict(normal), second.predict(normal))
    # scaling a barcode (shading, exposure) leaves its score unchanged
    assert torch.allclose(first.predict(normal), first.predict(3.0 * normal), atol=1e-5)


def test_bce_detector_leaves_the_segmenter_alone(openset_data, closed_set_segmenter):
    before = {k: v.clone() for k, v in closed_set_segmenter.state_dict().items()}
    detector = build_detector("BCE", closed_set_segmenter, steps=20).fit(openset_data)
    assert detector.trains_segmenter is False
    assert set(detector.tensors()) == {f"head.{k}" for k in detector.head.state_dict()}
    for key, value in closed_set_segmenter.state_dict().items():
        assert torch.equal(value, before[key])
    logits, scores = detector.segment(openset_data.test.barcodes[:2])
    assert logits.shape[0] == 2 and scores.shape == (2, *openset_data.test.labels.shape[1:])


def test_detector_defaults_list_every_option():
    from hyplex.models.openset.bundle_fitting import step_options

    assert step_options("NSReg", 7) == {"steps": 7}
    assert step_options("ACT", 5) == {"source_steps": 5, "adapt_steps": 5, "self_label_steps": 5}
    from hyplex.models.openset.normal_structure import NormalStructureDetector

    assert {"cell", "weight", "steps"} <= set(NormalStructureDetector.defaults)


def test_head_features_read_shape_not_brightness(openset_data, closed_set_segmenter):
    """The detector's head reads the barcode's shape and the segmenter's belief, never its
    brightness (shading, exposure): with the segmenter's logits held fixed, a barcode 3x
    brighter gets the same features and the same score."""
    from hyplex.models.openset.anomaly_head import head_features

    x = openset_data.test.barcodes[:2].clamp_min(1e-3)  # positive (noise can go below 0)
    with torch.no_grad():
        logits = closed_set_segmenter(x)
    features = head_features(x, logits)
    assert features.shape[1] == x.shape[1] + logits.shape[1]  # C + K, no brightness channel
    assert torch.allclose(features, head_features(3.0 * x, logits), atol=1e-5)
    detector = build_detector("CEDL", closed_set_segmenter, steps=10).fit(openset_data)
    assert torch.allclose(
        detector.scores_from(logits, x), detector.scores_from(logits, 3.0 * x), atol=1e-4
    )
