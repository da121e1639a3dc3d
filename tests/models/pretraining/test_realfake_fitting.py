"""Fitting a bundle's real/fake head: HierCon's margin contrastive term is trained, the
threshold criteria hold on held-out pixels, and the class bookkeeping."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import hyplex.models.pretraining.hierarchical_contrastive as hierarchical
from hyplex.models.encoder_baselines import FixedResponseEncoder
from hyplex.models.pretraining.realfake_fitting import (
    RealFakeFitSettings,
    fake_classes_of,
    fit_realfake_head,
    threshold_at,
)

GRID_NM = np.linspace(420.0, 980.0, 15)


def _bundle():
    """What fit_realfake_head reads of a bundle: 9 Gaussian band-pass filters, no segmenter."""
    centres = np.linspace(440.0, 960.0, 9)
    responses = np.exp(-0.5 * ((GRID_NM[None] - centres[:, None]) / 40.0) ** 2)
    return SimpleNamespace(
        wavelengths_nm=GRID_NM,
        responses=responses,
        class_names=["background", "vegetation", "soil", "paint", "metal", "fake_vegetation"],
        encoder=lambda: FixedResponseEncoder(responses, GRID_NM, name="gaussian"),
        segmenter=None,
    )


@pytest.mark.parametrize("criterion", ["eer", "tpr95"])
def test_fit_trains_hiercon_with_its_contrastive_term(monkeypatch, criterion):
    calls = []
    original = hierarchical.margin_contrastive_loss

    def spy(embeddings, labels, margin):
        calls.append((embeddings.shape, margin))
        return original(embeddings, labels, margin)

    monkeypatch.setattr(hierarchical, "margin_contrastive_loss", spy)
    torch.set_num_threads(1)
    settings = RealFakeFitSettings(
        train_scenes=4, heldout_scenes=3, shape=(24, 24), steps=30, batch=64,
        criterion=criterion,
    )  # fmt: skip
    head, metrics = fit_realfake_head(_bundle(), settings)
    # the method's defining term is in every step (plain BCE would not call it)
    assert len(calls) == 30 and calls[0] == ((64, 32), 0.2)
    assert head.criterion == criterion and head.threshold_logit == metrics["threshold_logit"]
    assert head.fake_classes == ["fake_vegetation"] and head.real_classes == ["vegetation"]
    assert metrics["heldout_fake_pixels"] > 0 and metrics["heldout_real_pixels"] > 0
    assert metrics["auroc"] > 0.7 and metrics["eer"] < 0.35  # far from chance (0.5)
    assert metrics["segmenter_eer"] is None  # no segmenter to compare with
    if criterion == "tpr95":
        assert metrics["tpr"] >= 0.95
    else:  # at the EER the two error rates meet (up to the ROC's steps)
        assert abs((1 - metrics["tpr"]) - metrics["fpr"]) < 0.1


def test_threshold_criteria_by_hand():
    scores = np.array([0.0, 1.0, 2.0, 3.0, 1.5, 2.5, 3.5, 4.0] + [5.0] * 12)
    is_fake = np.array([False] * 4 + [True] * 16)
    threshold = threshold_at(scores, is_fake, "tpr95")
    assert (scores[is_fake] >= threshold).mean() >= 0.95 and threshold == 1.5
    separable = np.array([0.0, 1.0, 2.0, 3.0])
    threshold = threshold_at(separable, np.array([False, False, True, True]), "eer")
    assert 1.0 < threshold <= 2.0
    with pytest.raises(ValueError, match="criterion"):
        threshold_at(scores, is_fake, "auc")


def test_fake_classes_of_a_bundle():
    names = ["background", "vegetation", "soil", "fake_vegetation"]
    assert fake_classes_of(names) == (["vegetation"], ["vegetation", "soil"])
    # no fake class: the twin paints vegetation metamers
    assert fake_classes_of(["background", "vegetation", "soil"])[0] == ["vegetation"]
    with pytest.raises(ValueError, match="nothing to paint fakes of"):
        fake_classes_of(["background", "soil", "metal"])
    with pytest.raises(ValueError, match="criterion"):
        RealFakeFitSettings(criterion="auc")
