"""Rule extraction recovers the rule planted in a fully connected head."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from hyplex.models.interpretability.rule_extraction import (
    Rule,
    extract_head_rules,
    extract_rules_exhaustive,
    rule_fidelity,
    unit_rules,
)

ALL_INPUTS = np.array(list(itertools.product((0, 1), repeat=5)))


def test_unit_rules_by_hand():
    # 2 x0 + 2 x1 - 3 > 0  <=>  x0 AND x1
    assert [r.literals for r in unit_rules([2.0, 2.0, 0.0], -3.0)] == [frozenset({(0, 1), (1, 1)})]
    # off when x0 = 0 or when x1 = 0
    off = {r.literals for r in unit_rules([2.0, 2.0, 0.0], -3.0, on=False)}
    assert off == {frozenset({(0, 0)}), frozenset({(1, 0)})}


def _planted_head():
    """fake <=> (x0 AND x3) OR (x1 AND NOT x2), through two ReLU hidden units."""
    head = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        head[0].weight.copy_(
            torch.tensor(
                [
                    [4.0, 0, 0, 4.0, 0],  # h0: x0 AND x3
                    [0, 4.0, -8.0, 0, 0],  # h1: x1 AND NOT x2
                    [0, 0, 0, 0, 0.1],  # h2: noise unit, never decisive
                ]
            )
        )
        head[0].bias.copy_(torch.tensor([-6.0, -2.0, -1.0]))
        head[2].weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [3.0, 3.0, 0.1]]))
        head[2].bias.copy_(torch.tensor([1.0, 0.0]))
    return head


def test_rules_reproduce_a_planted_head():
    head = _planted_head()
    rules = extract_head_rules(head, max_literals=2)
    found = {r.literals for r in rules}
    assert found == {frozenset({(0, 1), (3, 1)}), frozenset({(1, 1), (2, 0)})}
    assert rule_fidelity(rules, head, ALL_INPUTS) == 1.0
    assert Rule(frozenset({(0, 1), (3, 1)})).describe(list("abcde")) == "a AND d => on"


def test_bad_heads_are_named():
    with pytest.raises(ValueError, match="nn.Linear"):
        extract_head_rules(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 1)))
    with pytest.raises(ValueError, match="finite"):
        unit_rules([np.nan], 0.0)


def test_exhaustive_rules_match_the_decompositional_ones_on_a_planted_head():
    head = _planted_head()
    rules = extract_rules_exhaustive(head, 5, max_literals=2)
    assert {r.literals for r in rules} == {frozenset({(0, 1), (3, 1)}), frozenset({(1, 1), (2, 0)})}
    assert rule_fidelity(rules, head, ALL_INPUTS) == 1.0
    with pytest.raises(ValueError, match="n_inputs"):
        extract_rules_exhaustive(head, 20)


def _trained_head(x, y, seed=0):
    from hyplex.models.unlearning.toolkit import Adam

    torch.manual_seed(seed)
    head = nn.Sequential(nn.Linear(x.shape[1], 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = Adam(head.parameters(), 2e-2)
    inputs, targets = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(400):
        optimizer.step(nn.functional.cross_entropy(head(inputs), targets))
    return head


def test_the_game_pulls_the_head_towards_its_rules():
    from hyplex.models.interpretability.rule_extraction import rule_game

    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(400, 6)).astype(np.float32)
    # a 3-literal conjunction that rules of at most 2 literals cannot express
    y = ((x[:, 0] * x[:, 1] * x[:, 3] + x[:, 2]) > 0).astype(int)
    game = rule_game(_trained_head(x, y), x, y, rounds=3, max_literals=2)
    assert game[0]["head_accuracy"] == 1.0 and game[0]["fidelity"] < 0.96
    assert game[-1]["fidelity"] == 1.0  # the head now follows its rules everywhere
    assert game[-1]["head_accuracy"] >= game[0]["rule_accuracy"]  # costs no more than that
    # the baseline: the same rounds without the pull towards the rules
    plain = rule_game(_trained_head(x, y), x, y, rounds=3, max_literals=2, logic_weight=0.0)
    assert plain[-1]["fidelity"] < 0.96
