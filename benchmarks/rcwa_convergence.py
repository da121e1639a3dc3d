"""Convergence of the RCWA over the number of harmonics, per factorisation rule and shape.

Issue 21's cell: silicon (n = 3.5, lossless) 200 nm tall, period 400 nm, on glass (n = 1.45),
air above, normal incidence, unpolarised zeroth-order transmittance T0 at 532 / 700 / 900 nm,
on a 128 x 128 grid with anti-aliased edges. Three patterns::

    disk    r = 120 nm                       curved edges
    cross   arms 300 x 100 nm                axis-aligned edges, concave corners (binary grid)
    blob    a fixed random free-form island  curved edges of every orientation (seed 7)

For every rule (``vector`` = hyplex's default, ``jones``, ``normal``, ``li``, ``laurent``) T0 is
computed at M = 1..8, 10 (orders -M..M along x and y, (2M+1)^2 harmonics). The two rules
whose T0 moved least over M = 7 -> 8 -> 10 are then run at the top order (M = 15, 961
harmonics; about what fits in 2 cores' time): the steadier of the two is the reference and
``reference_check`` is their difference there, an honest bound on the reference's own error.
``harmonics_for_0p005`` / ``_0p001``: for each rule, the smallest (2M+1)^2 from which every
computed order below the top stays within 0.005 / 0.001 (max over wavelengths) of the
reference; null if none does.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/rcwa_convergence.py          # ~40 min
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/rcwa_convergence.py --quick  # < 2 min
    ... --shapes disk                                                                # one shape

Writes out/rcwa_convergence.png and prints one JSON line (last on stdout).
"""
# ruff: noqa: E402  (BLAS threads must be set before numpy/torch load)

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from hyplex.optics import geometry
from hyplex.optics.rcwa import FACTORIZATIONS, Layer, solve

PERIOD_NM, HEIGHT_NM, SILICON, GLASS = 400.0, 200.0, 3.5, 1.45
WAVELENGTHS_NM = (532.0, 700.0, 900.0)
DEFAULT = "vector"  # solve()'s default factorisation
TOLERANCES = {"0p005": 0.005, "0p001": 0.001}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def blob(grid: int, seed: int = 7, supersample: int = 8) -> torch.Tensor:
    """A fixed free-form island: the upper half of a smooth random periodic field.

    ``f = sum a_mn / (1 + m^2 + n^2) cos(2 pi (m x + n y) + phase_mn)`` over |m|, |n| <= 3
    (normal ``a``, uniform phases from ``seed``), thresholded at its median on a supersampled
    grid, so edge pixels carry their area fraction. Returns ``(grid, grid)`` float64.
    """
    generator = torch.Generator().manual_seed(seed)
    fine = grid * supersample
    x = (torch.arange(fine, dtype=torch.float64) + 0.5) / fine
    X, Y = torch.meshgrid(x, x, indexing="ij")
    field = torch.zeros_like(X)
    for m in range(-3, 4):
        for n in range(-3, 4):
            if m == 0 and n == 0:
                continue
            amplitude = torch.randn(1, generator=generator, dtype=torch.float64)
            phase = 2 * math.pi * torch.rand(1, generator=generator, dtype=torch.float64)
            field = field + amplitude / (1 + m * m + n * n) * torch.cos(
                2 * math.pi * (m * X + n * Y) + phase
            )
    inside = (field > field.median()).to(torch.float64)
    return inside.reshape(grid, supersample, grid, supersample).mean(dim=(1, 3))


def patterns(grid: int) -> dict[str, torch.Tensor]:
    return {
        "disk": geometry.disk(120.0, PERIOD_NM, grid=(grid, grid)),
        "cross": geometry.cross(300.0, 100.0, PERIOD_NM, grid=(grid, grid)),
        "blob": blob(grid),
    }


def transmittance(pattern: torch.Tensor, M: int, factorization: str) -> tuple[list, float]:
    """Unpolarised T0 at the benchmark's wavelengths, and the seconds it took."""
    wavelengths = torch.tensor(WAVELENGTHS_NM, dtype=torch.float64)
    start = time.perf_counter()
    with torch.no_grad():
        result = solve(
            [Layer(HEIGHT_NM, SILICON, pattern=pattern)],
            wavelengths,
            PERIOD_NM,
            harmonics=M,
            substrate=GLASS,
            factorization=factorization,
        )
    return result.unpolarized("T0").tolist(), time.perf_counter() - start


def needed_harmonics(errors: dict[int, float], tolerance: float) -> int | None:
    """Smallest (2M+1)^2 from which every computed order stays within ``tolerance``."""
    needed = None
    for M in sorted(errors, reverse=True):
        if errors[M] > tolerance:
            break
        needed = (2 * M + 1) ** 2
    return needed


