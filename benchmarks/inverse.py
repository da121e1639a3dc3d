"""Benchmark: inverse design of a unit cell by three methods, on a dozen target spectra.

Methods (:func:`hyplex.optics.inverse.design`): ``rcwa`` (screening, Adam and an L-BFGS polish
through the differentiable RCWA), ``surrogate`` (the same search through the neural surrogate
:class:`hyplex.optics.surrogate.SpectralSurrogate`, then checked and polished with the RCWA) and
the peer, ``swarm``: an inertia-weight particle swarm (Shi & Eberhart 1998) on the RCWA, the
baseline of ALFRED (Getman et al., Light Sci. Appl. 10, 47 (2021)). The budgets are the
defaults of :class:`hyplex.optics.inverse.Budget`, with the swarm's (24 particles x 10
iterations) set to take about the wall time of ``rcwa`` (48 screened designs, then L-BFGS from
the best 4 distinct ones, 20 gradients each).

Targets: Gaussian band-passes and band-stops, smooth random curves (a few low-order cosine
terms, like the leading principal components of natural spectra), and two spectra of random
designs of the family itself (reachable, so their best error is 0).

Structure and surrogate: the design space is the response library's (``--library``, default
the 10,000-design rectangle library: c-Si rectangles ``width x height`` in a 400 nm square cell
on glass, air above, thickness 100-400 nm, minimum feature and gap 40 nm, RCWA M = 2 on a 64 x
64 grid), so the surrogate is searched only where it was trained and the RCWA that checks and
polishes its optima is the one that made the library. The surrogate is trained on the library
with the default :class:`~hyplex.optics.surrogate_training.SurrogateConfig` (its held-out figures
are reported; training time apart, not in the per-target wall times), or loaded with
``--surrogate`` (``benchmarks/surrogate.py --save``). The search runs on every
``--wavelength-step``-th wavelength of the library's grid (default 2: 16 points, 400-1000 nm
in 40 nm steps), to keep the RCWA stages affordable; the surrogate predicts the full grid and
is read at those points. The unpolarised spectrum is the mean of the surrogate's TE and TM.
``max_abs_dT_forward_vs_library`` re-solves a few library designs with the search's RCWA.

Reproduce (progress and the markdown table go to stderr; the last stdout line is JSON)::

    .venv/bin/python benchmarks/inverse.py --quick    # builds a 300-design M = 1 library; ~2 min
    .venv/bin/python benchmarks/surrogate.py --library out/library_rectangle_10k.h5 \\
        --save out/surrogate_rectangle_10k
    .venv/bin/python benchmarks/inverse.py --library out/library_rectangle_10k.h5 \\
        --surrogate out/surrogate_rectangle_10k         # 12 targets, ~25 min on 2 busy cores
"""
# ruff: noqa: E402  (BLAS thread settings must precede the imports that read them)

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hyplex.optics import inverse
from hyplex.optics.library import ResponseLibrary, SolverSettings, read_library
from hyplex.optics.library_build import build_library
from hyplex.optics.library_spec import LibrarySpec
from hyplex.optics.surrogate import UnpolarisedSpectrum, load_surrogate, save_surrogate
from hyplex.optics.surrogate_training import SurrogateConfig, train_surrogate

PEER = "particle swarm (inertia-weight PSO, Shi & Eberhart 1998; the ALFRED baseline)"
METHODS = ("rcwa", "surrogate", "swarm")
DEFAULT_LIBRARY = Path("out/library_rectangle_10k.h5")
FRACTION = "fraction_mse_below_0.005"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def targets(wavelengths: np.ndarray, forward, seed: int) -> dict[str, np.ndarray]:
    """Twelve named target spectra ``(L,)`` in [0, 1]."""
    rng = np.random.default_rng(seed)
    span = wavelengths.max() - wavelengths.min()
    x = (wavelengths - wavelengths.min()) / span
    out = {}
    for centre, width in ((520, 40), (620, 60), (720, 50), (820, 80)):
        out[f"band-pass {centre}/{width}"] = 0.1 + 0.8 * np.exp(
            -0.5 * ((wavelengths - centre) / width) ** 2
        )
    for centre, width in ((600, 40), (760, 60)):
        out[f"band-stop {centre}/{width}"] = 0.9 - 0.8 * np.exp(
            -0.5 * ((wavelengths - centre) / width) ** 2
        )
    for k in range(4):
        weights = rng.normal(0.0, 1.0, 4) / np.arange(1, 5)
        curve = sum(w * np.cos(np.pi * (i + 1) * x) for i, w in enumerate(weights))
        curve = (curve - curve.min()) / (np.ptp(curve) + 1e-12)
        out[f"smooth {k}"] = 0.15 + 0.7 * curve
    # the designs come from rng, not from a torch generator seeded like the searches' own
    unit = torch.as_tensor(rng.uniform(0.05, 0.95, (2, forward.space.dimension)))
    with torch.no_grad():
        reachable = forward(forward.space.from_unit(unit)).numpy()
    for k in range(2):
        out[f"reachable {k}"] = np.clip(reachable[k], 0.0, 1.0)
    return out


