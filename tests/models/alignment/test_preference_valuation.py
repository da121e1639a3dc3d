"""Preference-data valuation: the truncation by hand, and TIF selection against a random
subset of a noisy pool on the tiny GPT (fixed seeds)."""

import numpy as np
import pytest
import torch

from hyplex.models.alignment.preference_dynamics import ParityPreference
from hyplex.models.alignment.preference_valuation import (
    influence,
    lossdiff_irm,
    select_top,
    selection_experiment,
    truncated_influence,
)
from hyplex.models.alignment.tiny_gpt import TinyGPTConfig, make_facts, train_tiny_gpt


def test_truncation_by_hand():
    g_train = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    g_val = torch.tensor([[10.0, 0.0], [1.0, 1.0], [1.0, -1.0]])
    # terms: pair 0 -> [10, 1, 1], pair 1 -> [0, 1, -1]
    assert np.allclose(influence(g_train, g_val), [4.0, 0.0])
    # tau = quantile 0.5 of |terms| = 1: pair 0's one large term no longer dominates
    assert np.allclose(truncated_influence(g_train, g_val, 0.5), [1.0, 0.0])
    assert np.allclose(truncated_influence(g_train, g_val, 1.0), influence(g_train, g_val))
    assert list(select_top(np.array([0.1, 0.9, 0.5, 0.7]), 0.5)) == [1, 3]
    assert np.allclose(lossdiff_irm(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])), 0.5)


def test_tif_selection_beats_random_on_a_noisy_pool():
    facts = make_facts(40, 4, 16, seed=0)
    base = train_tiny_gpt(
        facts, TinyGPTConfig(facts.vocabulary.size, d_model=32), steps=300, device="cpu"
    )
    pool = ParityPreference(facts.subset(range(100)))
    validation = ParityPreference(facts.subset(range(100, 120)))
    test = ParityPreference(facts.subset(range(120, 160)))
    runs = [
        selection_experiment(base, pool, validation, test, flip_fraction=0.4, seed=s, device="cpu")
        for s in (0, 1)
    ]
    mean = lambda key, field: np.mean([r[key][field] for r in runs])  # noqa: E731
    assert mean("TIF", "preferred_mass") > mean("random", "preferred_mass") + 0.03
    assert mean("TIF", "flipped_share") < mean("random", "flipped_share")
    assert mean("TIF", "preferred_mass") > mean("IF", "preferred_mass")  # truncation helps


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="quantile"):
        truncated_influence(torch.zeros(1, 2), torch.zeros(1, 2), 0.0)
    with pytest.raises(ValueError, match="fraction"):
        select_top(np.zeros(3), 1.5)
