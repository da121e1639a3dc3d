"""Check a co-design run on an unconverged library: re-solve the nine designs its separability
row chose at a converged RCWA order, retrain that row on them, and compare.

The 4000-design library of ``hyplex library build`` defaults (M = 2) is off from converged
spectra by about 0.25 rms in transmittance at 400-740 nm, so a selection made on it may not
hold on the real devices. This script takes the designs that ``benchmarks/codesign.py
--library out/library_rectangle_4000.h5`` stored for a seed (``benchmarks/results/
codesign_library4000.json``: the seed-0 run's ``rows.codesign.design.library_indices``, the
other seeds' ``other_seeds[s].codesign_library_indices``), re-solves them at the shipped quick
library's fidelity (M = 8, 128 px cell raster, complex64; the quick library's convergence
probe, README "Converged physics"), builds a nine-design library of those spectra at the
library's wavelengths up to 740 nm, and trains the benchmark's ``codesign`` row on it
(:func:`benchmarks.codesign.run_rows`, the same config and seed; the row's separability
selection then orders the nine). ``--control`` also trains on the same nine designs' M = 2
spectra, which reproduces the full run's row.

Reproduce (the last stdout line is one JSON object)::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/codesign_refine_check.py \\
        --seed 0 [--control]     # ~5 min per seed on 2 cores
"""
# ruff: noqa: E402  (BLAS thread settings must precede the imports that read them)

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULT = HERE / "results" / "codesign_library4000.json"


def chosen_designs(result: dict, seed: int) -> list[int]:
    """The library indices the separability row chose on ``seed`` in a stored result."""
    if seed == result.get("config", {}).get("seed", 0):
        return list(result["rows"]["codesign"]["design"]["library_indices"])
    other = result.get("other_seeds", {}).get(str(seed))
    if other is None:
        raise SystemExit(f"{RESULT.name} holds no run for seed {seed}")
    return list(other["codesign_library_indices"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--library", type=Path, default=ROOT / "out" / "library_rectangle_4000.h5")
    parser.add_argument("--harmonics", type=int, default=8, help="RCWA order M of the re-solve")
    parser.add_argument("--control", action="store_true", help="also train on the M = 2 spectra")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "out" / "codesign_bench")
    args = parser.parse_args(argv)

    from hyplex.models.multifidelity_selection import pool_library, rcwa_solver
    from hyplex.optics.library import SolverSettings, read_library

    if not args.library.exists():
        raise SystemExit(
            f"{args.library} not found: build it as the README's co-design section says"
        )
    result = json.loads(RESULT.read_text().strip().splitlines()[-1])
    designs = chosen_designs(result, args.seed)
    library = read_library(args.library)
    wavelengths = library.wavelengths_nm
    keep = wavelengths <= 740.0
    solver = SolverSettings(harmonics=(args.harmonics,) * 2, grid=(128, 128), precision="complex64")
    began = time.perf_counter()
    refined = []
    for index in designs:  # one at a time, for the progress line
        refined.append(rcwa_solver(library, [index], wavelengths[keep], solver)[0])
        print(f"design {index} re-solved at M = {args.harmonics}", file=sys.stderr, flush=True)
    refined = np.stack(refined)
    original = library.T[designs][:, keep]
    rms = float(np.sqrt(np.mean((refined - original) ** 2)))
    solve_seconds = time.perf_counter() - began

    bench_spec = importlib.util.spec_from_file_location("codesign_benchmark", HERE / "codesign.py")
    bench = importlib.util.module_from_spec(bench_spec)
    sys.modules["codesign_benchmark"] = bench
    bench_spec.loader.exec_module(bench)
    torch.set_num_threads(1)
    config = bench.benchmark_config("full", None, seed=args.seed, distinct_designs=False)
    rows = [row for row in bench.ROWS if row.key == "codesign"]
    variants = {f"m{args.harmonics}": (refined, solver)}
    if args.control:
        variants["library_order"] = (original, library.solver)
    out = {"seed": args.seed, "library_indices": designs, "rms_T_400_740nm": rms,
           "solve_seconds": round(solve_seconds, 1)}  # fmt: skip
    full_cube = (
        result["rows"]["identity"]["miou"]
        if args.seed == result.get("config", {}).get("seed", 0)
        else result["other_seeds"][str(args.seed)]["rows_miou"]["identity"]
    )
    for name, (spectra, settings) in variants.items():
        subset = pool_library(library, designs, spectra, settings, wavelengths[keep])

        def log(line):
            print(line, file=sys.stderr, flush=True)

        figures = bench.run_rows(config, subset, args.cache_dir / "scenes", rows=rows, log=log)
        miou = figures["codesign"]["miou"]
        out[name] = {"miou": miou, "psnr": figures["codesign"]["psnr"],
                     "miou_over_full_cube": miou / full_cube}  # fmt: skip
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
