"""The tiny GPT learns its synthetic facts from scratch, deterministically."""

import numpy as np
import pytest
import torch

from hyplex.models.alignment.tiny_gpt import (
    TinyGPT,
    TinyGPTConfig,
    answer_log_probs,
    fact_accuracy,
    fact_batches,
    make_facts,
    next_token_batch,
    train_tiny_gpt,
)


def test_facts_layout():
    facts = make_facts(5, 2, 4, seed=3)
    assert len(facts) == 10 and facts.tokens.shape == (10, 5)
    v = facts.vocabulary
    assert (facts.tokens[:, 0] == v.BOS).all() and (facts.tokens[:, 4] == v.EOS).all()
    assert (facts.tokens[:, 3] - v.value_offset == facts.values).all()
    inputs, targets, mask = next_token_batch(facts)
    assert inputs.shape == targets.shape == mask.shape == (10, 4)
    assert mask.sum() == 10 and (targets[mask] == torch.as_tensor(facts.tokens[:, 3])).all()
    assert sum(len(b[0]) for b in fact_batches(facts, 4)) == 10


def test_tiny_gpt_learns_its_facts_deterministically():
    facts = make_facts(20, 2, 8, seed=0)
    config = TinyGPTConfig(facts.vocabulary.size, d_model=32)
    untrained = TinyGPT(config)
    assert fact_accuracy(untrained, facts) < 0.4
    a = train_tiny_gpt(facts, config, steps=150, seed=1, device="cpu")
    b = train_tiny_gpt(facts, config, steps=150, seed=1, device="cpu")
    assert fact_accuracy(a, facts) == 1.0
    assert torch.equal(answer_log_probs(a, facts), answer_log_probs(b, facts))
    assert float(answer_log_probs(a, facts).mean()) > np.log(0.5)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="divisible"):
        TinyGPTConfig(10, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="context"):
        TinyGPT(TinyGPTConfig(10, context=4))(torch.zeros(1, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="n_values"):
        make_facts(3, 1, 1)
