"""The shared evaluator: MIA near 0.5 on a model never trained on the data, ES, mixing."""

import numpy as np
import torch

from hyplex.models.unlearning.evaluation import (
    auc,
    calibrate_by_mixing,
    extraction_strength,
    mean_iou,
    mia_auc,
    mix_models,
    output_kl,
)


def _data(seed, n=200):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)  # random labels: only memorisation fits them
    return x, y


def _batches(x, y, size=1):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def test_mia_is_chance_on_a_model_never_trained_on_the_data():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    members, nonmembers = _data(1), _data(2)
    value = mia_auc(model, _batches(*members), _batches(*nonmembers))
    assert abs(value - 0.5) < 0.1


def test_mia_detects_memorised_members(adam):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3))
    (xm, ym), (xn, yn) = _data(1, 60), _data(2, 60)
    optimizer = adam(model.parameters(), 0.02)
    for _ in range(300):
        optimizer.step(torch.nn.functional.cross_entropy(model(xm), ym))
    assert mia_auc(model, _batches(xm, ym), _batches(xn, yn)) > 0.85
    assert mia_auc(model, _batches(xm, ym), _batches(xn, yn), attack="min_k") > 0.85


def test_auc_matches_definition():
    assert auc([3, 4], [1, 2]) == 1.0 and auc([1], [1]) == 0.5
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 50), rng.normal(0, 1, 40)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert abs(auc(pos, neg) - brute) < 1e-12


def test_extraction_strength_is_the_shortest_extracting_prefix():
    targets = torch.tensor([[1, 2, 3, 4]])
    logits = torch.nn.functional.one_hot(torch.tensor([[1, 0, 3, 4]]), 5).float()
    # wrong at position 1: a prefix of 2 elements is needed, ES = 1 - 2/4
    assert float(extraction_strength(logits, targets)[0]) == 0.5
    perfect = torch.nn.functional.one_hot(targets, 5).float()
    assert float(extraction_strength(perfect, targets)[0]) == 1.0
    mask = torch.tensor([[False, False, True, True]])
    assert float(extraction_strength(logits, targets, mask)[0]) == 1.0


def test_calibration_by_mixing_reaches_the_target_level():
    torch.manual_seed(0)
    original, unlearned = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)
    x, y = _data(3)
    batches = _batches(x, y, 50)
    assert output_kl(original, mix_models(original, unlearned, 0.0), batches) < 1e-10

    def score(model):  # a retain score falling with the distance from the original
        return -output_kl(original, model, batches)

    target = 0.5 * score(unlearned)
    alpha, mixed = calibrate_by_mixing(original, unlearned, score, target, iterations=12)
    assert 0 < alpha < 1 and score(mixed) >= target
    assert score(mix_models(original, unlearned, min(1.0, alpha + 0.01))) < target


def test_mean_iou_on_a_perfect_and_a_constant_model():
    class Oracle(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(x, 3).float()

    y = torch.tensor([0, 1, 2, 2])
    assert mean_iou(Oracle(), [(y, y)], 3) == 1.0
    # all predicted 0: IoU 1/4 for class 0, 0 for classes 1 and 2
    assert abs(mean_iou(Oracle(), [(torch.zeros_like(y), y)], 3) - 1 / 12) < 1e-12


def test_energy_refusal_marks_high_energy_elements_unknown():
    from hyplex.models.unlearning.distinguishable_deletion import (
        UNKNOWN_LABEL,
        energy_refusal,
        refusal_threshold,
    )

    confident = torch.tensor([[8.0, 0.0, 0.0]])  # energy ~ -8
    flat = torch.tensor([[0.0, 0.0, 0.0]])  # energy -log 3 ~ -1.1
    logits = torch.cat([confident, flat])
    labels = energy_refusal(logits, threshold=-2.0)
    assert labels.tolist() == [0, UNKNOWN_LABEL]
    pixels = logits.T.reshape(1, 3, 1, 2)  # (B, C, H, W) layout
    assert energy_refusal(pixels, -2.0).tolist() == [[[0, UNKNOWN_LABEL]]]

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x

    retain = [(torch.randn(200, 3) * 0.1 + torch.tensor([6.0, 0.0, 0.0]), torch.zeros(200).long())]
    threshold = refusal_threshold(Fixed(), retain, tpr=0.95)
    kept = energy_refusal(retain[0][0], threshold) != UNKNOWN_LABEL
    assert abs(float(kept.float().mean()) - 0.95) < 0.02
