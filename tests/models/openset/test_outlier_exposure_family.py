"""OE, DOE, DAL, ATOL and Watermarking: each separates a planted unknown material from the
known ones, better than the same run with plain cross-entropy; and each method's defining
step does what its paper says."""

import copy

import numpy as np
import pytest
import torch

from hyplex.models.openset import build_detector, make_openset_scenes, ood_metrics
from hyplex.models.openset.distribution_augmentation import worst_case_shift
from hyplex.models.openset.implicit_outlier_transformation import (
    ImplicitOutlierTransformation,
    perturbable,
)
from hyplex.models.openset.outlier_exposure import (
    OutlierBatch,
    features_and_logits,
    pixels,
    train_with_outliers,
    uniform_cross_entropy,
)
from hyplex.models.openset.unreliable_sources import TwinLatentGenerator, class_matched_alignment
from hyplex.simulation.spectra import SpectralLibrary

from ..benchmark_scripts import load_benchmark
from .conftest import GRID_NM, gaussian_encoder

STEPS = 80


@pytest.fixture(scope="module")
def planted(openset_data):
    """Fresh scenes (unseen seed) with planted objects of the auxiliary materials."""
    scenes = make_openset_scenes(openset_data.split, GRID_NM, 6, "auxiliary", (24, 24), seed=77)
    return scenes.barcodes(gaussian_encoder(), seed=5)


def auroc(detector, planted):
    return ood_metrics(detector.predict(planted.barcodes), planted.unknown)["auroc"]


@pytest.fixture(scope="module")
def plain_cross_entropy_auroc(openset_data, planted, _trained_segmenter):
    """The baseline: the same fine-tuning run with the outlier term replaced by nothing."""
    model = copy.deepcopy(_trained_segmenter)
    train_with_outliers(model, openset_data, None, steps=STEPS, seed=0)
    return auroc(build_detector("MSP", model), planted)


# ATOL is not a row here: it sees no real outliers, and on these planted *real* auxiliary
# materials its losses do not help. Measured (80 steps, fit seeds 0 / 1 / 2; plain
# cross-entropy 0.672): ATOL 0.760 / 0.626 / 0.692, the same run with its auxiliary OOD and
# alignment losses off (``outlier_weight=0, trade_off=0``) 0.750 / 0.694 / 0.715, so an ATOL
# row here passed at seed 0 without ATOL's losses and failed at seed 1 with them. ATOL's
# test is test_atol_flags_materials_from_its_auxiliary_ood_region (see its docstring for
# what it does and does not isolate).
@pytest.mark.parametrize(
    ("method", "options", "margin"),
    [
        ("OE", {}, 0.1),
        ("DOE", {}, 0.1),
        ("DAL", {}, 0.1),
        ("Watermarking", {}, 0.05),
    ],
)
def test_method_separates_a_planted_unknown_better_than_plain_cross_entropy(
    method, options, margin, openset_data, planted, closed_set_segmenter, plain_cross_entropy_auroc
):
    detector = build_detector(method, closed_set_segmenter, steps=STEPS, **options)
    detector.fit(openset_data, seed=0)
    value = auroc(detector, planted)
    assert value > plain_cross_entropy_auroc + margin, (method, value, plain_cross_entropy_auroc)
    scores = detector.predict(planted.barcodes)
    assert scores.shape == planted.labels.shape and torch.isfinite(scores).all()


