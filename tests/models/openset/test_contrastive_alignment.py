"""ACT: Sinkhorn against a hand-solved case, the deviation loss, and adaptation from the twin
to a captured domain (fabricated filters, another illuminant, noise, uncalibrated white)."""

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from hyplex.models.openset import build_detector, make_openset_scenes, ood_metrics
from hyplex.models.openset.anomaly_head import openset_anomaly_labels
from hyplex.models.openset.contrastive_alignment import (
    ACTAdapter,
    ACTTraining,
    captured_encoder,
    deviation_loss,
    pixel_graph_inputs,
    sigma_selection,
    sinkhorn_cost,
    sinkhorn_plan,
)

from .conftest import GRID_NM, gaussian_encoder


def test_sinkhorn_plan_of_a_two_point_problem_by_hand():
    # Uniform marginals (1/2, 1/2), cost [[0, 1], [1, 0]]. By symmetry the entropic plan is
    # [[p, 1/2 - p], [1/2 - p, p]]; stationarity of <P, C> - eps H(P) gives
    # log(p / (1/2 - p)) = 1 / eps, i.e. p = (1/2) e^(1/eps) / (1 + e^(1/eps)).
    cost = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    for epsilon in (0.25, 1.0):
        plan = sinkhorn_plan(cost, epsilon, iterations=200)
        p = 0.5 * math.exp(1 / epsilon) / (1 + math.exp(1 / epsilon))
        expected = torch.tensor([[p, 0.5 - p], [0.5 - p, p]], dtype=torch.float64)
        assert torch.allclose(plan, expected, atol=1e-10)


