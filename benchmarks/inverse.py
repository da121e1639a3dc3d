"""Benchmark: inverse design of a unit cell by three methods, on a dozen target spectra.

Methods (:func:`hyplex.optics.inverse.design`): ``rcwa`` (screening, Adam and an L-BFGS polish
through the differentiable RCWA), ``surrogate`` (the same search through a surrogate, then
checked and polished with the RCWA) and the peer, ``swarm``: an inertia-weight particle swarm
(Shi & Eberhart 1998) on the RCWA, the baseline of ALFRED (Getman et al., Light Sci. Appl. 10,
47 (2021)). The budgets are the defaults of :class:`hyplex.optics.inverse.Budget`, with the swarm's
(24 particles x 10 iterations) set to take about the wall time of ``rcwa`` (48 screened
designs, then L-BFGS from the best 4 distinct ones, 20 gradients each).

Targets: Gaussian band-passes and band-stops, smooth random curves (a few low-order cosine
terms, like the leading principal components of natural spectra), and two spectra of random
designs of the family itself (reachable, so their best error is 0).

Structure: c-Si pillars of one shape family (default ``cross``: arm length, arm width and
thickness) in a 400 nm square cell on glass, air above, thickness 80-250 nm, minimum feature
40 nm; unpolarised normal incidence.

The surrogate: ``hyplex.optics.surrogate`` is not used yet; a STAND-IN, a small MLP fitted here
to RCWA samples of the same design space (:class:`MLPSurrogate`), is trained once and shared by
all targets. Its training time is reported apart and is not in the per-target wall times.

Reproduce (progress and the markdown table go to stderr; the last stdout line is JSON)::

    .venv/bin/python benchmarks/inverse.py --quick     # M = 1, 6 wavelengths, < 1 min
    .venv/bin/python benchmarks/inverse.py             # M = 2, 12 wavelengths, ~15 min
                                                       # (2 busy cores; 83 s of it training)
"""
# ruff: noqa: E402  (BLAS thread settings must precede the imports that read them)

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import math
import statistics
import sys
import time

import numpy as np
import torch

from hyplex.optics import inverse

PEER = "particle swarm (inertia-weight PSO, Shi & Eberhart 1998; the ALFRED baseline)"
METHODS = ("rcwa", "surrogate", "swarm")


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


class MLPSurrogate(torch.nn.Module):
    """STAND-IN surrogate: designs ``(..., D)`` in nm -> T ``(..., L)``, an MLP on the unit
    box (two hidden layers of 96 SiLU units, sigmoid output)."""

    def __init__(self, space: inverse.DesignSpace, wavelengths_nm: np.ndarray, hidden: int = 96):
        super().__init__()
        self.space, self.wavelengths_nm = space, np.asarray(wavelengths_nm)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(space.dimension, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, len(wavelengths_nm)),
        ).double()

    def forward(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(2.0 * self.space.to_unit(params) - 1.0))


def fit_surrogate(forward, samples: int, epochs: int, seed: int):
    """Fit :class:`MLPSurrogate` to ``samples`` RCWA spectra; returns (model, holdout RMS)."""
    generator = torch.Generator().manual_seed(seed + 1)  # not the searches' screening sequence
    torch.manual_seed(seed)
    designs = forward.space.sample(samples, generator)
    with torch.no_grad():
        spectra = torch.cat([forward(chunk) for chunk in designs.split(64)])
    holdout = max(samples // 10, 1)
    model = MLPSurrogate(forward.space, forward.wavelengths_nm.numpy())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = ((model(designs[holdout:]) - spectra[holdout:]) ** 2).mean()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        error = ((model(designs[:holdout]) - spectra[:holdout]) ** 2).mean().sqrt()
    return model.eval(), float(error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="M = 1, 6 wavelengths, < 1 min")
    parser.add_argument("--family", default="cross")
    parser.add_argument("--harmonics", type=int, default=None)
    parser.add_argument("--wavelengths", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    harmonics = args.harmonics if args.harmonics is not None else (1 if args.quick else 2)
    points = args.wavelengths or (6 if args.quick else 12)
    wavelengths = np.linspace(450.0, 900.0, points)
    settings = {
        "period_nm": 400.0,
        "thickness_bounds_nm": (80.0, 250.0),
        "min_feature_nm": 40.0,
        "harmonics": harmonics,
        "grid": (48, 48),
    }
    if args.quick:
        budget = inverse.Budget(
            screen=8, polish=1, polish_evaluations=8, verify=2, surrogate_screen=1024,
            surrogate_steps=100, swarm_size=8, swarm_iterations=5,
        )  # fmt: skip
        samples, epochs = 96, 600
    else:
        budget = inverse.Budget(swarm_size=24, swarm_iterations=10)  # the rest: defaults
        samples, epochs = 400, 2000
    space = inverse.DesignSpace(
        args.family, settings["period_nm"], settings["thickness_bounds_nm"], 40.0
    )
    forward = inverse.RCWASpectrum(
        space, torch.as_tensor(wavelengths), harmonics=harmonics, grid=settings["grid"]
    )
    named = targets(wavelengths, forward, args.seed)
    log(f"{len(named)} targets, {args.family}, M = {harmonics}, {points} wavelengths")

    start = time.perf_counter()
    surrogate, surrogate_rms = fit_surrogate(forward, samples, epochs, args.seed)
    training_s = time.perf_counter() - start
    log(f"stand-in surrogate: {samples} RCWA samples, holdout RMS {surrogate_rms:.3f}, "
        f"{training_s:.1f} s")  # fmt: skip

    rows = {}
    for name, target in named.items():
        rows[name] = {}
        for method in METHODS:
            result = inverse.design(
                target, wavelengths, args.family, method, surrogate=surrogate,
                budget=budget, seed=args.seed, progress=False, **settings,
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
        "family": args.family,
        "targets": len(rows),
        "harmonics": harmonics,
        "wavelengths": points,
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
        "surrogate": "stand-in MLP fitted in benchmarks/inverse.py",
        "surrogate_samples": samples,
        "surrogate_holdout_rms": figure(surrogate_rms),
        "surrogate_training_s": figure(training_s),
        "reachable_targets_recovered_below_0.02": {
            m: sum(rows[n][m].rms_error < 0.02 for n in rows if n.startswith("reachable"))
            for m in METHODS
        },
        "quick": args.quick,
    }
    assert all(math.isfinite(v["mean_rms"]) for v in report["methods"].values())
    print(json.dumps(report))


if __name__ == "__main__":
    main()
