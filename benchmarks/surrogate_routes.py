"""Benchmark: which route to a surrogate of *converged* RCWA spectra costs least compute.

The surrogate goal (ALFRED's figure, Peng et al., Light Sci. Appl. 2021): >= 98 % of held-out
designs with spectrum MSE < 0.005, here against converged spectra. Three routes, all scored on
the same held-out designs of the converged library (a seeded ``--test-fraction`` of it):

    a  low-order only     a surrogate trained on the low-order library (its designs minus the
                          held-out ones), scored against the converged spectra
    b  converged only     a surrogate trained on n converged designs
    c  multi-fidelity     route a's surrogate, frozen, plus a correction network trained on the
                          same n converged designs (:mod:`hyplex.optics.multifidelity`)

Routes b and c run for every n of ``--sizes`` (a learning curve). Two references: the
low-order library's own spectra (the RCWA at low order, no surrogate) and the mean converged
training spectrum. Compute per route: the RCWA time its training data cost (designs x the
solve seconds per design each library recorded while it was built, summed over its Dask
workers) plus the training time on this machine.

Both libraries must hold one design list (one stack, one seed: row ``i`` is the same design;
designs are matched by their parameters, so any overlap works). Build them with, e.g.::

    .venv/bin/hyplex library build --out out/issue21/rect_m2_10k.h5 --count 10000 \\
        --factorization li --no-accuracy                 # M = 2, as the 50,000-design library
    .venv/bin/hyplex library build --out out/issue21/rect_converged.h5 --count 600 \\
        --grid 128 --precision complex64 --target-accuracy 0.01
    .venv/bin/python benchmarks/surrogate_routes.py --low out/issue21/rect_m2_10k.h5 \\
        --converged out/issue21/rect_converged.h5 --sizes 100 200 400

The last stdout line is one JSON object.
"""
# ruff: noqa: E402  (BLAS thread settings must precede the imports that read them)

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from hyplex.optics.library import read_library, read_metadata
from hyplex.optics.multifidelity import train_multifidelity
from hyplex.optics.parallel import use_safe_threading
from hyplex.optics.surrogate_training import (
    SurrogateConfig,
    fraction_below,
    spectrum_mse,
    train_surrogate,
)

GOAL = 0.98
CORRECTION = SurrogateConfig(
    hidden=128,
    blocks=2,
    fourier_features=32,
    members=1,
    epochs=300,
    batch_size=32,
    learning_rate=2e-3,
    patience=60,
    weight_decay=1e-4,
)


def _designs(library) -> np.ndarray:
    return np.column_stack([library.params_nm, library.thickness_nm])


def _match(designs, others):
    where = {row.tobytes(): j for j, row in enumerate(np.ascontiguousarray(others))}
    pairs = [(i, where[r.tobytes()]) for i, r in enumerate(designs) if r.tobytes() in where]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2).T


def _seconds_per_design(path) -> float:
    """RCWA seconds per design recorded in the file (solver time per chunk / designs done)."""
    meta = read_metadata(path, locking=False)
    return meta["solve_seconds"] / max(1, meta["done"])


def _score(predicted, truth) -> dict:
    mse = spectrum_mse(predicted, truth)
    return {
        "fraction_mse_below_0.005": fraction_below(mse),
        "mean_mse": float(np.mean(mse)),
        "median_mse": float(np.median(mse)),
    }