def quick_library(folder: Path) -> Path:
    """A small rectangle library (M = 1, 6 wavelengths) for a smoke run."""
    spec = LibrarySpec(
        family="rectangle",
        count=300,
        wavelengths_nm=tuple(np.linspace(450.0, 950.0, 6).tolist()),
        thickness_range_nm=(100.0, 400.0),
        min_feature_nm=40.0,
        solver=SolverSettings(harmonics=(1, 1), grid=(32, 32)),
    )
    path = folder / "quick_rectangles.h5"
    build_library(path, spec, chunk_size=100, serial=True, progress=False)
    return path


def search_settings(library: ResponseLibrary) -> tuple[str, dict]:
    """The library's design space and solver as keyword arguments of ``inverse.design``."""
    spec = LibrarySpec.from_library(library)
    mx, my = spec.solver.harmonics
    if mx != my or spec.solver.angle_deg != 0.0:
        raise ValueError(
            f"the inverse design runs at normal incidence with square harmonics; the library "
            f"has harmonics {spec.solver.harmonics} and angle {spec.solver.angle_deg} deg"
        )
    return spec.family, {
        "period_nm": spec.period_nm,
        "thickness_bounds_nm": tuple(spec.thickness_range_nm),
        "min_feature_nm": spec.min_feature_nm,
        "material": spec.material,
        "substrate": spec.substrate,
        "superstrate": spec.superstrate,
        "harmonics": int(mx),
        "grid": tuple(spec.solver.grid),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small M = 1 library, ~2 min")
    parser.add_argument(
        "--library", type=Path, help=f"response library (default {DEFAULT_LIBRARY})"
    )
    parser.add_argument("--surrogate", type=Path, help="load this surrogate (.pt + .json)")
    parser.add_argument("--save-surrogate", type=Path, help="write the trained surrogate here")
    parser.add_argument(
        "--wavelength-step", type=int, help="every k-th library wavelength (2; 1 with --quick)"
    )
    parser.add_argument("--targets", type=int, default=12, help="first N of the 12 targets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick and (args.library or args.surrogate):
        parser.error("--quick builds its own library; drop --library and --surrogate")
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as folder:
        path = quick_library(Path(folder)) if args.quick else args.library or DEFAULT_LIBRARY
        library = read_library(path, locking=False).completed()
    family, settings = search_settings(library)
    step = args.wavelength_step or (1 if args.quick else 2)
    indices = np.arange(0, library.wavelengths_nm.size, max(1, step))
    wavelengths = library.wavelengths_nm[indices]
    if args.quick:
        budget = inverse.Budget(
            screen=8, polish=1, polish_evaluations=8, verify=2, surrogate_screen=1024,
            surrogate_steps=100, swarm_size=8, swarm_iterations=5,
        )  # fmt: skip
    else:
        budget = inverse.Budget(swarm_size=24, swarm_iterations=10)  # the rest: defaults

    start = time.perf_counter()
    if args.surrogate:
        model = load_surrogate(args.surrogate)
        model.check_library(library)
        surrogate_record = {"loaded": str(args.surrogate)}
    else:
        config = SurrogateConfig(device="cpu")
        if args.quick:
            config = dataclasses.replace(config, epochs=150, patience=40)
        log(f"training the surrogate on {len(library)} designs ...")
        model, report = train_surrogate(library, config)
        summary = report.summary()
        surrogate_record = {
            "trained_on": str(path),
            **{k: summary[k] for k in ("train_designs", "test_designs", FRACTION)},
            "test_mean_mse": summary["mean_mse"],
        }
        if args.save_surrogate:
            save_surrogate(model, args.save_surrogate)
    model = model.to("cpu").eval()
    training_s = time.perf_counter() - start
    surrogate = UnpolarisedSpectrum(model, indices)
    space = inverse.DesignSpace(
        family, settings["period_nm"], settings["thickness_bounds_nm"], settings["min_feature_nm"]
    )
    forward = inverse.RCWASpectrum(
        space, torch.as_tensor(wavelengths), settings["material"], settings["substrate"],
        settings["superstrate"], settings["harmonics"], settings["grid"],
    )  # fmt: skip
    check = np.arange(min(4, len(library)))
    design_vectors = torch.as_tensor(
        np.column_stack([library.params_nm[check], library.thickness_nm[check]])
    )
    with torch.no_grad():
        resolved = forward(design_vectors).numpy()
    forward_check = float(np.abs(resolved - library.T[check][:, indices].mean(-1)).max())
    named = dict(list(targets(wavelengths, forward, args.seed).items())[: args.targets])
    log(
        f"{len(named)} targets, {family}, M = {settings['harmonics']}, {wavelengths.size} "
        f"wavelengths; surrogate ready in {training_s:.1f} s; RCWA vs library "
        f"{forward_check:.1e}"
    )

    rows = {}
    for name, target in named.items():
        rows[name] = {}
        for method in METHODS:
            result = inverse.design(
                target, wavelengths, family, method, surrogate=surrogate,
                budget=budget, seed=args.seed, progress=False, device="cpu", **settings,
            )  # fmt: skip
            rows[name][method] = result
        log(f"  {name:18s} " + "  ".join(
            f"{m} {rows[name][m].rms_error:.4f} ({rows[name][m].wall_s:.1f} s)" for m in METHODS
        ))  # fmt: skip

    def summary(method):
        results = [rows[name][method] for name in rows]
        rms = [r.rms_error for r in results]
        return {
            "mean_rms": statistics.fmean(rms),
            "median_rms": statistics.median(rms),
            "mean_wall_s": statistics.fmean(r.wall_s for r in results),
            "mean_rcwa_evaluations": statistics.fmean(r.rcwa_evaluations for r in results),
            "best_on": sum(
                min(METHODS, key=lambda m, n=name: rows[n][m].rms_error) == method for name in rows
            ),
        }

    summaries = {method: summary(method) for method in METHODS}
    header = "| target | " + " | ".join(f"{m} RMS | {m} s" for m in METHODS) + " |"
    lines = [header, "|" + "---|" * (1 + 2 * len(METHODS))]
    for name in rows:
        cells = " | ".join(
            f"{rows[name][m].rms_error:.4f} | {rows[name][m].wall_s:.1f}" for m in METHODS
        )
        lines.append(f"| {name} | {cells} |")
    cells = " | ".join(
        f"**{summaries[m]['mean_rms']:.4f}** | **{summaries[m]['mean_wall_s']:.1f}**"
        for m in METHODS
    )
    lines.append(f"| **mean** | {cells} |")
    log("\n" + "\n".join(lines) + "\n")

    def figure(value):
        return float(f"{value:.4g}")

    peer = summaries["swarm"]
    report = {
        "benchmark": "inverse design",
        "peer": PEER,
        "library": str(path),
        "family": family,
        "targets": len(rows),
        "harmonics": settings["harmonics"],
        "grid": list(settings["grid"]),
        "thickness_bounds_nm": list(settings["thickness_bounds_nm"]),
        "min_feature_nm": settings["min_feature_nm"],
        "wavelengths": int(wavelengths.size),
        "wavelength_range_nm": [float(wavelengths[0]), float(wavelengths[-1])],
        "methods": {
            m: {key: figure(value) for key, value in summaries[m].items()} for m in METHODS
        },
        "rms_ratio_rcwa_vs_swarm": figure(summaries["rcwa"]["mean_rms"] / peer["mean_rms"]),
        "rms_ratio_surrogate_vs_swarm": figure(
            summaries["surrogate"]["mean_rms"] / peer["mean_rms"]
        ),
        "wall_ratio_rcwa_vs_swarm": figure(summaries["rcwa"]["mean_wall_s"] / peer["mean_wall_s"]),
        "wall_ratio_surrogate_vs_swarm": figure(
            summaries["surrogate"]["mean_wall_s"] / peer["mean_wall_s"]
        ),
        "surrogate": "hyplex.optics.surrogate.SpectralSurrogate (TE/TM mean)",
        **{f"surrogate_{key}": value for key, value in surrogate_record.items()},
        "surrogate_ready_s": figure(training_s),
        "max_abs_dT_forward_vs_library": forward_check,
        "reachable_targets_recovered_below_0.02": {
            m: sum(rows[n][m].rms_error < 0.02 for n in rows if n.startswith("reachable"))
            for m in METHODS
        },
        "quick": args.quick,
    }
    assert all(math.isfinite(v["mean_rms"]) for v in report["methods"].values())
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