def test_sinkhorn_marginals_and_small_epsilon_limit():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=generator), torch.randn(7, 3, generator=generator)
    cost = torch.cdist(x, y).double() ** 2
    plan = sinkhorn_plan(cost / cost.mean(), 0.05, iterations=500)
    assert torch.allclose(plan.sum(1), torch.full((5,), 0.2, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(plan.sum(0), torch.full((7,), 1 / 7, dtype=torch.float64), atol=1e-8)
    # identical clouds: the OT cost vanishes as the plan concentrates on the diagonal
    assert float(sinkhorn_cost(x, x.clone(), 0.01, 300)) < 0.05 * float(torch.cdist(x, x).mean())
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn_plan(cost, 0.0)


def test_deviation_loss_by_hand():
    scores = torch.tensor([0.5, -2.0, 6.0, 1.0])
    labels = torch.tensor([0, 0, 1, 1])
    # normals: |0.5| + |-2| ; anomalies: max(0, 5 - 6) + max(0, 5 - 1)
    assert float(deviation_loss(scores, labels, 5.0)) == pytest.approx((0.5 + 2 + 0 + 4) / 4)


def test_pixel_graph_inputs_average_the_neighbourhood():
    maps = torch.ones(1, 2, 3, 3)
    maps[0, 0, 1, 1] = 3.0  # centre pixel: shape (1.5, 0.5); others (1, 1)
    inputs, shape = pixel_graph_inputs(maps)
    assert shape == (1, 3, 3) and inputs.shape == (9, 4)
    assert torch.allclose(inputs[4, :2], torch.tensor([1.5, 0.5]))
    assert torch.allclose(inputs[4, 2:], torch.tensor([(8 + 1.5) / 9, (8 + 0.5) / 9]))
    assert torch.allclose(inputs[0, 2:], torch.tensor([(3 + 1.5) / 4, (3 + 0.5) / 4]))


@pytest.fixture(scope="module")
def captured_target(openset_data):
    """12 captured frames (32 x 32) with planted test-unknown materials."""
    responses = gaussian_encoder().fixed.numpy()
    camera = captured_encoder(responses, GRID_NM, seed=0)
    scenes = make_openset_scenes(
        openset_data.split, GRID_NM, 12, "test", (32, 32), n_objects=4, seed=77
    )
    return scenes.barcodes(camera, seed=5)


def _source(data):
    barcodes = torch.cat([data.train.barcodes, data.auxiliary.barcodes])
    labels = torch.cat(
        [torch.where(data.train.labels < 0, -1, 0), openset_anomaly_labels(data.auxiliary.labels)]
    )
    return barcodes, labels


QUICK = dict(source_steps=200, adapt_steps=120, self_label_steps=80)


def test_act_raises_the_target_auroc_beyond_restandardisation_alone(openset_data, captured_target):
    """Full ACT against the same source detector with the target's input statistics moved
    (stage 2's gain re-standardisation) but no contrastive / OT / anomaly-aware training and
    no self-labelling (``adapt_steps=1, self_label_steps=0``). Re-standardisation alone
    already gains ~+0.09 here, so "beats the source detector" does not test ACT; beating the
    re-standardised detector does. Measured (target AUROC, ``ACTTraining`` seeds 0 / 1 / 2 on
    this fixture; before -> re-standardised only -> full): 0.614 -> 0.701 -> 0.722,
    0.589 -> 0.704 -> 0.731, 0.600 -> 0.667 -> 0.752 (other seeds: change ``seed`` below);
    the margin asked, 0.01, is about half the smallest gain of the three. With stages 2-3
    switched off (``alignment_weight``, ``contrastive_weight``, ``anomaly_aware_weight`` 0 and
    ``self_label_steps`` 0 in ``QUICK``) this test fails: 0.614 -> 0.701 -> 0.701."""
    adapter = ACTAdapter(9, training=ACTTraining(seed=0, **QUICK))
    adapter.fit_source(*_source(openset_data))
    restandardised = copy.deepcopy(adapter)  # the same stage-1 detector
    restandardised.training_config = dataclasses.replace(
        adapter.training_config, adapt_steps=1, self_label_steps=0
    )
    unknown = captured_target.unknown
    before = ood_metrics(adapter.predict(captured_target.barcodes, adapted=False), unknown)
    history = adapter.adapt(captured_target.barcodes)
    after = ood_metrics(adapter.predict(captured_target.barcodes), unknown)
    restandardised.adapt(captured_target.barcodes)
    only = ood_metrics(restandardised.predict(captured_target.barcodes), unknown)
    assert after["auroc"] > only["auroc"] + 0.01, (before["auroc"], only["auroc"], after["auroc"])
    assert after["auroc"] > before["auroc"] + 0.05, (before["auroc"], after["auroc"])
    assert history["alignment"][-1] < 0.5 * history["alignment"][0]


def test_act_anomaly_aware_term_reads_source_pixels_with_source_statistics(openset_data):
    """The anomaly-aware term scores *source* pixels through the adapted weights: at the first
    adaptation step (weights still the source's) it must equal the source detector's own
    deviation loss, however far the target's input statistics lie from the source's."""
    source_barcodes, labels = _source(openset_data)
    adapter = ACTAdapter(
        9, training=ACTTraining(seed=0, source_steps=150, adapt_steps=1, self_label_steps=0)
    )
    source_losses = adapter.fit_source(source_barcodes, labels)
    gains = torch.linspace(0.4, 2.5, 9)[None, :, None, None]  # an uncalibrated camera
    history = adapter.adapt(openset_data.test.barcodes * gains)
    # the source detector's loss level at the end of its training (random balanced batches)
    level = float(np.mean(source_losses[-20:]))
    assert history["anomaly_aware"][0] < 1.5 * level + 0.2, (history["anomaly_aware"], level)
    inputs, _ = pixel_graph_inputs(source_barcodes[:2])
    with torch.no_grad():
        adapter.target_encoder.load_state_dict(adapter.source_encoder.state_dict())
        adapter.target_encoder.fit_standardisation(inputs * 3.0)  # other statistics
        same = adapter.target_encoder(inputs, statistics=adapter.source_encoder)
        assert torch.allclose(same, adapter.source_encoder(inputs))
        assert not torch.allclose(adapter.target_encoder(inputs), same)


def test_sigma_selection_by_hand():
    # scores 0..9: mean 4.5, sample std 3.0277; mu + 1 sigma = 7.53 -> {8, 9};
    # mu + 0 sigma = 4.5 -> below: {0, .., 4}, capped at 30 % -> the 3 lowest
    scores = torch.arange(10.0)
    assert sorted(sigma_selection(scores, 1.0, 0.5, outliers=True).tolist()) == [8, 9]
    assert sorted(sigma_selection(scores, 0.0, 0.3, outliers=False).tolist()) == [0, 1, 2]
    # nothing above mu + 5 sigma: the most extreme share is taken instead of none
    assert sigma_selection(scores, 5.0, 0.1, outliers=True).tolist() == [9]


def test_gain_standardisation_undoes_a_camera_gain_despite_target_anomalies():
    """The captured camera multiplies each feature by a gain; the target also holds pixels of
    other materials. The median ratio recovers the gain (the source weights then see the
    source's own inputs); mean/std re-standardisation (AdaBN) is pulled by the anomalies."""
    generator = torch.Generator().manual_seed(0)
    source = 1.0 + 0.2 * torch.rand(2000, 4, generator=generator)
    gains = torch.tensor([0.5, 0.8, 1.3, 2.0])
    target = torch.cat([source, 3.0 + torch.rand(300, 4, generator=generator)]) * gains
    adapter = ACTAdapter(2)
    reference, adapted = adapter.source_encoder, adapter.target_encoder
    reference.fit_standardisation(source)
    adapted.load_state_dict(reference.state_dict())

    def error():  # mean |difference| of the standardised normal pixels, in source std units
        standardised = (target[:2000] - adapted.mean) / adapted.std
        return float(((source - reference.mean) / reference.std - standardised).abs().mean())

    adapted.fit_gain(target, source, reference)
    assert torch.allclose(adapted.std / reference.std, gains, rtol=0.03)
    gain_error = error()
    adapted.fit_standardisation(target)  # the moments of the mixed target
    assert gain_error < 0.3 < error(), (gain_error, error())
    adapted.fit_gain(source * gains, source, reference)  # no anomalies: exact
    assert error() < 1e-4


def _trained_adapter(data, **settings):
    adapter = ACTAdapter(
        9, training=ACTTraining(seed=0, source_steps=150, adapt_steps=1, **settings)
    )
    adapter.fit_source(*_source(data))
    return adapter


def test_one_class_alignment_leaves_out_the_targets_likely_anomalies(openset_data, captured_target):
    """alignment_trim: the pixels transported onto source normals (and whose statistics set
    the target's standardisation) are those the source detector ranks least anomalous, so
    they hold a smaller share of the target's true anomalies than the frames do."""
    inputs, _ = pixel_graph_inputs(captured_target.barcodes)
    unknown = captured_target.unknown.reshape(-1)
    adapter = _trained_adapter(openset_data, self_label_steps=0, alignment_trim=0.2)
    adapter.target_encoder.load_state_dict(adapter.source_encoder.state_dict())
    kept = adapter._one_class_pixels(inputs)
    assert len(kept) == pytest.approx(0.8 * len(inputs), abs=2)
    dropped = torch.ones(len(inputs), dtype=torch.bool)
    dropped[kept] = False
    assert unknown[dropped].float().mean() > 2 * unknown[kept].float().mean()
    untrimmed = _trained_adapter(openset_data, self_label_steps=0, alignment_trim=0.0)
    assert len(untrimmed._one_class_pixels(inputs)) == len(inputs)


def test_self_labelling_takes_isolation_forest_labels_and_stops_at_the_reference_loss(
    openset_data, captured_target
):
    """The reference's self-labelling: isolation-forest scores of the adapted target
    embeddings, sigma thresholds (pseudo-anomalies above mu + 2.5 sigma, at most the
    pseudo_anomaly_share; pseudo-normals below mu + 0.5 sigma, at most 25 %), training stops
    once the deviation loss reaches 1."""
    adapter = _trained_adapter(openset_data, self_label_steps=200, self_label_stop=1.0)
    history = adapter.adapt(captured_target.barcodes)
    assert 1 <= len(history["self_label"]) < 200 and history["self_label"][-1] <= 1.0
    assert min(history["self_label"][:-1], default=2.0) > 1.0
    inputs, _ = pixel_graph_inputs(captured_target.barcodes)
    anomalous, normal = adapter._pseudo_labels(inputs)
    assert len(anomalous) <= 0.05 * len(inputs) and len(normal) <= 0.25 * len(inputs)
    unknown = captured_target.unknown.reshape(-1).float()
    # the pseudo-anomalies are richer in true anomalies than the frames, pseudo-normals poorer
    assert unknown[anomalous].mean() > 1.5 * unknown.mean() > 1.5 * unknown[normal].mean()
    endless = _trained_adapter(openset_data, self_label_steps=30, self_label_stop=0.0)
    assert len(endless.adapt(captured_target.barcodes)["self_label"]) == 30


@pytest.mark.slow
def test_act_ablation_against_target_restandardisation(openset_data, captured_target):
    # Measured on this setting (seed 0; `pytest -s -m slow` prints them): before 0.614; the
    # source weights on the target's gain-corrected statistics alone (no training) 0.701, on
    # its mean/std (AdaBN) 0.737; full ACT 0.722; with mean/std re-standardisation 0.739;
    # without self-labelling 0.702. Here mean/std re-standardisation is the better of the two
    # corrections (on the benchmark's development seeds 10-15 the gain correction is, by 7
    # points: README, issue 15 part B); every variant of full ACT gains >= 10 points.
    unknown = captured_target.unknown
    aurocs = {}
    for name, settings in {
        "full": {},
        "restandardised_gain": dict(adapt_steps=1, self_label_steps=0),
        "restandardised_moments": dict(
            adapt_steps=1, self_label_steps=0, standardisation="moments", alignment_trim=0.0
        ),
        "full_moments": dict(standardisation="moments"),
        "no_self_labelling": dict(self_label_steps=0),
    }.items():
        adapter = ACTAdapter(9, training=ACTTraining(seed=0, **{**QUICK, **settings}))
        adapter.fit_source(*_source(openset_data))
        before = adapter.predict(captured_target.barcodes, adapted=False)
        aurocs["before"] = ood_metrics(before, unknown)["auroc"]
        adapter.adapt(captured_target.barcodes)
        aurocs[name] = ood_metrics(adapter.predict(captured_target.barcodes), unknown)["auroc"]
    print("ACT ablation, target AUROC:", aurocs)  # shown with pytest -s
    for name in ("restandardised_gain", "restandardised_moments"):
        assert aurocs[name] > aurocs["before"] + 0.05, aurocs
    for name in ("full", "full_moments"):
        assert aurocs[name] > aurocs["before"] + 0.08, aurocs
    assert aurocs["full"] > aurocs["restandardised_gain"], aurocs  # stages 2-3 add to it


def test_act_detector_needs_target_frames_with_matching_channels(
    openset_data, closed_set_segmenter
):
    detector = build_detector("ACT", closed_set_segmenter)
    with pytest.raises(ValueError, match="target frames|data.target"):
        detector.fit(openset_data)
    bad = type(openset_data)(**{**vars(openset_data), "target": torch.zeros(2, 5, 8, 8)})
    with pytest.raises(ValueError, match="mismatched channel counts"):
        detector.fit(bad)
    with pytest.raises(ValueError, match="unknown ACT options"):
        build_detector("ACT", closed_set_segmenter, steps=3)


def test_act_detector_round_trip(openset_data, closed_set_segmenter, captured_target):
    options = dict(source_steps=20, adapt_steps=5, self_label_steps=5)
    data = type(openset_data)(**{**vars(openset_data), "target": captured_target.barcodes[:4]})
    detector = build_detector("ACT", closed_set_segmenter, **options).fit(data, seed=1)
    scores = detector.predict(captured_target.barcodes[:2])
    assert scores.shape == (2, 32, 32) and torch.isfinite(scores).all()
    again = build_detector("ACT", closed_set_segmenter, **options)
    again.restore(detector.config(), detector.tensors())
    assert torch.equal(again.predict(captured_target.barcodes[:2]), scores)
    assert np.isfinite(detector.history[0]["seconds"])


def test_act_term_weights_are_detector_options(closed_set_segmenter):
    """Stage 2's term weights reach the adapter's training settings (an ablation is a
    detector option, e.g. ``--options '{"ACT": {"contrastive_weight": 0}}'``)."""
    detector = build_detector(
        "ACT", closed_set_segmenter, contrastive_weight=0.0, alignment_weight=0.5
    )
    training = detector.adapter.training_config
    assert training.contrastive_weight == 0.0 and training.alignment_weight == 0.5
    default = build_detector("ACT", closed_set_segmenter).adapter.training_config
    assert default.contrastive_weight == 1.0 and default.alignment_weight == 1.0
    with pytest.raises(ValueError, match="contrastive_weight must be a number >= 0"):
        build_detector("ACT", closed_set_segmenter, contrastive_weight=-1.0)


def test_act_reference_and_robustness_settings_are_detector_options(closed_set_segmenter):
    """The pieces ported from the reference code and the anomaly-aware fixes are options, so
    each ablation is one ``--options`` object; bad values are refused with their name."""
    default = build_detector("ACT", closed_set_segmenter).adapter.training_config
    assert (default.standardisation, default.alignment_trim) == ("gain", 0.15)
    assert (default.pseudo_labels, default.self_label_stop) == ("iforest", 1.0)
    assert (default.target_init, default.split_updates) == ("source", False)
    reference = dict(target_init="reset", split_updates=True, adapt_lr=1e-4)
    training = build_detector("ACT", closed_set_segmenter, **reference).adapter.training_config
    assert training.target_init == "reset" and training.split_updates
    assert training.adapt_learning_rate == 1e-4
    for bad, match in (
        (dict(standardisation="median"), "standardisation must be"),
        (dict(pseudo_labels="lof"), "pseudo_labels must be"),
        (dict(target_init="random"), "target_init must be"),
        (dict(alignment_trim=0.7), "alignment_trim must be"),
        (dict(split_updates=1), "split_updates must be true or false"),
        (dict(self_label_stop=-1), "self_label_stop must be a number"),
    ):
        with pytest.raises(ValueError, match=match):
            build_detector("ACT", closed_set_segmenter, **bad)