def _split(count: int, validation_share: float, seed: int):
    """(train, validation) of the first ``count`` rows of a seeded order of the pool."""
    n_val = max(4, round(validation_share * count))
    return np.arange(n_val, count), np.arange(n_val)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--low", type=Path, required=True, help="low-order library HDF5")
    parser.add_argument("--converged", type=Path, required=True, help="converged library HDF5")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 400])
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--validation-share", type=float, default=0.15)
    parser.add_argument("--low-members", type=int, default=SurrogateConfig.members)
    parser.add_argument("--low-epochs", type=int, default=SurrogateConfig.epochs)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    use_safe_threading()
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731

    low_lib = read_library(args.low, locking=False).completed()
    high = read_library(args.converged, locking=False).completed()
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(high))
    n_test = max(1, round(args.test_fraction * len(high)))
    test, pool = order[:n_test], order[n_test:]
    # the held-out designs' low-order spectra stay out of route a's training data
    low_rows, high_rows = _match(_designs(low_lib), _designs(high))
    held_out = np.isin(high_rows, test)
    keep = np.setdiff1d(np.arange(len(low_lib)), low_rows[held_out])
    truth = high.T[test]
    result = {
        "benchmark": "surrogate_routes",
        "low_library": str(args.low),
        "converged_library": str(args.converged),
        "low_solver": low_lib.solver.to_dict(),
        "converged_solver": high.solver.to_dict(),
        "converged_accuracy": read_metadata(args.converged, locking=False)["accuracy"],
        "low_accuracy": read_metadata(args.low, locking=False)["accuracy"],
        "test_designs": int(test.size),
        "goal_fraction": GOAL,
        "rcwa_s_per_design": {
            "low": _seconds_per_design(args.low),
            "converged": _seconds_per_design(args.converged),
        },
    }
    # the low-order RCWA itself on the held-out designs (where the low library has them)
    in_low = np.flatnonzero(np.isin(test, high_rows))
    by_high = dict(zip(high_rows.tolist(), low_rows.tolist(), strict=True))
    if in_low.size:
        rows = [by_high[int(i)] for i in test[in_low]]
        result["low_order_rcwa"] = _score(low_lib.T[rows], truth[in_low]) | {
            "designs": int(in_low.size)
        }
    result["mean_spectrum"] = _score(np.broadcast_to(high.T[pool].mean(0), truth.shape), truth)

    log(f"route a: surrogate of {keep.size} low-order designs ...")
    low_config = SurrogateConfig(members=args.low_members, epochs=args.low_epochs, seed=args.seed)
    a_library = low_lib.subset(keep)
    order_a = np.random.default_rng(args.seed).permutation(len(a_library))
    n_val = max(1, round(0.1 * len(a_library)))
    splits = (order_a[n_val:], order_a[:n_val], np.zeros(0, dtype=np.int64))
    began = time.perf_counter()
    low_model, _ = train_surrogate(a_library, low_config, splits=splits)
    a_seconds = time.perf_counter() - began
    predicted = low_model.predict(high.params_nm[test], high.thickness_nm[test])
    result["route_a"] = _score(predicted, truth) | {
        "low_designs": int(keep.size),
        "train_seconds": round(a_seconds, 1),
        "rcwa_seconds": keep.size * result["rcwa_s_per_design"]["low"],
    }
    if in_low.size:
        rows = [by_high[int(i)] for i in test[in_low]]
        result["route_a"]["vs_low_order_fraction"] = fraction_below(
            spectrum_mse(predicted[in_low], low_lib.T[rows])
        )

    result["route_b"], result["route_c"] = [], []
    for n in args.sizes:
        if n > pool.size:
            log(f"skipping n={n}: only {pool.size} converged designs outside the test split")
            continue
        train, val = _split(n, args.validation_share, args.seed)
        train, val = pool[train], pool[val]
        empty = np.zeros(0, dtype=np.int64)
        rcwa = n * result["rcwa_s_per_design"]["converged"]
        log(f"route b: surrogate of {n} converged designs ...")
        began = time.perf_counter()
        b_config = replace(low_config, batch_size=min(128, max(16, n // 8)), epochs=200,
                           patience=60)  # fmt: skip
        model_b, _ = train_surrogate(high, b_config, splits=(train, val, empty))
        b_score = _score(model_b.predict(high.params_nm[test], high.thickness_nm[test]), truth)
        result["route_b"].append(
            b_score
            | {
                "n": n,
                "train_seconds": round(time.perf_counter() - began, 1),
                "rcwa_seconds": rcwa,
            }  # fmt: skip
        )
        log(f"route c: correction from {n} converged designs ...")
        began = time.perf_counter()
        model_c, _ = train_multifidelity(
            low_model, high, replace(CORRECTION, seed=args.seed), splits=(train, val, empty)
        )
        c_score = _score(model_c.predict(high.params_nm[test], high.thickness_nm[test]), truth)
        result["route_c"].append(
            c_score
            | {
                "n": n,
                "train_seconds": round(time.perf_counter() - began + a_seconds, 1),
                "rcwa_seconds": rcwa + result["route_a"]["rcwa_seconds"],
            }  # fmt: skip
        )
        log(f"n={n}: b {b_score['fraction_mse_below_0.005']:.3f}, "
            f"c {c_score['fraction_mse_below_0.005']:.3f}")  # fmt: skip
    result["torch_threads"] = torch.get_num_threads()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