def test_atol_flags_materials_from_its_auxiliary_ood_region(
    openset_data, closed_set_segmenter, _trained_segmenter
):
    """ATOL sees no real outliers: its planted unknown is a material drawn from the twin
    generator's OOD region (fresh samples), which plain cross-entropy does not flag.

    What it does not isolate: ATOL's own losses. AUROC on these scenes (each fit seed's
    generator draws its own materials), fit seeds 0 / 1 / 2, 80 steps: ATOL 0.754 / 0.677 /
    0.731, plain cross-entropy 0.689 / 0.648 / 0.660 (the 0.05 margin holds at seeds 0 and 2),
    and the same ATOL run with its auxiliary-OOD and alignment losses off (``outlier_weight=0,
    trade_off=0``; the auxiliary head still learns the generated ID composites) 0.676 / 0.736 /
    0.797: it fails this test at seed 0, the seed used, but passes at seeds 1 and 2. With 200
    steps: ATOL 0.762 / 0.708 / 0.639, losses off 0.743 / 0.771 / 0.858. The seed-0 pass is
    therefore not evidence that ATOL's losses help (reported to the lead, issue 15).
    """
    detector = build_detector("ATOL", closed_set_segmenter, steps=STEPS)
    detector.fit(openset_data, seed=0)
    rng = np.random.default_rng(123)
    spectra = detector.generator.spectra(detector.generator.sample_ood(60, rng))
    library = SpectralLibrary(
        GRID_NM,
        spectra,
        [f"g{i}" for i in range(60)],
        ["generated"] * 60,
        "ATOL generator, OOD region",
    )
    scenes = make_openset_scenes(
        openset_data.split, GRID_NM, 6, "auxiliary", (24, 24), seed=78, outliers=library
    )
    generated = scenes.barcodes(gaussian_encoder(), seed=6)
    baseline = copy.deepcopy(_trained_segmenter)
    train_with_outliers(baseline, openset_data, None, steps=STEPS, seed=0)
    value, plain = auroc(detector, generated), auroc(build_detector("MSP", baseline), generated)
    assert value > plain + 0.05, (value, plain)


def test_doe_perturbs_the_weights_layerwise_and_restores_them(openset_data, closed_set_segmenter):
    model = closed_set_segmenter
    x = torch.cat([openset_data.train.barcodes[:2], openset_data.auxiliary.barcodes[:2]])
    y = torch.cat([openset_data.train.labels[:2], openset_data.auxiliary.labels[:2]])
    batch = OutlierBatch(x, y, 2, 0, 1, torch.Generator().manual_seed(0))
    objective = ImplicitOutlierTransformation(0.5, gammas=(0.1,))
    before = {k: v.detach().clone() for k, v in perturbable(model).items()}
    direction = objective.perturbation_direction(model, batch)
    assert direction, "DOE found no perturbation direction"
    for name, d in direction.items():  # AWP normalisation: |d| = |w| per layer
        assert d.norm().item() == pytest.approx(before[name].norm().item(), rel=1e-4)
    model.train()
    loss, stats = objective.loss(model, batch)
    moved = max((perturbable(model)[k] - before[k]).abs().max().item() for k in before)
    assert moved > 0 and stats["gamma"] == 0.1
    loss.backward()
    objective.after_backward(model)
    for name, value in perturbable(model).items():
        torch.testing.assert_close(value.detach(), before[name], rtol=0, atol=1e-6)


def test_dal_moves_outlier_embeddings_to_worse_ones_within_the_ball(
    openset_data, closed_set_segmenter
):
    model = closed_set_segmenter.eval()
    x, y = openset_data.auxiliary.batch([0, 1])
    with torch.no_grad():
        features, _ = features_and_logits(model, x)
    embeddings = pixels(features, y == -1)
    head = model.head
    weight = head.weight.reshape(head.out_channels, -1)
    before = uniform_cross_entropy(torch.nn.functional.linear(embeddings, weight, head.bias))
    delta = worst_case_shift(head, embeddings, gamma=0.01, strength=0.05, n_iterations=5)
    after = uniform_cross_entropy(torch.nn.functional.linear(embeddings + delta, weight, head.bias))
    assert after.mean() > before.mean() + 1e-3  # the transported outliers look more "known"
    assert delta.norm(dim=1).max() <= 5 * 0.05 + 1e-3  # n_iterations unit steps of `strength`


