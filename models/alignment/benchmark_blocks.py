"""The tiny-GPT and alignment blocks of issue 17's benchmark (``benchmarks/unlearning.py``).

``gpt_block(quick, seeds)``: every unlearning method of :data:`hyplex.models.unlearning.METHODS`
on a :class:`TinyGPT` that memorised synthetic facts, forgetting 10 % of them, against a
retrain from scratch on the other 90 %. Per method (mean and std over seeds):

* ``forget``: top-1 accuracy on the forgotten facts' value tokens (retrain: what a model
  that never saw them guesses);
* ``retain``: the same on the kept facts;
* ``mia_auc``: LOSS membership inference, forgotten facts vs facts of entities never trained
  (0.5 = indistinguishable);
* ``seconds``: unlearning wall time;
* ``calibrated_forget``: the forget accuracy after mixing the unlearned weights with the
  original's until the retain accuracy is back at ``original - 0.05`` (the shared evaluator's
  calibration by model mixing; Wang et al., ICLR 2025, sec. 5), with the mixing weight.

``alignment_block(quick, seeds)``: DPO vs PPO gradient-alignment summaries
(:mod:`.preference_dynamics`), TIF/proxy selection vs random (:mod:`.preference_valuation`),
EEPO vs GRPO (:mod:`.exploration_unlearning`).

Both return JSON-ready dicts; timings depend on the machine's load.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from hyplex.models.alignment.exploration_unlearning import compare_eepo_grpo
from hyplex.models.alignment.preference_dynamics import ParityPreference, compare_dpo_ppo
from hyplex.models.alignment.preference_valuation import selection_experiment
from hyplex.models.alignment.tiny_gpt import (
    TinyGPTConfig,
    fact_accuracy,
    fact_batches,
    make_facts,
    train_tiny_gpt,
)

__all__ = ["gpt_block", "alignment_block", "gpt_seed", "alignment_seed"]


def _settings(quick: bool) -> dict:
    if quick:
        return {"entities": 33, "train_steps": 300, "unlearn_steps": 30, "d_model": 32}
    return {"entities": 66, "train_steps": 600, "unlearn_steps": 60, "d_model": 64}


def gpt_seed(seed: int, quick: bool = True, methods=None, device="cpu") -> dict:
    """One seed of :func:`gpt_block`: ``{"original", "retrain", method: {...}}``."""
    from hyplex.models.unlearning import METHODS, unlearn
    from hyplex.models.unlearning.evaluation import calibrate_by_mixing, mia_auc

    s = _settings(quick)
    facts = make_facts(s["entities"], 4, 16, seed=seed)
    rng = np.random.default_rng(seed)
    # 3 entities (12 facts) are never trained: the MIA's non-members
    entity_order = rng.permutation(s["entities"])
    heldout_entities = entity_order[:3]
    trained = ~np.isin(facts.entities, heldout_entities)
    trained_idx = np.flatnonzero(trained)
    forget_idx = np.sort(rng.choice(trained_idx, int(round(0.1 * len(trained_idx))), False))
    retain_idx = np.setdiff1d(trained_idx, forget_idx)
    train_set = facts.subset(trained_idx)
    forget, retain = facts.subset(forget_idx), facts.subset(retain_idx)
    heldout = facts.subset(np.flatnonzero(~trained))
    config = TinyGPTConfig(facts.vocabulary.size, d_model=s["d_model"])
    steps = s["train_steps"]
    original = train_tiny_gpt(train_set, config, steps=steps, seed=seed, device=device)
    start = time.perf_counter()
    retrained = train_tiny_gpt(retain, config, steps=steps, seed=seed, device=device)
    retrain_seconds = time.perf_counter() - start
    f_batches, r_batches = fact_batches(forget, device=device), fact_batches(retain, 64, device)
    members, nonmembers = fact_batches(forget, 1, device), fact_batches(heldout, 1, device)

    def row(model, seconds=None):
        out = {
            "forget": fact_accuracy(model, forget),
            "retain": fact_accuracy(model, retain),
            "mia_auc": mia_auc(model, members, nonmembers),
        }
        if seconds is not None:
            out["seconds"] = seconds
        return out

    result = {"original": row(original), "retrain": row(retrained, retrain_seconds)}
    target = result["original"]["retain"] - 0.05
    for name in methods or sorted(METHODS):
        start = time.perf_counter()
        model = unlearn(
            original,
            f_batches,
            r_batches,
            name,
            steps=s["unlearn_steps"],
            lr=1e-3,
            seed=seed,
            device=device,
        )
        entry = row(model, time.perf_counter() - start)
        alpha, mixed = calibrate_by_mixing(
            original, model, lambda m: fact_accuracy(m, retain), target
        )
        entry["calibrated_forget"] = fact_accuracy(mixed, forget)
        entry["calibration_alpha"] = float(alpha)
        result[name] = entry
    return result


def _aggregate(runs: list[dict]) -> dict:
    """Mean (and ``<key>_std``) of numeric leaves over seeds, keeping the nesting."""
    first = runs[0]
    out = {}
    for key, value in first.items():
        if isinstance(value, dict):
            out[key] = _aggregate([r[key] for r in runs])
        elif isinstance(value, int | float) and not isinstance(value, bool):
            values = np.array([r[key] for r in runs], dtype=float)
            out[key] = float(values.mean())
            if len(runs) > 1:
                out[f"{key}_std"] = float(values.std())
    return out


def gpt_block(quick: bool = True, seeds: int = 3) -> dict:
    """Tiny GPT, synthetic facts, forget 10 %: ``method -> {forget, retain, mia_auc,
    seconds, calibrated_forget, calibration_alpha}`` (means over ``seeds``; ``*_std``
    beside), with ``original`` and ``retrain`` rows and ``retrain_seconds``."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1; got {seeds}")
    torch.set_num_threads(1)
    runs = [gpt_seed(seed, quick) for seed in range(seeds)]
    table = _aggregate(runs)
    table["retrain_seconds"] = table["retrain"].pop("seconds")
    table["retrain"].pop("seconds_std", None)
    table["seeds"] = seeds
    return table


