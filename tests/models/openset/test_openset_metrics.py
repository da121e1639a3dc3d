"""AUROC, AUPR and FPR@95TPR on constructed scores."""

import numpy as np
import pytest

from hyplex.models.openset import OpenSetMetrics, ood_metrics, threshold_at_tpr


def test_perfect_and_reversed_scores():
    unknown = np.array([0, 0, 0, 1, 1], bool)
    good = ood_metrics(np.array([0.1, 0.2, 0.3, 0.8, 0.9]), unknown)
    assert good["auroc"] == 1.0 and good["aupr"] == 1.0 and good["fpr95"] == 0.0
    bad = ood_metrics(np.array([0.9, 0.8, 0.7, 0.1, 0.2]), unknown)
    assert bad["auroc"] == 0.0 and bad["fpr95"] == 1.0 and bad["fpr95_id_positive"] == 1.0
    assert good["fpr95_id_positive"] == 0.0


def test_fpr_at_95_tpr_by_hand():
    # 20 known pixels scored 0..19, 10 unknown pixels scored 10..19 (overlapping the top half)
    known = np.arange(20.0)
    unknown = np.arange(10.0, 20.0) + 0.5
    s = np.concatenate([known, unknown])
    mask = np.r_[np.zeros(20, bool), np.ones(10, bool)]
    m = ood_metrics(s, mask)
    # pytorch-ood (unknown positive): flagging >= 95 % of the unknown (all 10, since 9.5 of 10 is
    # not reachable) needs the threshold at 10.5, above which known 11..19 (9/20) are flagged
    assert m["fpr95"] == pytest.approx(9 / 20)
    # known positive: accepting 95 % of known (19 of 20) means threshold at 18: unknown
    # 10.5..17.5 accepted (8/10)
    assert m["fpr95_id_positive"] == pytest.approx(0.8)
    assert m["auroc"] == pytest.approx(np.mean([(u > known).mean() for u in unknown]))


def test_threshold_and_accumulator():
    values = np.arange(100.0)
    assert threshold_at_tpr(values, 0.95) == 95.0
    with pytest.raises(ValueError, match="tpr"):
        threshold_at_tpr(values, 1.5)
    acc = OpenSetMetrics()
    acc.update(np.array([[0.1, 0.9]]), np.array([[False, True]]))
    acc.update(np.array([[0.2, 0.8]]), np.array([[False, True]]))
    assert acc.compute()["auroc"] == 1.0
    with pytest.raises(ValueError, match="both known and unknown"):
        ood_metrics(np.ones(3), np.zeros(3, bool))