def test_atol_auxiliary_id_and_ood_supports_are_disjoint():
    rng = np.random.default_rng(0)
    spectra = rng.uniform(0, 1, (50, GRID_NM.size))
    generator = TwinLatentGenerator(spectra, n_classes=4, latent_dim=6, seed=0)
    labels = rng.integers(0, 4, 2000)
    z_id = generator.sample_id(labels, rng)
    z_ood = generator.sample_ood(2000, rng)
    id_distance = np.linalg.norm(z_id - generator.modes[labels], axis=1).max()
    ood_distance = np.linalg.norm(z_ood[:, None] - generator.modes[None], axis=-1).min()
    assert ood_distance > id_distance
    out = generator.spectra(z_ood)
    assert out.shape == (2000, GRID_NM.size) and out.min() >= 0 and out.max() <= 1
    # the alignment pulls auxiliary features to real ones of the same class only
    real = torch.eye(3)
    same = class_matched_alignment(real, torch.arange(3), real.clone(), torch.arange(3))
    swapped = class_matched_alignment(real, torch.arange(3), real.clone(), torch.tensor([1, 2, 0]))
    assert same < swapped


def test_watermarking_keeps_the_segmenter_frozen(openset_data, closed_set_segmenter, planted):
    before = copy.deepcopy(closed_set_segmenter.state_dict())
    detector = build_detector("Watermarking", closed_set_segmenter, steps=20)
    detector.fit(openset_data, seed=0)
    after = closed_set_segmenter.state_dict()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)
    assert detector.watermark.pattern.abs().max() > 0
    assert set(detector.tensors()) == {"watermark.pattern"}
    logits, _ = detector.segment(planted.barcodes)
    with torch.no_grad():
        plain = closed_set_segmenter.eval()(planted.barcodes)
    torch.testing.assert_close(logits, plain)  # labels from the unwatermarked barcodes


@pytest.mark.parametrize("method", ["OE", "ATOL"])  # ATOL: segmenter + its auxiliary head
def test_fine_tuning_detectors_round_trip_through_tensors(
    method, openset_data, closed_set_segmenter
):
    detector = build_detector(method, closed_set_segmenter, steps=2).fit(openset_data)
    detector.calibrate(openset_data.heldout.barcodes)
    twin = copy.deepcopy(closed_set_segmenter)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(1.0)
    copy_ = build_detector(method, twin, **detector.options).restore(
        detector.config(), detector.tensors()
    )
    x = openset_data.test.barcodes[:2]
    torch.testing.assert_close(copy_.predict(x), detector.predict(x))
    with pytest.raises(ValueError, match="mismatched channel counts"):
        detector.predict(torch.zeros(1, 4, 8, 8))