def alignment_seed(seed: int, quick: bool = True, device="cpu") -> dict:
    """One seed of :func:`alignment_block`."""
    facts = make_facts(40, 4, 16, seed=seed)
    base = train_tiny_gpt(
        facts, TinyGPTConfig(facts.vocabulary.size, d_model=32), steps=300, seed=seed, device=device
    )
    dynamics = compare_dpo_ppo(
        base,
        ParityPreference(facts.subset(range(60))),
        steps=20 if quick else 40,
        seed=seed,
        device=device,
    )
    selection = selection_experiment(
        base,
        ParityPreference(facts.subset(range(100))),
        ParityPreference(facts.subset(range(100, 120))),
        ParityPreference(facts.subset(range(120, 160))),
        flip_fraction=0.4,
        seed=seed,
        device=device,
    )
    exploration = compare_eepo_grpo(seed=seed, device=device)
    return {"dpo_vs_ppo": dynamics, "preference_selection": selection, "eepo_vs_grpo": exploration}


def alignment_block(quick: bool = True, seeds: int = 3) -> dict:
    """DPO vs PPO diagnostics, TIF selection vs random, EEPO vs GRPO (means over seeds)."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1; got {seeds}")
    torch.set_num_threads(1)
    runs = [alignment_seed(seed, quick) for seed in range(seeds)]
    out = _aggregate(runs)
    # the seed means are already in ``out``
    sel, eepo, dyn = (out[k] for k in ("preference_selection", "eepo_vs_grpo", "dpo_vs_ppo"))
    out["checks"] = {
        "tif_beats_random": sel["TIF"]["preferred_mass"] > sel["random"]["preferred_mass"],
        "eepo_pass_rate_beats_grpo": eepo["EEPO"]["pass_rate"] > eepo["GRPO"]["pass_rate"],
        "eepo_explores_more": (eepo["EEPO"]["distinct_answers"] > eepo["GRPO"]["distinct_answers"]),
        "dpo_alignment_steadier_than_ppo": (
            dyn["DPO"]["positive_share"] > dyn["PPO"]["positive_share"]
        ),
    }
    out["seeds"] = seeds
    return out
