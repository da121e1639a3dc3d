"""Evaluation metrics of item 11: EER, forgery detection/localisation, group-accuracy drop."""

import math

import numpy as np
import pytest

from hyplex.models.openset.robustness_evaluation import (
    equal_error_rate,
    forgery_detection,
    forgery_localisation,
    group_accuracies,
    group_accuracy_drop,
)


def test_eer_matches_a_hand_computation():
    # Scores 0.1, 0.4 (real) and 0.35, 0.8 (fake). At a threshold of 0.4: real 0.4 is called
    # fake (FPR 1/2) and fake 0.35 is called real (FNR 1/2): the rates cross at 0.5.
    eer, threshold = equal_error_rate([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    assert eer == pytest.approx(0.5)
    assert threshold == pytest.approx(0.4)


def test_eer_of_separated_and_inverted_scores():
    assert equal_error_rate([0.0, 0.1, 0.9, 1.0], [0, 0, 1, 1])[0] == pytest.approx(0.0)
    assert equal_error_rate([1.0, 0.9, 0.1, 0.0], [0, 0, 1, 1])[0] == pytest.approx(1.0)


def test_eer_interpolates_between_roc_points():
    # 4 real, 4 fake; one fake below two reals. Called fake at t: FPR(t), FNR(t).
    # t = 0.65: FPR 1/4 (0.7), FNR 1/4 (0.3) -> EER 0.25 exactly at a ROC point.
    scores = [0.1, 0.2, 0.5, 0.7, 0.3, 0.8, 0.9, 0.95]
    truth = [0, 0, 0, 0, 1, 1, 1, 1]
    assert equal_error_rate(scores, truth)[0] == pytest.approx(0.25)


def test_eer_rejects_single_class_and_nonfinite():
    with pytest.raises(ValueError, match="both real"):
        equal_error_rate([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="finite"):
        equal_error_rate([0.1, np.nan], [True, False])


def test_localisation_f1_and_iou_by_hand():
    forged = np.zeros((1, 4, 4), bool)
    forged[0, :2, :2] = True  # 4 forged pixels
    predicted = np.zeros_like(forged)
    predicted[0, :2, :3] = True  # 6 predicted: 4 right, 2 wrong
    out = forgery_localisation(predicted, forged)
    assert out["precision"] == pytest.approx(4 / 6)
    assert out["recall"] == pytest.approx(1.0)
    assert out["f1"] == pytest.approx(2 * 4 / (2 * 4 + 2 + 0))
    assert out["iou"] == pytest.approx(4 / 6)
    assert math.isnan(forgery_localisation(np.zeros(3, bool), np.zeros(3, bool))["f1"])


def test_forgery_detection_of_a_perfect_score_map():
    forged = np.zeros((3, 6, 6), bool)
    forged[0, 1:3, 1:3] = True
    forged[2, 3:, 3:] = True
    scores = forged.astype(float) + 0.01 * np.arange(108).reshape(3, 6, 6) / 108
    out = forgery_detection(scores, forged, threshold=0.5)
    assert out["pixel_auroc"] == 1.0 and out["image_auroc"] == 1.0 and out["eer"] == 0.0
    assert out["f1"] == 1.0 and out["iou"] == 1.0 and out["n_forged"] == 4 + 9
    with pytest.raises(ValueError, match="both forged and real"):
        forgery_detection(scores, np.zeros_like(forged), 0.5)


def test_group_accuracy_drop_by_hand():
    # class 1: common 4/4, counter 2/4; class 2: common 3/4, counter 3/4
    true = np.array([1, 1, 1, 1, 2, 2, 2, 2])
    pred_common = np.array([1, 1, 1, 1, 2, 2, 2, 0])
    pred_counter = np.array([1, 1, 2, 2, 2, 2, 2, 1])
    out = group_accuracy_drop(pred_common, true, pred_counter, true)
    assert out["common"] == pytest.approx((1.0 + 0.75) / 2)
    assert out["counter"] == pytest.approx((0.5 + 0.75) / 2)
    assert out["drop"] == pytest.approx(100 * (0.875 - 0.625))
    assert out["worst_group"] == pytest.approx(0.5) and out["classes"] == [1, 2]
    with pytest.raises(ValueError, match="no class"):
        group_accuracy_drop([1], [1], [2], [2])


def test_group_accuracies_ignore_negative_labels():
    pred = np.array([0, 1, 1, 0])
    true = np.array([0, 1, -1, 1])
    groups = np.array(["a", "a", "b", "b"])
    assert group_accuracies(pred, true, groups) == {"a": 1.0, "b": 0.0}