def test_doe_warms_up_with_plain_oe_before_perturbing(openset_data, closed_set_segmenter):
    """The reference schedule: plain OE for the first ``warmup`` share of the steps (no weight
    perturbation, no gamma drawn), the min-max step afterwards."""
    model = closed_set_segmenter.train()
    x = torch.cat([openset_data.train.barcodes[:2], openset_data.auxiliary.barcodes[:2]])
    y = torch.cat([openset_data.train.labels[:2], openset_data.auxiliary.labels[:2]])
    objective = ImplicitOutlierTransformation(0.5, gammas=(0.1,), warmup=0.5)
    early = OutlierBatch(x, y, 2, 4, 10, torch.Generator().manual_seed(0))
    loss, stats = objective.loss(model, early)
    assert "gamma" not in stats and objective.applied is None and objective.direction is None
    logits = model(x)  # the warm-up loss is OE's: ID cross-entropy + lambda L_OE
    mask = y == -1
    expected = torch.nn.functional.cross_entropy(logits, y, ignore_index=-1)
    expected = expected + 0.5 * uniform_cross_entropy(pixels(logits, mask)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    late = OutlierBatch(x, y, 2, 5, 10, torch.Generator().manual_seed(0))
    _, stats = objective.loss(model, late)
    assert stats["gamma"] == 0.1 and objective.applied is not None
    objective.after_backward(model)
    detector = build_detector("DOE", closed_set_segmenter)
    assert detector.objective().warmup == 0.5  # the default follows the reference schedule
    with pytest.raises(ValueError, match="warmup"):
        build_detector("DOE", closed_set_segmenter, warmup=-0.1)


def test_atol_auxiliary_task_trains_its_own_head_not_the_segmenters(
    openset_data, closed_set_segmenter
):
    """With ``separate_head`` (default) the segmenter's classifier gets the gradient of the
    real-ID cross-entropy only; the auxiliary ID/OOD task trains the auxiliary head (and the
    shared features). The reference code's single head (``separate_head=False``) mixes them."""
    from hyplex.models.openset.unreliable_sources import AuxiliaryTaskObjective

    x = openset_data.train.barcodes[:2]
    y = openset_data.train.labels[:2]
    batch = OutlierBatch(x, y, 2, 0, 1, torch.Generator().manual_seed(0))
    gradients = {}
    for separate in (True, False):
        model = copy.deepcopy(closed_set_segmenter).eval()  # per-pixel BN: logits[:n] = model(x)
        detector = build_detector("ATOL", model, separate_head=separate)
        spectra = np.random.default_rng(0).uniform(0, 1, (40, GRID_NM.size))
        generator = TwinLatentGenerator(spectra, len(openset_data.class_names), seed=0)
        objective = AuxiliaryTaskObjective(
            generator,
            gaussian_encoder(),
            smoothing=0.0,
            seed=0,
            auxiliary_head=detector.auxiliary_head,
        )
        loss, stats = objective.loss(model, batch)
        loss.backward()
        gradients[separate] = model.head.weight.grad.clone()
        if separate:
            assert set(detector.tensors()) >= {"auxiliary_head.weight", "auxiliary_head.bias"}
            assert detector.auxiliary_head.weight.grad.abs().max() > 0
        model.zero_grad()
        known = y >= 0
        real = torch.nn.functional.cross_entropy(pixels(model(x), known), y[known])
        real.backward()
        gradients[(separate, "real")] = model.head.weight.grad.clone()
    torch.testing.assert_close(gradients[True], gradients[(True, "real")], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(gradients[False], gradients[(False, "real")], rtol=1e-3, atol=1e-5)


def test_openset_benchmark_refuses_options_for_unknown_methods(capsys):
    """``--options`` (per-method option overrides for development runs) names methods of the
    benchmark's table and gives each an object of options."""
    module = load_benchmark("openset")
    for bad in ('{"NotAMethod": {}}', '{"DOE": 0}', "[1]"):
        with pytest.raises(SystemExit):
            module.main(["--smoke", "--seeds", "1", "--options", bad])
        assert "--options must map method names" in capsys.readouterr().err


def test_doe_scores_with_the_maximum_logit_option(openset_data, closed_set_segmenter):
    """``score="max_logit"`` is the DOE script's ``-max(output)``; ``"msp"`` OE's score."""
    from hyplex.models.openset.scores import msp_score

    x = openset_data.test.barcodes[:2]
    with torch.no_grad():
        logits = copy.deepcopy(closed_set_segmenter).eval()(x)
    for score, expected in (("max_logit", -logits.amax(1)), ("msp", msp_score(logits))):
        detector = build_detector("DOE", copy.deepcopy(closed_set_segmenter), score=score)
        torch.testing.assert_close(detector.predict(x), expected)
    with pytest.raises(ValueError, match="score must be one of"):
        build_detector("DOE", closed_set_segmenter, score="energy")


def test_atol_auxiliary_images_leave_the_batchnorm_statistics_to_real_scenes(
    openset_data, _trained_segmenter
):
    """``separate_statistics``: the composite images of the auxiliary task pass BatchNorm in
    eval mode, so after a step's forward the running statistics are those that the real scenes
    alone give; one pass over both (the reference code's batch) lets the generated barcodes
    move them."""
    from hyplex.models.openset.unreliable_sources import AuxiliaryTaskObjective

    x, y = openset_data.train.batch([0, 1])
    batch = OutlierBatch(x, y, 2, 0, 1, torch.Generator().manual_seed(0))
    spectra = np.random.default_rng(0).uniform(0, 1, (40, GRID_NM.size))
    generator = TwinLatentGenerator(spectra, len(openset_data.class_names), seed=0)

    def running_means(model):
        return torch.cat(
            [m.running_mean for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        )

    real_only = copy.deepcopy(_trained_segmenter).train()
    with torch.no_grad():
        real_only(x)
    for separate in (True, False):
        model = copy.deepcopy(_trained_segmenter).train()
        objective = AuxiliaryTaskObjective(
            generator, gaussian_encoder(), seed=0, separate_statistics=separate
        )
        objective.loss(model, batch)
        same = torch.allclose(running_means(model), running_means(real_only), atol=1e-6)
        assert same == separate, separate
        assert all(m.training for m in model.modules())  # BatchNorm back in training mode


def test_atol_id_anchor_is_zero_at_the_start_and_keeps_the_id_predictions(
    openset_data, _trained_segmenter
):
    """``id_anchor`` adds KL(reference || segmenter) on the real ID pixels: 0 before the first
    step (same batch, same BatchNorm mode). With it and ``separate_statistics`` (the
    defaults) a fit keeps the segmenter's held-out ID labels; without them it costs accuracy."""
    from hyplex.models.openset.unreliable_sources import id_logit_anchor

    model = copy.deepcopy(_trained_segmenter).train()
    reference = copy.deepcopy(_trained_segmenter).train().requires_grad_(False)
    x, y = openset_data.train.batch([0, 1, 2])
    known = y[:2] >= 0
    logits = pixels(model(x)[:2], known)
    initial = id_logit_anchor(logits, reference, x, known)
    assert abs(initial.item()) < 1e-5
    initial.backward()  # the gradient reaches the segmenter, not the reference
    assert all(p.grad is None for p in reference.parameters())

    # end to end: the defaults (ID anchor + real-only BatchNorm statistics) against the same
    # fit without them (the state before the fix), on held-out ID pixels
    held_out, labels = openset_data.heldout.barcodes, openset_data.heldout.labels
    known = labels >= 0

    def predictions(model):
        with torch.no_grad():
            return model.eval()(held_out).argmax(1)[known]

    start = predictions(copy.deepcopy(_trained_segmenter))
    accuracy, agreement = {}, {}
    for name, options in (
        ("without", {"id_anchor": 0.0, "separate_statistics": False}),
        ("default", {}),
    ):
        trained = copy.deepcopy(_trained_segmenter)
        build_detector("ATOL", trained, steps=40, **options).fit(openset_data, seed=0)
        predicted = predictions(trained)
        accuracy[name] = (predicted == labels[known]).float().mean().item()
        agreement[name] = (predicted == start).float().mean().item()
    original = (start == labels[known]).float().mean().item()
    assert accuracy["without"] < original - 0.01, (accuracy, original)  # the cost it fixes
    assert accuracy["default"] > accuracy["without"] + 0.03, accuracy
    assert agreement["default"] > agreement["without"] + 0.02, agreement
    with pytest.raises(ValueError, match="id_anchor"):
        build_detector("ATOL", copy.deepcopy(_trained_segmenter), id_anchor=-1.0)


def test_doe_alternate_schedule_steps_oe_at_the_perturbed_weights_then_ce_at_the_clean(
    openset_data, closed_set_segmenter
):
    """``alternate`` (the DOE script): after the warm-up the step's loss is lambda L_OE at
    ``theta + P`` alone, and a second optimiser step follows on the ID cross-entropy at the
    restored ``theta``; the joint schedule takes both in one step."""
    model = closed_set_segmenter.train()
    x = torch.cat([openset_data.train.barcodes[:2], openset_data.auxiliary.barcodes[:2]])
    y = torch.cat([openset_data.train.labels[:2], openset_data.auxiliary.labels[:2]])
    batch = OutlierBatch(x, y, 2, 0, 1, torch.Generator().manual_seed(0))
    objective = ImplicitOutlierTransformation(0.5, gammas=(0.1,), alternate=True)
    before = {k: v.detach().clone() for k, v in perturbable(model).items()}
    loss, stats = objective.loss(model, batch)
    with torch.no_grad():
        perturbed = uniform_cross_entropy(pixels(model(x), y == -1)).mean()
    torch.testing.assert_close(loss.detach(), 0.5 * perturbed, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())  # no CE gradient in this step
    loss.backward()
    objective.after_backward(model)
    for name, value in perturbable(model).items():
        torch.testing.assert_close(value.detach(), before[name], rtol=0, atol=1e-6)
    second = objective.follow_up(model, batch)
    expected = torch.nn.functional.cross_entropy(model(x), y, ignore_index=-1)
    torch.testing.assert_close(second.detach(), expected.detach(), rtol=1e-5, atol=1e-6)
    assert objective.follow_up(model, batch) is None  # one CE step per OE step
    joint = ImplicitOutlierTransformation(0.5, gammas=(0.1,), alternate=False)
    joint.loss(model, batch)
    joint.after_backward(model)
    assert joint.follow_up(model, batch) is None
    detector = build_detector("DOE", closed_set_segmenter, steps=4)
    assert detector.options["alternate"] is True  # the DOE script's schedule is the default
    history = detector.fit(openset_data, seed=0).history
    assert ["follow_up" in h for h in history] == [False, False, True, True]  # warm-up 0.5
    with pytest.raises(ValueError, match="alternate"):
        build_detector("DOE", closed_set_segmenter, alternate=1)


def test_cosine_schedule_anneals_the_learning_rate_from_lr_to_almost_zero(
    openset_data, closed_set_segmenter
):
    """``lr_schedule="cosine"``: the reference scripts' cosine annealing, one rate per batch
    (``lr`` at the first step, falling monotonically to ~1e-6); the default keeps ``lr``."""
    model = copy.deepcopy(closed_set_segmenter)
    history = train_with_outliers(
        model, openset_data, None, steps=5, lr=2e-3, seed=0, lr_schedule="cosine"
    )
    rates = [h["lr"] for h in history]
    expected = [1e-6 + (2e-3 - 1e-6) * 0.5 * (1 + np.cos(np.pi * k / 5)) for k in range(5)]
    np.testing.assert_allclose(rates, expected, rtol=1e-9)
    assert rates[0] == pytest.approx(2e-3, rel=1e-12)
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    constant = train_with_outliers(model, openset_data, None, steps=3, lr=2e-3, seed=0)
    assert [h["lr"] for h in constant] == [2e-3] * 3
    detector = build_detector("DOE", closed_set_segmenter, steps=4, lr_schedule="cosine")
    history = detector.fit(openset_data, seed=0).history
    assert history[0]["lr"] == pytest.approx(1e-3, rel=1e-12)
    assert history[-1]["lr"] < 2e-4  # set per batch: DOE's two optimiser steps share it
    with pytest.raises(ValueError, match="lr_schedule"):
        build_detector("OE", closed_set_segmenter, lr_schedule="linear")
    with pytest.raises(ValueError, match="lr_schedule"):
        train_with_outliers(model, openset_data, None, steps=1, lr_schedule="step")


def test_doe_clean_statistics_keep_the_perturbed_pass_out_of_the_batchnorm_statistics(
    openset_data, closed_set_segmenter
):
    """``clean_statistics``: the OE pass at ``theta + P`` normalises with its batch statistics
    but leaves BatchNorm's running statistics as the clean weights had them; without it the
    perturbed activations move them."""
    x = torch.cat([openset_data.train.barcodes[:2], openset_data.auxiliary.barcodes[:2]])
    y = torch.cat([openset_data.train.labels[:2], openset_data.auxiliary.labels[:2]])

    def running(model):
        return [
            b.detach().clone()
            for m in model.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for b in (m.running_mean, m.running_var)
        ]

    moved = {}
    for clean in (True, False):
        model = copy.deepcopy(closed_set_segmenter).train()
        before = running(model)
        assert before, "the segmenter has BatchNorm layers"
        objective = ImplicitOutlierTransformation(0.5, gammas=(0.1,), clean_statistics=clean)
        batch = OutlierBatch(x, y, 2, 0, 1, torch.Generator().manual_seed(0))
        loss, _ = objective.loss(model, batch)
        loss.backward()  # gradients still flow through the normalisation
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        objective.after_backward(model)
        after = running(model)
        moved[clean] = max((a - b).abs().max().item() for a, b in zip(after, before, strict=True))
    assert moved[True] == 0.0 and moved[False] > 0.0
    assert build_detector("DOE", closed_set_segmenter).objective().clean_statistics  # default
    with pytest.raises(ValueError, match="clean_statistics"):
        build_detector("DOE", closed_set_segmenter, clean_statistics="yes")
