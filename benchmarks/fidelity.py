"""Fidelity of the RCWA against an independent full-wave solver (MIT Meep FDTD).

Four structures of crystalline silicon (Meep's Lorentz fit ``cSi_meep``, identical in both
solvers), normal incidence, 400-1000 nm, total transmittance (all orders) per polarisation:

- ``film``: an unpatterned 100 nm film on fused silica (Sellmeier ``SiO2``); the TMM is exact;
- ``square``: 200 x 200 nm pillars, 100 nm tall, period 400 nm, on glass (n = 1.45);
- ``cylinder``: pillars of radius 100 nm, 100 nm tall, period 400 nm, on glass;
- ``cross``: crosses with 300 x 100 nm arms, 100 nm tall, period 400 nm, on glass, like the
  free-form silicon filters of Hyplex (~100 nm thick, sub-micron period);
- ``cylinder_n3.5`` (diagnostic, only with ``--structures``): the cylinder in lossless,
  non-dispersive n = 3.5, where Meep's sub-pixel smoothing applies. Meep smooths only
  frequency-independent lossless media (Meep docs, "Subpixel Smoothing"), so Lorentz silicon
  is staircased and converges at first order in the grid step.

For each structure the RCWA runs at several truncations M ((2M+1)^2 harmonics) and Meep at
several resolutions, so the table shows which solver is converged: RMS and max |dT| between
the best of each, plus each solver's change against its own finest setting.

    .venv/bin/python benchmarks/fidelity.py            # full table (about 40 min on 2 cores)
    .venv/bin/python benchmarks/fidelity.py --quick    # coarse check, < 2 min (a CI test)

Meep results are cached (``~/.cache/hyplex/fdtd``), so a rerun only computes what changed.
Writes ``out/fidelity.png`` (spectra overlaid, and the convergence trend) and prints one JSON
line, last on stdout, with ``rms_dT`` per structure and ``max_rms_dT``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hyplex.optics import fdtd, geometry, rcwa  # noqa: E402
from hyplex.optics.materials import get_material  # noqa: E402
from hyplex.optics.thinfilm import stack_response  # noqa: E402

PERIOD_NM = 400.0
HEIGHT_NM = 100.0
GLASS = 1.45
STRUCTURES = {  # name: (shape, substrate, pillar material)
    "film": (None, "SiO2", "cSi_meep"),
    "square": (geometry.Rectangle(200.0, 200.0), GLASS, "cSi_meep"),
    "cylinder": (geometry.Disk(100.0), GLASS, "cSi_meep"),
    "cross": (geometry.Cross(300.0, 100.0), GLASS, "cSi_meep"),
    # Diagnostic, not in the default table: the same cylinder in a lossless, non-dispersive
    # n = 3.5, where Meep's sub-pixel smoothing applies (it does not for Lorentz media).
    "cylinder_n3.5": (geometry.Disk(100.0), GLASS, 3.5),
}
DEFAULT_STRUCTURES = ["film", "square", "cylinder", "cross"]
FULL = {"wavelengths": 31, "harmonics": (5, 7, 9, 11), "resolutions": (60, 80, 100, 120)}
QUICK = {"wavelengths": 9, "harmonics": (3, 4), "resolutions": (24, 32)}
FILM_RESOLUTIONS = {"full": (100, 200, 400), "quick": (100, 200)}


def _layers(name) -> list[rcwa.Layer]:
    shape, _, material = STRUCTURES[name]
    return [rcwa.Layer(HEIGHT_NM, material, shape)]


def _rcwa(name, wavelengths, M) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    with torch.no_grad():
        result = rcwa.solve(
            _layers(name), wavelengths, PERIOD_NM, harmonics=M, substrate=STRUCTURES[name][1]
        )
    return result.T.numpy(), time.perf_counter() - start


def _tmm(wavelengths) -> np.ndarray:
    indices = [
        np.ones_like(wavelengths),
        get_material("cSi_meep").refractive_index(wavelengths),
        get_material("SiO2").refractive_index(wavelengths),
    ]
    T = np.asarray(stack_response(indices, [HEIGHT_NM], wavelengths).T)
    return np.stack([T, T], -1)


def _rms(a, b) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def _max(a, b) -> float:
    return float(np.abs(a - b).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="coarse settings, < 2 minutes")
    parser.add_argument(
        "--structures",
        nargs="+",
        choices=list(STRUCTURES),
        default=None,
        help=f"default: {' '.join(DEFAULT_STRUCTURES)}",
    )
    parser.add_argument("--resolutions", type=int, nargs="+", help="Meep px/um (3-D cells)")
    parser.add_argument("--harmonics", type=int, nargs="+", help="RCWA truncations M")
    parser.add_argument("--out", type=Path, default=Path("out/fidelity.png"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="FDTD cache directory")
    parser.add_argument("--workers", type=int, default=None, help="parallel Meep processes")
    args = parser.parse_args()
    plan = dict(QUICK if args.quick else FULL)
    if args.resolutions:
        plan["resolutions"] = tuple(args.resolutions)
    if args.harmonics:
        plan["harmonics"] = tuple(args.harmonics)
    names = args.structures or DEFAULT_STRUCTURES
    wavelengths = np.linspace(400.0, 1000.0, plan["wavelengths"])

    # Meep first: every (structure, resolution) run in parallel processes, finest first.
    tasks = []
    for name in names:
        shape = STRUCTURES[name][0]
        film = FILM_RESOLUTIONS["quick" if args.quick else "full"]
        tasks += [(name, r) for r in (film if shape is None else plan["resolutions"])]
    tasks.sort(key=lambda task: (STRUCTURES[task[0]][0] is not None, task[1]), reverse=True)
    meep, meep_seconds = {}, {}

    def run_meep(task):
        name, resolution = task
        shape, substrate, _ = STRUCTURES[name]
        result = fdtd.solve(
            _layers(name),
            wavelengths,
            PERIOD_NM,
            substrate=substrate,
            settings=fdtd.FDTDSettings(resolution=resolution),
            cache_dir=args.cache_dir,
            progress=False,
        )
        state = "cached" if result.cached else f"{result.wall_s:.0f} s"
        print(f"  meep {name} {resolution} px/um: {state}", file=sys.stderr, flush=True)
        return task, result

    print(f"Meep: {len(tasks)} runs", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=args.workers or os.cpu_count() or 1) as pool:
        for (name, resolution), result in pool.map(run_meep, tasks):
            meep[(name, resolution)] = result.T
            meep_seconds[(name, resolution)] = result.wall_s

    rows, spectra = {}, {}
    for name in names:
        shape = STRUCTURES[name][0]
        resolutions = sorted(r for (n, r) in meep if n == name)
        finest = meep[(name, resolutions[-1])]
        if shape is None:
            reference_label, reference = "TMM (exact)", _tmm(wavelengths)
            rcwa_T, seconds = _rcwa(name, wavelengths, 1)
            rcwa_rows = [{"M": 0, "rms_vs_finest": 0.0, "seconds": round(seconds, 2)}]
            best_rcwa, best_M = rcwa_T, 0
        else:
            rcwa_runs = {}
            for M in plan["harmonics"]:
                print(f"rcwa {name} M={M}", file=sys.stderr, flush=True)
                rcwa_runs[M] = _rcwa(name, wavelengths, M)
            best_M = max(rcwa_runs)
            best_rcwa = rcwa_runs[best_M][0]
            reference_label, reference = f"RCWA M={best_M}", best_rcwa
            rcwa_rows = [
                {
                    "M": M,
                    "harmonics": (2 * M + 1) ** 2,
                    "rms_vs_finest": _rms(T, best_rcwa),
                    "rms_vs_meep_finest": _rms(T, finest),
                    "seconds": round(s, 2),
                }
                for M, (T, s) in sorted(rcwa_runs.items())
            ]
        meep_rows = [
            {
                "resolution": r,
                "rms_vs_finest": _rms(meep[(name, r)], finest),
                "rms_vs_reference": _rms(meep[(name, r)], reference),
                "max_vs_reference": _max(meep[(name, r)], reference),
                "seconds": round(meep_seconds[(name, r)], 1),
            }
            for r in resolutions
        ]
        rows[name] = {
            "rms_dT": _rms(best_rcwa, finest),
            "max_abs_dT": _max(best_rcwa, finest),
            "harmonics_M": best_M,
            "meep_resolution": resolutions[-1],
            "reference": reference_label,
            "rcwa": rcwa_rows,
            "meep": meep_rows,
        }
        if shape is None:
            rows[name]["rms_dT_rcwa_vs_tmm"] = _rms(best_rcwa, reference)
        spectra[name] = (best_rcwa, finest, {r: meep[(name, r)] for r in resolutions})

    _print_table(rows)
    # Every spectrum, so the plot can be redrawn without rerunning the RCWA.
    args.out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"wavelengths_nm": wavelengths}
    for name, (best_rcwa, _, by_resolution) in spectra.items():
        arrays[f"{name}/rcwa_M{rows[name]['harmonics_M']}"] = best_rcwa
        arrays.update({f"{name}/meep_{r}": T for r, T in by_resolution.items()})
    np.savez(args.out.with_suffix(".npz"), **arrays)
    _plot(args.out, wavelengths, rows, spectra)
    summary = {
        "benchmark": "fidelity",
        "peer": f"MIT Meep {fdtd.meep_version()} FDTD",
        "quick": args.quick,
        "rms_dT": {n: round(r["rms_dT"], 4) for n, r in rows.items()},
        "max_abs_dT": {n: round(r["max_abs_dT"], 4) for n, r in rows.items()},
        "harmonics_M": {n: r["harmonics_M"] for n, r in rows.items()},
        "meep_resolution_px_per_um": {n: r["meep_resolution"] for n, r in rows.items()},
        "max_rms_dT": round(max(r["rms_dT"] for r in rows.values()), 4),
        "trend": {n: {"rcwa": r["rcwa"], "meep": r["meep"]} for n, r in rows.items()},
        "plot": str(args.out),
    }
    print(json.dumps(summary))


def _print_table(rows) -> None:
    print("| structure | RMS dT | max dT | RCWA M (harmonics) | Meep px/um |", file=sys.stderr)
    print("|---|---|---|---|---|", file=sys.stderr)
    for name, row in rows.items():
        M = row["harmonics_M"]
        print(
            f"| {name} | {row['rms_dT']:.4f} | {row['max_abs_dT']:.4f} | {M} ({(2 * M + 1) ** 2})"
            f" | {row['meep_resolution']} |",
            file=sys.stderr,
        )


def _plot(path: Path, wavelengths, rows, spectra) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(spectra)
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 7), squeeze=False)
    for column, name in enumerate(names):
        best_rcwa, finest, by_resolution = spectra[name]
        ax = axes[0, column]
        ax.plot(
            wavelengths, best_rcwa.mean(-1), "k-", lw=2, label=f"RCWA M={rows[name]['harmonics_M']}"
        )
        for resolution, T in by_resolution.items():
            ax.plot(wavelengths, T.mean(-1), "--", lw=1, label=f"Meep {resolution} px/um")
        ax.set_title(f"{name}: RMS dT = {rows[name]['rms_dT']:.3f}")
        ax.set_xlabel("wavelength (nm)")
        ax.set_ylabel("T (unpolarised)")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
        # Convergence: each solver refined in turn, against the other's finest and its own.
        ax = axes[1, column]
        meep_rows, rcwa_rows = rows[name]["meep"], rows[name]["rcwa"]
        floor = 1e-4
        ax.semilogy(
            range(len(meep_rows)),
            [max(r["rms_vs_reference"], floor) for r in meep_rows],
            "o-b",
            label=f"Meep (px/um) vs {rows[name]['reference']}",
        )
        ax.semilogy(
            range(len(meep_rows) - 1),
            [max(r["rms_vs_finest"], floor) for r in meep_rows[:-1]],
            "o:b",
            label="Meep vs finest Meep",
        )
        labels = [f"{r['resolution']}" for r in meep_rows]
        if "rms_vs_meep_finest" in rcwa_rows[0]:
            ax.semilogy(
                range(len(rcwa_rows)),
                [max(r["rms_vs_meep_finest"], floor) for r in rcwa_rows],
                "s-r",
                label="RCWA (M) vs finest Meep",
            )
            ax.semilogy(
                range(len(rcwa_rows) - 1),
                [max(r["rms_vs_finest"], floor) for r in rcwa_rows[:-1]],
                "s:r",
                label="RCWA vs finest RCWA",
            )
            pairs = zip(meep_rows, rcwa_rows, strict=True)
            labels = [f"{m['resolution']} / M={r['M']}" for m, r in pairs]
        ax.axhline(0.02, color="gray", lw=0.8, ls="--")
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("refinement: Meep px/um / RCWA M")
        ax.set_ylabel("RMS dT (goal 0.02, dashed)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
