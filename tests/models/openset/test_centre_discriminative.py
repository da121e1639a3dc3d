"""CEDL: the radial logit by hand, and an unseen anomaly type that CEDL flags and the plain
BCE head (the same network with a linear logit) misses."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from hyplex.models.openset import build_detector, ood_metrics
from hyplex.models.openset.anomaly_head import AnomalyHeadTraining, BCEAnomalyHead
from hyplex.models.openset.centre_discriminative import CEDLAnomalyHead, radial_logit

C = 9
BASE = np.linspace(0.5, 1.5, C)
SEEN = np.r_[np.full(4, 0.4), np.full(5, -0.2)]  # a seen anomaly's spectral deviation


def materials(rng, deviation, count):
    """Barcodes of one material: shape ``BASE + deviation``, 3 % noise, random brightness."""
    noise = 1 + 0.03 * rng.standard_normal((count, C))
    return (BASE + deviation)[None] * noise * rng.uniform(0.5, 2.0, (count, 1))


def test_radial_logit_by_hand():
    r = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    out = radial_logit(r, torch.zeros(2), torch.tensor(2.0), torch.tensor(1.0))
    assert torch.allclose(out, torch.tensor([2 / math.sqrt(2) * 5 - 1, -1.0]))
    with pytest.raises(ValueError, match="centre"):
        radial_logit(r, torch.zeros(3), torch.tensor(1.0), torch.tensor(0.0))


def test_cedl_flags_an_unseen_anomaly_type_that_bce_misses():
    rng = np.random.default_rng(0)
    wobble = 0.1 * np.sin(np.arange(C))
    normal = np.concatenate([materials(rng, 0, 500), materials(rng, wobble, 500)])
    seen = materials(rng, SEEN, 500)
    test_normal = np.concatenate([materials(rng, 0, 300), materials(rng, wobble, 300)])
    unseen = materials(rng, -SEEN, 300)  # deviates the other way: never seen in training
    truth = np.r_[np.zeros(600), np.ones(300)]
    auroc = {}
    for head in (BCEAnomalyHead(C), CEDLAnomalyHead(C)):
        head.fit(normal, seen, AnomalyHeadTraining(steps=200, seed=0))
        scores = head.predict(np.concatenate([test_normal, unseen])).numpy()
        auroc[type(head).__name__] = roc_auc_score(truth, scores)
        assert (
            roc_auc_score(
                np.r_[np.zeros(600), np.ones(300)],
                head.predict(np.concatenate([test_normal, materials(rng, SEEN, 300)])).numpy(),
            )
            > 0.99
        )  # both learn the seen type
    assert auroc["CEDLAnomalyHead"] > 0.95 and auroc["BCEAnomalyHead"] < 0.3, auroc


def test_cedl_normals_sit_inside_the_learned_sphere():
    rng = np.random.default_rng(1)
    head = CEDLAnomalyHead(C)
    head.fit(materials(rng, 0, 400), materials(rng, SEEN, 400), AnomalyHeadTraining(150))
    assert float((head.predict(materials(rng, 0, 200)) < 0).float().mean()) > 0.95
    assert float(head.alpha.detach()) > 0


def test_cedl_detector_on_twin_scenes_beats_bce(openset_data, closed_set_segmenter):
    auroc = {}
    for method in ("BCE", "CEDL"):
        detector = build_detector(method, closed_set_segmenter, steps=300).fit(openset_data)
        scores = detector.predict(openset_data.test.barcodes)
        assert scores.shape == openset_data.test.labels.shape
        auroc[method] = ood_metrics(scores, openset_data.test.unknown)["auroc"]
    assert auroc["CEDL"] > auroc["BCE"] + 0.05, auroc


def test_head_detector_round_trip_and_bad_input(openset_data, closed_set_segmenter):
    detector = build_detector("CEDL", closed_set_segmenter, steps=20).fit(openset_data, seed=3)
    detector.calibrate(openset_data.heldout.barcodes)
    again = build_detector("CEDL", closed_set_segmenter, steps=20)
    again.restore(detector.config(), detector.tensors())
    x = openset_data.test.barcodes[:2]
    assert torch.equal(again.predict(x), detector.predict(x))
    with pytest.raises(ValueError, match="channels"):
        detector.predict(torch.ones(1, 4, 8, 8))
    with pytest.raises(ValueError, match="unknown CEDL options"):
        build_detector("CEDL", closed_set_segmenter, margin=1.0)
    with pytest.raises(ValueError, match="integer >= 1"):
        build_detector("BCE", closed_set_segmenter, steps=0)
