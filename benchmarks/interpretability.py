"""Benchmark: interpretable real-versus-fake decisions on metapixel barcodes (issue 17).

Data (per seed): twin scenes (``hyplex.models.data.generate_scenes``, 31 bands 400-1000 nm)
with real vegetation and its metameric painted fakes; pixels of both are encoded by 9
Gaussian band-pass filters (40 nm standard deviation, centres 420-980 nm; noise-free
``barcode = R @ spectrum``), each barcode divided by its sum so that shading drops out
(its *shape* decides), plus 1 % Gaussian read noise.

* ``kernel``: the LS-SVM trade-off of :mod:`hyplex.models.interpretability.kernel_interpretability`
  (held-out accuracy and interpretability index for the additive-to-full kernel mix ``mu``;
  the balanced ``mu``).
* ``rules``: a fully connected real/fake head (9 binary literals "channel d above its
  training median" -> 8 ReLU -> 2) trained from scratch, its minimal rules
  (:mod:`hyplex.models.interpretability.rule_extraction`, read from its truth table, at
  most 4 literals), their
  fidelity to the head and accuracy on held-out pixels, against the head's own accuracy;
  then 3 rounds of the rule game (rules of at most 3 literals read, the head trained towards
  them; ``rule_game``) and the same figures after it (``after_game``).

Reproduce (last stdout line: one JSON object)::

    .venv/bin/python benchmarks/interpretability.py --seeds 3

Seconds depend on the machine's load (the team's 2 cores are shared).
"""
# ruff: noqa: E402  (thread settings must precede the imports that read them)

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

from hyplex.models.data import generate_scenes
from hyplex.models.interpretability.kernel_interpretability import interpretability_tradeoff
from hyplex.models.interpretability.rule_extraction import (
    extract_rules_exhaustive,
    rule_fidelity,
    rule_game,
    rules_predict,
)

GRID_NM = np.linspace(400.0, 1000.0, 31)


def barcodes_real_fake(seed: int, per_class: int = 400):
    """``(barcodes (N, 9), is_fake (N,) int)``, balanced, shuffled (see the module doc)."""
    scenes = generate_scenes(GRID_NM, 12, seed=seed, shape=(48, 48), fake_fraction=0.5)
    names = scenes.class_names
    real, fake = names.index("vegetation"), names.index("fake_vegetation")
    flat = scenes.cubes.reshape(-1, GRID_NM.size)
    labels = scenes.class_maps.reshape(-1)
    rng = np.random.default_rng(seed)
    picks = []
    for class_id in (real, fake):
        where = np.flatnonzero(labels == class_id)
        if len(where) < per_class:
            raise RuntimeError(f"only {len(where)} pixels of {names[class_id]} in the scenes")
        picks.append(rng.choice(where, per_class, replace=False))
    centres = np.linspace(420.0, 980.0, 9)
    responses = np.exp(-0.5 * ((GRID_NM[None] - centres[:, None]) / 40.0) ** 2)
    spectra = flat[np.concatenate(picks)].astype(float)
    codes = spectra @ responses.T
    codes = codes / codes.sum(1, keepdims=True)
    codes += 0.01 * codes.mean() * rng.standard_normal(codes.shape)
    target = np.repeat([0, 1], per_class)
    order = rng.permutation(len(target))
    return codes[order], target[order]


def rules_block(x_train, y_train, x_test, y_test, seed: int) -> dict:
    threshold = np.median(x_train, 0)
    b_train = (x_train > threshold).astype(np.float32)
    b_test = (x_test > threshold).astype(np.float32)
    torch.manual_seed(seed)
    head = nn.Sequential(nn.Linear(9, 8), nn.ReLU(), nn.Linear(8, 2))
    from hyplex.models.unlearning.toolkit import Adam

    optimizer = Adam(head.parameters(), 1e-2)
    inputs, targets = torch.as_tensor(b_train), torch.as_tensor(y_train)
    for _ in range(300):
        optimizer.step(nn.functional.cross_entropy(head(inputs), targets))
    with torch.no_grad():
        head_accuracy = float((head(torch.as_tensor(b_test)).argmax(1).numpy() == y_test).mean())
    start = time.perf_counter()
    rules = extract_rules_exhaustive(head, 9, max_literals=4)
    seconds = time.perf_counter() - start
    names = [f"ch{d}>{threshold[d]:.3f}" for d in range(9)]
    out = {
        "head_accuracy": head_accuracy,
        "rules": [r.describe(names) for r in rules][:12],
        "n_rules": len(rules),
        "rule_accuracy": float((rules_predict(rules, b_test) == y_test).mean()),
        "fidelity": rule_fidelity(rules, head, b_test),
        "extraction_seconds": seconds,
    }
    rule_game(head, b_train, y_train, rounds=3, max_literals=3)
    rules = extract_rules_exhaustive(head, 9, max_literals=3)
    with torch.no_grad():
        after = float((head(torch.as_tensor(b_test)).argmax(1).numpy() == y_test).mean())
    out["after_game"] = {
        "head_accuracy": after,
        "n_rules": len(rules),
        "rule_accuracy": float((rules_predict(rules, b_test) == y_test).mean()),
        "fidelity": rule_fidelity(rules, head, b_test),
        "rules": [r.describe(names) for r in rules][:12],
    }
    return out


def run_seed(seed: int) -> dict:
    x, y = barcodes_real_fake(seed)
    half = len(y) // 3
    kernel = interpretability_tradeoff(x[:half], y[:half], x[half:], y[half:])
    return {"kernel": kernel, "rules": rules_block(x[:half], y[:half], x[half:], y[half:], seed)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    torch.set_num_threads(1)
    runs = [run_seed(seed) for seed in range(args.seeds)]
    mus = [e["mu"] for e in runs[0]["kernel"]["curve"]]
    curve = [
        {
            "mu": mu,
            "accuracy": float(np.mean([r["kernel"]["curve"][i]["accuracy"] for r in runs])),
            "interpretability": float(
                np.mean([r["kernel"]["curve"][i]["interpretability"] for r in runs])
            ),
        }
        for i, mu in enumerate(mus)
    ]
    mean = lambda key: float(np.mean([r["rules"][key] for r in runs]))  # noqa: E731
    result = {
        "kernel_curve": curve,
        "balanced_mu": [r["kernel"]["balanced"]["mu"] for r in runs],
        "rules": {
            key: mean(key)
            for key in (
                "head_accuracy",
                "rule_accuracy",
                "fidelity",
                "n_rules",
                "extraction_seconds",
            )
        },
        "after_game": {
            key: float(np.mean([r["rules"]["after_game"][key] for r in runs]))
            for key in ("head_accuracy", "rule_accuracy", "fidelity", "n_rules")
        },
        "rules_seed0": runs[0]["rules"]["rules"],
        "rules_seed0_after_game": runs[0]["rules"]["after_game"]["rules"],
        "seeds": args.seeds,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
