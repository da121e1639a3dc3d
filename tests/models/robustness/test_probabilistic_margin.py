"""MAIL: margins and weights against their formulas, PGD inside the shot-noise budget, and one
MAIL step lifting the smallest margins more than a PGD-AT step. MAIL-AT beating standard
training under attack on a small fixed-seed twin case is in ``test_mail_beats_standard.py``."""

import math

import pytest
import torch
from torch import nn

from hyplex.models.robustness import (
    MAILConfig,
    adversarial_train_segmenter,
    mail_weights,
    pgd_attack,
    shot_noise_budget,
)
from hyplex.models.robustness.probabilistic_margin import probabilistic_margin

torch.set_num_threads(1)


def test_probabilistic_margin_is_true_minus_best_other_probability():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 1.0]])
    target = torch.tensor([0, 0, 2])
    p = torch.softmax(logits, 1)
    expected = torch.stack([p[0, 0] - p[0, 1], p[1, 0] - p[1, 1], p[2, 2] - p[2, 0]])
    torch.testing.assert_close(probabilistic_margin(logits, target), expected)


def test_mail_weights_follow_the_normalised_sigmoid_of_the_margin():
    margin = torch.tensor([-0.8, -0.1, 0.3, 0.9])
    gamma, beta = 10.0, 0.2
    raw = [1 / (1 + math.exp(gamma * (m - beta))) for m in margin.tolist()]
    expected = torch.tensor([len(raw) * r / sum(raw) for r in raw])
    weights = mail_weights(margin, gamma, beta)
    torch.testing.assert_close(weights, expected)
    assert weights.mean().item() == pytest.approx(1.0)
    assert torch.all(weights[:-1] > weights[1:])  # smaller margin, larger weight
    masked = mail_weights(margin, gamma, beta, valid=torch.tensor([True, True, False, True]))
    assert masked[2] == 0 and masked[[0, 1, 3]].mean().item() == pytest.approx(1.0)


def test_budget_is_shot_noise_in_barcode_units_and_pgd_stays_inside():
    white = torch.tensor([2000.0, 500.0])
    barcodes = torch.tensor([0.25, 0.8]).reshape(1, 2, 1, 1).repeat(2, 1, 3, 3)
    budget = shot_noise_budget(barcodes, white, epsilon=2.0)
    # b = e / w, std(e) = sqrt(e): 2 sqrt(0.25 * 2000) / 2000 and 2 sqrt(0.8 * 500) / 500
    assert budget[0, 0, 0, 0].item() == pytest.approx(2 * math.sqrt(500) / 2000)
    assert budget[0, 1, 0, 0].item() == pytest.approx(2 * math.sqrt(400) / 500)
    model = nn.Conv2d(2, 3, 1)
    target = torch.zeros(2, 3, 3, dtype=torch.long)

    def loss(z):
        return nn.functional.cross_entropy(model(z), target)

    generator = torch.Generator().manual_seed(0)
    adversarial = pgd_attack(loss, barcodes, budget, steps=5, generator=generator)
    assert torch.all((adversarial - barcodes).abs() <= budget * (1 + 1e-6))
    assert loss(adversarial) > loss(barcodes)
    with pytest.raises(ValueError, match="white_electrons"):
        shot_noise_budget(barcodes, torch.ones(3), 1.0)