def run_shape(name, pattern, rules, ladder, top):
    values, seconds = {}, {}
    for rule in rules:
        for M in ladder:
            values[rule, M], seconds[rule, M] = transmittance(pattern, M, rule)
            log(
                f"  {name} {rule:8s} M={M:2d}: {[round(v, 4) for v in values[rule, M]]}"
                f" {seconds[rule, M]:.1f} s"
            )
    # Self-change over the last two steps of the ladder (M = 7 -> 8 -> 10).
    steadiness = {
        rule: max(
            abs(a - b) + abs(b - c)
            for a, b, c in zip(
                values[rule, ladder[-3]],
                values[rule, ladder[-2]],
                values[rule, ladder[-1]],
                strict=True,
            )
        )
        for rule in rules
    }
    best, second = sorted(rules, key=steadiness.get)[:2]
    for rule in (best, second):
        values[rule, top], seconds[rule, top] = transmittance(pattern, top, rule)
        log(
            f"  {name} {rule:8s} M={top:2d}: {[round(v, 4) for v in values[rule, top]]}"
            f" {seconds[rule, top]:.1f} s (top order)"
        )
    reference = values[best, top]
    check = max(abs(a - b) for a, b in zip(values[best, top], values[second, top], strict=True))
    table, errors = {}, {}
    for rule in rules:
        errors[rule] = {
            M: max(abs(a - b) for a, b in zip(values[rule, M], reference, strict=True))
            for M in ladder
        }
        table[rule] = [
            {
                "M": M,
                "harmonics": (2 * M + 1) ** 2,
                "max_dT": round(errors[rule][M], 5),
                "seconds": round(seconds[rule, M], 2),
            }
            for M in ladder
        ]
    return {
        "reference": {"factorization": best, "M": top, "T0": [round(v, 5) for v in reference]},
        "reference_check": {"against": second, "M": top, "max_dT": round(check, 5)},
        "self_change_last_step": {r: round(v, 5) for r, v in steadiness.items()},
        "harmonics_for": {
            key: {rule: needed_harmonics(errors[rule], tol) for rule in rules}
            for key, tol in TOLERANCES.items()
        },
        "table": table,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 x 64 grid, M <= 5, top M = 7")
    parser.add_argument("--shapes", nargs="+", default=["disk", "cross", "blob"])
    parser.add_argument("--rules", nargs="+", default=list(FACTORIZATIONS))
    parser.add_argument("--out", type=Path, default=Path("out/rcwa_convergence.png"))
    args = parser.parse_args()
    grid = 64 if args.quick else 128
    ladder = [1, 2, 3, 4, 5] if args.quick else [1, 2, 3, 4, 5, 6, 7, 8, 10]
    top = 7 if args.quick else 15
    rules = [r for r in args.rules if r in FACTORIZATIONS]
    if args.quick and args.rules == list(FACTORIZATIONS):
        rules = ["vector", "jones", "li", "laurent"]
    cells = patterns(grid)
    results = {}
    start = time.perf_counter()
    for name in args.shapes:
        log(f"{name}:")
        results[name] = run_shape(name, cells[name], rules, ladder, top)
        log(f"  reference {results[name]['reference']}, check {results[name]['reference_check']}")
    _plot(args.out, results)
    needed = {
        key: {name: results[name]["harmonics_for"][key] for name in results} for key in TOLERANCES
    }
    disk_default = needed["0p005"].get("disk", {}).get(DEFAULT)
    report = {
        "benchmark": "rcwa_convergence",
        "structure": f"Si n={SILICON} h={HEIGHT_NM:g} nm, period {PERIOD_NM:g} nm, air / glass "
        f"n={GLASS}, normal incidence, unpolarised T0, {grid}x{grid} grid",
        "shapes": {
            "disk": "r = 120 nm",
            "cross": "arms 300 x 100 nm",
            "blob": "seeded random free-form island (seed 7)",
        },
        "wavelengths_nm": list(WAVELENGTHS_NM),
        "ladder_M": ladder,
        "top_M": top,
        "reference": {name: results[name]["reference"] for name in results},
        "reference_check": {name: results[name]["reference_check"] for name in results},
        "harmonics_for_0p005": needed["0p005"],
        "harmonics_for_0p001": needed["0p001"],
        "default_factorization": DEFAULT,
        "default_harmonics_for_0p005_disk": disk_default,
        "goal_default_disk_0p005_within_169": disk_default is not None and disk_default <= 169,
        "tables": {name: results[name]["table"] for name in results},
        "self_change_last_step": {n: results[n]["self_change_last_step"] for n in results},
        "seconds": round(time.perf_counter() - start, 1),
        "plot": str(args.out),
    }
    print(json.dumps(report))


def _plot(out: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.2), squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items(), strict=True):
        for rule, rows in result["table"].items():
            n = [r["harmonics"] for r in rows]
            err = [max(r["max_dT"], 1e-6) for r in rows]
            ax.loglog(n, err, "o-" if rule == DEFAULT else ".--", label=rule)
        for tol in TOLERANCES.values():
            ax.axhline(tol, color="grey", lw=0.8, ls=":")
        ref = result["reference"]
        ax.set(
            xlabel="harmonics (2M+1)^2",
            ylabel="max |T0 - T0_ref|",
            title=f"{name} (ref: {ref['factorization']} M={ref['M']}, "
            f"check {result['reference_check']['max_dT']:.1e})",
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
