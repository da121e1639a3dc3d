"""ETF: a surrogate from a few pixels per class, attacks that transfer better than noise."""

import torch
from torch import nn

from hyplex.models.robustness import (
    ETFConfig,
    attack_success_rate,
    etf_attack,
    few_sample_pixels,
    shot_noise_budget,
    train_surrogate,
)

torch.set_num_threads(1)


def _scenes(n, seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n, 6, 6), generator=generator)
    centres = torch.tensor([[0.2, 0.5, 0.6], [0.5, 0.2, 0.4], [0.4, 0.6, 0.2]])
    noise = 0.05 * torch.randn(n, 6, 6, 3, generator=generator)
    return (centres[labels] + noise).permute(0, 3, 1, 2).contiguous(), labels


def test_few_sample_pixels_draws_that_many_per_class():
    _, labels = _scenes(2, 0)
    index = few_sample_pixels(labels, 4, seed=1)
    drawn = labels.reshape(-1)[index]
    assert sorted(torch.bincount(drawn).tolist()) == [4, 4, 4]


def test_etf_transfers_to_the_target_better_than_noise_of_the_same_budget():
    x, y = _scenes(12, 0)
    torch.manual_seed(0)
    target = nn.Sequential(nn.Conv2d(3, 32, 1), nn.ReLU(), nn.Conv2d(32, 3, 1))
    optimizer = torch.optim.Adam(target.parameters(), lr=1e-2)
    for _ in range(150):
        loss = nn.functional.cross_entropy(target(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tx, ty = _scenes(6, 1)
    budget = shot_noise_budget(tx, torch.full((3,), 300.0), epsilon=6.0)
    surrogate = train_surrogate(x, y, 3, samples_per_class=10, steps=200, seed=0)
    generator = torch.Generator().manual_seed(0)
    adversarial = etf_attack(surrogate, tx, budget, ETFConfig(steps=8), generator)
    assert torch.all((adversarial - tx).abs() <= budget * (1 + 1e-6))
    sign = torch.randint(0, 2, tx.shape, generator=generator) * 2 - 1
    noisy = tx + budget * sign
    with torch.no_grad():
        clean = target(tx).argmax(1)
        success = attack_success_rate(clean, target(adversarial).argmax(1), ty)
        random = attack_success_rate(clean, target(noisy).argmax(1), ty)
    assert success > random + 0.05, (success, random)