def test_a_mail_step_lifts_the_smallest_margins_more_than_a_pgd_at_step():
    """The defining piece of MAIL: the same PGD barcodes, but the cross-entropy reweighted
    towards small margins, so one step from the same weights moves the vulnerable pixels'
    margins further than PGD-AT's uniform step does."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (4, 6, 6), generator=generator)
    barcodes = torch.rand(4, 3, 6, 6, generator=generator) * 0.5 + 0.1
    barcodes[:, 0] += 0.3 * (labels == 0)
    white = torch.full((3,), 800.0)
    margins = {}
    for method in ("pgd_at", "mail"):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.Conv2d(16, 3, 1))
        with torch.no_grad():
            before = probabilistic_margin(net(barcodes), labels)
        config = MAILConfig(method=method, epsilon=1.0, steps=1, batch_size=4, lr=0.05,
                            burn_in=0.0, gamma=10.0)  # fmt: skip
        adversarial_train_segmenter(net, barcodes, labels, white, config, seed=0)
        with torch.no_grad():
            after = probabilistic_margin(net(barcodes), labels)
        weakest = before <= before.quantile(0.2)
        margins[method] = (after - before)[weakest].mean().item()
    assert margins["mail"] > margins["pgd_at"] + 0.005, margins


def test_training_methods_are_validated():
    with pytest.raises(ValueError, match="method"):
        MAILConfig(method="trades")
    with pytest.raises(ValueError, match="burn_in"):
        MAILConfig(burn_in=1.0)


def test_the_reconstructor_trains_under_adversarial_training():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (4, 4, 4), generator=generator)
    cubes = torch.rand(4, 5, 4, 4, generator=generator)
    barcodes = cubes[:, :3] * 0.8 + 0.1
    torch.manual_seed(0)
    segmenter = nn.Conv2d(3, 2, 1)
    reconstructor = nn.Conv2d(3, 5, 1)
    with torch.no_grad():
        before = (reconstructor(barcodes) - cubes).abs().mean().item()
    config = MAILConfig(method="mail", epsilon=1.0, steps=40, batch_size=4, lr=2e-2, burn_in=0.2)
    adversarial_train_segmenter(
        segmenter, barcodes, labels, torch.full((3,), 800.0), config,
        reconstructor=reconstructor, cubes=cubes,
    )  # fmt: skip
    with torch.no_grad():
        after = (reconstructor(barcodes) - cubes).abs().mean().item()
    assert after < 0.8 * before
    with pytest.raises(ValueError, match="both"):
        adversarial_train_segmenter(segmenter, barcodes, labels, torch.ones(3), config, cubes=cubes)


def test_the_default_schedule_is_the_authors_gentle_tilt_after_a_burn_in():
    """The authors' code (slope 1, bias -1.5, MAIL from the PGD-AT model of epoch 75 of 120):
    the weight at PM = -1 is ~5x the weight at PM = 1 (the first version used gamma = 10,
    beta = 0, a ratio of e^20 that put all the weight on the pixels the attack turns), and
    reweighting starts after 0.6 of the steps."""
    config = MAILConfig()
    weights = mail_weights(torch.tensor([-1.0, 1.0]), config.gamma, config.beta)
    expected = (1 + math.exp(config.gamma * (1 - config.beta))) / (
        1 + math.exp(config.gamma * (-1 - config.beta))
    )
    assert weights[0] / weights[1] == pytest.approx(expected)
    assert 4.0 < expected < 6.0
    assert config.burn_in == pytest.approx(0.6)
    # the defaults of mail_weights are the same schedule
    torch.testing.assert_close(mail_weights(torch.tensor([-1.0, 1.0])), weights)


def test_learning_rate_schedules_follow_their_formulas():
    """Constant (the benchmark's), cosine to 0, and the authors' step decay (x0.1 at epoch 75
    and x0.01 at 90 of 120, i.e. 0.625 and 0.75 of the steps)."""
    from hyplex.models.robustness.probabilistic_margin import learning_rate_at

    constant = MAILConfig(steps=120, lr=0.01)
    assert [learning_rate_at(s, constant) for s in (0, 74, 119)] == [0.01] * 3
    cosine = MAILConfig(steps=120, lr=0.01, lr_schedule="cosine")
    assert learning_rate_at(0, cosine) == pytest.approx(0.01)
    assert learning_rate_at(60, cosine) == pytest.approx(0.005)
    step = MAILConfig(steps=120, lr=0.01, lr_schedule="step")
    rates = [learning_rate_at(s, step) for s in (74, 75, 89, 90)]
    assert rates == pytest.approx([0.01, 0.001, 0.001, 0.0001])
    with pytest.raises(ValueError, match="lr_schedule"):
        MAILConfig(lr_schedule="linear")


def test_training_applies_the_learning_rate_schedule():
    """The schedule reaches Adam: the last step runs at the scheduled rate, and a decayed run
    ends with different weights than a constant one from the same start."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (4, 4, 4), generator=generator)
    barcodes = torch.rand(4, 3, 4, 4, generator=generator) * 0.5 + 0.1
    weights = {}
    for schedule in ("constant", "step"):
        torch.manual_seed(0)
        net = nn.Conv2d(3, 2, 1)
        config = MAILConfig(method="pgd_at", epsilon=1.0, steps=8, lr=0.05, lr_schedule=schedule)
        last = adversarial_train_segmenter(
            net, barcodes, labels, torch.full((3,), 800.0), config, seed=0
        )
        expected = 0.05 if schedule == "constant" else 0.0005
        assert last["lr"] == pytest.approx(expected)
        weights[schedule] = net.weight.detach().clone()
    assert not torch.allclose(weights["constant"], weights["step"])


def test_the_dotted_module_name_is_the_module_not_its_margin_function():
    """``robustness/__init__.py`` used to re-export the function ``probabilistic_margin``,
    which shadowed the submodule of the same name."""
    import importlib
    import types

    import hyplex.models.robustness as robustness

    module = importlib.import_module("hyplex.models.robustness.probabilistic_margin")
    assert isinstance(robustness.probabilistic_margin, types.ModuleType)
    assert robustness.probabilistic_margin is module
    assert callable(module.probabilistic_margin)
