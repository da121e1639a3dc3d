"""The unlearning toolkit's language-model methods on the tiny GPT: forgetting 10 % of the
synthetic facts lowers their accuracy while the kept facts stay known (fixed seed)."""

import numpy as np
import pytest

from hyplex.models.alignment.tiny_gpt import (
    TinyGPTConfig,
    fact_accuracy,
    fact_batches,
    make_facts,
    train_tiny_gpt,
)
from hyplex.models.unlearning import unlearn


@pytest.fixture(scope="module")
def case():
    facts = make_facts(20, 2, 8, seed=0)
    model = train_tiny_gpt(
        facts, TinyGPTConfig(facts.vocabulary.size, d_model=32), steps=150, device="cpu"
    )
    forget_idx = np.arange(0, len(facts), 10)  # 10 %
    retain_idx = np.setdiff1d(np.arange(len(facts)), forget_idx)
    return model, facts.subset(forget_idx), facts.subset(retain_idx)


@pytest.mark.parametrize("method", ["NPO", "WGA", "GRU"])
def test_language_model_methods_forget_facts_and_keep_the_rest(case, method):
    model, forget, retain = case
    assert fact_accuracy(model, forget) == 1.0
    forgotten = unlearn(
        model, fact_batches(forget), fact_batches(retain), method, steps=30, lr=1e-3, device="cpu"
    )
    assert fact_accuracy(forgotten, forget) <= 0.25
    assert fact_accuracy(forgotten, retain) >= 0.8  # NPO keeps 0.86 here, WGA and GRU 1.0
    assert fact_accuracy(model, forget) == 1.0  # the original is untouched
