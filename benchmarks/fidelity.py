"""Fidelity of the RCWA against an independent full-wave solver (MIT Meep FDTD), extrapolated.

Meep does not smooth dispersive (Lorentz) media, so on silicon it converges at first order in
the grid step and no single resolution can be trusted. Every structure therefore runs as a
*ladder* of three or more resolutions, Richardson-extrapolated with an order fitted from the
ladder itself (:func:`hyplex.optics.fdtd.solve_ladder`, :mod:`hyplex.optics.extrapolation`),
and the extrapolated spectrum is compared with the converged RCWA (or the exact TMM):

- ``film``: an unpatterned 100 nm c-Si film (``cSi_meep``) on fused silica (Sellmeier
  ``SiO2``), 400-1000 nm, normal incidence, 1-D Meep; the TMM is exact.
- ``square`` / ``cylinder`` / ``cross``: c-Si (``cSi_meep``) pillars 100 nm tall, period
  400 nm, on glass (n = 1.45), 400-1000 nm, normal incidence, 3-D Meep with 4x mirror
  symmetry, one polarisation (C4 cells: TE = TM): a 200 nm square, a disk of radius 100 nm,
  a cross with 300 x 100 nm arms. RCWA: ``rcwa.solve`` with its default factorisation at
  high harmonics.
- ``grating_<aSi|cSi>_<0|30>deg_<TE|TM>``: 1-D gratings (lines along y) of ``aSi_meep`` or
  ``cSi_meep``, period 400 nm, width 200 nm, height 300 nm, on n = 1.45, 455-745 nm, 2-D
  Meep; TE is E along the lines. At 30 degrees (plane of incidence across the lines) every
  wavelength is its own Meep run with its own Bloch k_x. RCWA: Li's rule, exact in 1-D
  (Li 1996), at 201 harmonics. Wavelengths keep >= 5 nm from the Rayleigh anomalies
  (580 nm in glass at 0 degrees, 600 nm in air at 30 degrees).

For every row the JSON line has ``rms_dT_vs_extrapolated`` (RMS over wavelengths of the
extrapolated Meep T minus the reference), ``meep_convergence_order`` (fitted),
``meep_extrapolation_error`` (RMS of the extrapolation's error estimate) and the goal
``max_rms_dT_vs_extrapolated < 0.02``. Where the extrapolation error is larger than the
agreement it would support, the row is flagged (``error_exceeds_agreement``) and a sentence
says so. The older keys (``rms_dT``: best RCWA vs the finest single Meep run, ...) remain.

    .venv/bin/python benchmarks/fidelity.py            # full ladders (hours on 2 cores)
    .venv/bin/python benchmarks/fidelity.py --quick    # two coarse rungs, gratings + one
                                                        # 3-D cell, a few minutes (a CI test)
    .venv/bin/python benchmarks/fidelity.py --stored benchmarks/results/fidelity_meep.npz
                                  # the table from stored Meep ladders and reference spectra,
                                  # in seconds (what is missing or different is recomputed)

Meep runs are cached (``~/.cache/hyplex/fdtd``), so a rerun only computes what changed.
``--save-ladders`` stores every Meep ladder and reference spectrum in one ``.npz`` (small), so
the table can be rebuilt without rerunning 3-D FDTD. Writes ``out/fidelity.png`` and prints
one JSON line, last on stdout.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hyplex.optics import extrapolation, fdtd, geometry, rcwa  # noqa: E402
from hyplex.optics.materials import get_material  # noqa: E402
from hyplex.optics.thinfilm import stack_response  # noqa: E402

GOAL = 0.02
PERIOD_NM = 400.0
GLASS = 1.45
WIDE_BAND = np.linspace(400.0, 1000.0, 31)
GRATING_BAND = np.linspace(455.0, 745.0, 30)  # 10 nm steps, 575 and 585 either side of 580
# One Meep run per wavelength and polarisation at 30 degrees: 40 nm steps, 575 and 615 nm either
# side of the air Rayleigh anomaly at 600 nm.
OBLIQUE_BAND = np.linspace(455.0, 735.0, 8)


@dataclass(frozen=True)
class Case:
    """One benchmark structure: what both solvers see, and how each is refined.

    ``rows`` are the polarisations reported: ``("TE+TM",)`` where TE = TM (the film and the C4
    pillars at normal incidence; the mean of both is compared), else ``("TE", "TM")``.
    """

    name: str
    layers: tuple
    substrate: object
    wavelengths: np.ndarray
    angle_deg: float
    reference: str  # "tmm" or "rcwa"
    resolutions: tuple  # full ladder, px/um
    quick_resolutions: tuple
    harmonics: tuple = (0, 0)  # RCWA (M, N); full
    quick_harmonics: tuple = (0, 0)
    factorization: str | None = None  # None: rcwa.solve's default
    rows: tuple = ("TE", "TM")
    in_quick: bool = True
    assumed_order: float = 1.0  # for two-rung (quick) ladders: Lorentz media, no smoothing


def _grating(material: str) -> tuple:
    # 1-D grating as an (Nx, 1) binary grid: 100 nm pixels, the 200 nm line in the middle. The
    # pixel Fourier coefficients are exact, and Meep gets the same line as one box spanning y.
    grid = torch.tensor([[0.0], [1.0], [1.0], [0.0]], dtype=torch.float64)
    return (rcwa.Layer(300.0, material, grid),)


def _pillar(shape) -> tuple:
    return (rcwa.Layer(100.0, "cSi_meep", shape),)


# Every ladder keeps every planar interface on the grid (fdtd.grid_misalignment): 100 nm
# heights and the cross's 50 nm half-widths need multiples of 20 px/um in 3-D (80, 120, 160
# here; 200 would cost ~1 h per structure on 2 cores); without smoothing the staircase error
# depends on sub-pixel positions, and a ladder that moves them (60/90/135 did) is not a power
# law.
# The 1-D gratings' Meep ladders (px/um), as recorded in benchmarks/results/fidelity.md (one
# Meep process at a time on 2 cores, one of them busy). Every rung is on the grid. What a longer
# run would add: 800 px/um at normal incidence (c-Si's sharp resonances: its TE ladder is not
# asymptotic at 100/200/400; ~35-90 min per material on one core), and 200 px/um for c-Si at 30
# degrees (one Meep run per wavelength and polarisation: 100 px/um took 481 s, 200 about 1 h),
# whose 150 px/um rung was the finest that fitted (a third rung, so the order is fitted, not
# assumed).
_GRATING_LADDERS = {
    ("aSi_meep", 0.0): (100, 200, 400),
    ("cSi_meep", 0.0): (100, 200, 400),
    ("aSi_meep", 30.0): (50, 100, 200),
    ("cSi_meep", 30.0): (50, 100, 150, 200),
}
CASES = [
    Case(
        "film",
        (rcwa.Layer(100.0, "cSi_meep"),),
        "SiO2",
        WIDE_BAND,
        0.0,
        "tmm",
        (100, 200, 400),
        (100, 200),
        rows=("TE+TM",),
        # Two-rung (quick) order: the full ladder fits p = 1.99 (1-D film; numerical dispersion
        # dominates the error there).
        assumed_order=2.0,
    ),
    *[
        Case(
            name,
            _pillar(shape),
            GLASS,
            WIDE_BAND,
            0.0,
            "rcwa",
            (80, 120, 160),
            (20, 40),
            harmonics=(11, 11),
            quick_harmonics=(4, 4),
            rows=("TE+TM",),
            in_quick=name == "cylinder",
        )
        for name, shape in (
            ("square", geometry.Rectangle(200.0, 200.0)),
            ("cylinder", geometry.Disk(100.0)),
            ("cross", geometry.Cross(300.0, 100.0)),
        )
    ],
    *[
        Case(
            f"grating_{material[:3]}_{angle:.0f}deg",
            _grating(material),
            GLASS,
            OBLIQUE_BAND if angle else GRATING_BAND,
            angle,
            "rcwa",
            _GRATING_LADDERS[material, angle],  # see above: what a longer run would add
            (25, 50) if angle else (50, 100),
            harmonics=(100, 0),
            quick_harmonics=(40, 0),
            factorization="li",  # exact in 1-D; pinned while the default is being reworked
        )
        for material in ("aSi_meep", "cSi_meep")
        for angle in (0.0, 30.0)
    ],
]
QUICK_OBLIQUE_WAVELENGTHS = np.array([535.0, 695.0])


def _row_names(case: Case) -> list[str]:
    return [case.name if pol == "TE+TM" else f"{case.name}_{pol}" for pol in case.rows]


def _select(spectrum: np.ndarray, pol: str) -> np.ndarray:
    """``(..., L, 2)`` -> ``(..., L)`` for one reported polarisation (TE+TM: the mean)."""
    return spectrum.mean(-1) if pol == "TE+TM" else spectrum[..., 0 if pol == "TE" else 1]


def _reference(case: Case, wavelengths, quick: bool) -> tuple[np.ndarray, str, dict]:
    """Reference T ``(L, 2)``, its label and the RCWA convergence check."""
    if case.reference == "tmm":
        layer = case.layers[0]
        indices = [1.0, get_material(layer.material).refractive_index(wavelengths), case.substrate]
        T = np.asarray(stack_response(indices, [layer.thickness_nm], wavelengths).T)
        return np.stack([T, T], -1), "TMM (exact)", {}
    M, N = case.quick_harmonics if quick else case.harmonics
    # The convergence check: the same solve with fewer harmonics (half of them in 1-D).
    coarse = (M // 2, 0) if N == 0 else (M - 2, N - 2)
    out, seconds = {}, {}
    for harmonics in (coarse, (M, N)):
        kwargs = {"factorization": case.factorization} if case.factorization else {}
        start = time.perf_counter()
        with torch.no_grad():
            result = rcwa.solve(
                list(case.layers),
                wavelengths,
                PERIOD_NM,
                harmonics=harmonics,
                substrate=case.substrate,
                angle_deg=case.angle_deg,
                **kwargs,
            )
        seconds[harmonics] = time.perf_counter() - start
        out[harmonics] = result.T.numpy()
        print(
            f"  rcwa {case.name} M={harmonics}: {seconds[harmonics]:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    # The name of the factorisation that ran (rcwa.solve's default when the case sets none).
    default = inspect.signature(rcwa.solve).parameters["factorization"].default
    factorization = case.factorization or f"{default} (default)"
    check = {
        "harmonics": [M, N],
        "coarser_harmonics": list(coarse),
        "factorization": factorization,
        "rms_change_from_coarser": _rms(out[(M, N)], out[coarse]),
        "seconds": round(seconds[(M, N)], 1),
    }
    return out[(M, N)], f"RCWA M={M}, {factorization}", check


def _rms(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def _max(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def _stored_reference(stored, case: Case, wavelengths, quick: bool):
    """The stored reference ``(L, 2)``, label and check of a case, or Nones if absent or if it
    was computed with other wavelengths or harmonics."""
    key = f"{case.name}/reference_T"
    if key not in stored or not np.allclose(stored[f"{case.name}/wavelengths_nm"], wavelengths):
        return None, None, None
    check = json.loads(str(stored[f"{case.name}/reference_check"]))
    harmonics = list(case.quick_harmonics if quick else case.harmonics)
    default = inspect.signature(rcwa.solve).parameters["factorization"].default
    factorization = case.factorization or f"{default} (default)"
    if case.reference == "rcwa" and (
        check.get("harmonics") != harmonics or check.get("factorization") != factorization
    ):
        return None, None, None
    return stored[key], str(stored[f"{case.name}/reference_label"]), check


def _ladder_from_file(stored, case: Case, resolutions, wavelengths):
    """The stored Meep ladder ``(K, L, 2)`` of a case, or None if absent or different."""
    key = f"{case.name}/meep_T"
    if key not in stored:
        return None
    same = np.array_equal(stored[f"{case.name}/resolutions"], resolutions) and np.allclose(
        stored[f"{case.name}/wavelengths_nm"], wavelengths
    )
    if not same:
        return None
    return {
        "T": stored[key],
        "R": stored[f"{case.name}/meep_R"],
        "compute_s": stored[f"{case.name}/compute_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two coarse rungs, a few minutes")
    parser.add_argument(
        "--structures",
        nargs="+",
        choices=[case.name for case in CASES],
        default=None,
        help="default: all (with --quick: the gratings, the film and the cylinder)",
    )
    parser.add_argument("--out", type=Path, default=Path("out/fidelity.png"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="FDTD cache directory")
    parser.add_argument("--workers", type=int, default=None, help="parallel Meep processes")
    parser.add_argument(
        "--stored",
        type=Path,
        default=None,
        help="read Meep ladders and reference spectra from this .npz (--save-ladders writes it)",
    )
    parser.add_argument(
        "--save-ladders", type=Path, default=None, help="write ladders and references to .npz"
    )
    parser.add_argument(
        "--meep-only", action="store_true", help="run the Meep ladders, skip the comparison"
    )
    parser.add_argument(
        "--markdown", type=Path, default=None, help="write the table as markdown to this file"
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="with --stored: fail instead of running Meep or the RCWA for what is not stored",
    )
    parser.add_argument(
        "--resonance",
        choices=[case.name for case in CASES if case.reference == "rcwa"],
        default=None,
        help="instead of the table: locate one structure's sharpest resonance in Meep's ladder "
        "on a 5 nm grid and extrapolate its wavelength (see resonance_diagnostic)",
    )
    args = parser.parse_args()
    if args.resonance:
        case = next(case for case in CASES if case.name == args.resonance)
        print(json.dumps(resonance_diagnostic(case, args.cache_dir, args.workers)))
        return
    if args.structures:
        cases = [case for case in CASES if case.name in args.structures]
    else:
        cases = [case for case in CASES if case.in_quick or not args.quick]
    stored = dict(np.load(args.stored)) if args.stored else {}

    ladders = {}
    for case in cases:
        resolutions = case.quick_resolutions if args.quick else case.resolutions
        wavelengths = case.wavelengths
        if args.quick and case.angle_deg:
            wavelengths = QUICK_OBLIQUE_WAVELENGTHS
        from_file = _ladder_from_file(stored, case, np.asarray(resolutions, float), wavelengths)
        if from_file is not None:
            print(f"meep {case.name} {resolutions}: from {args.stored}", file=sys.stderr)
            ladders[case.name] = (wavelengths, np.asarray(resolutions, float), from_file)
            continue
        if args.offline:
            sys.exit(f"--offline: no stored Meep ladder for {case.name} at {resolutions} px/um")
        print(f"meep {case.name} {resolutions} px/um ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        ladder = fdtd.solve_ladder(
            list(case.layers),
            wavelengths,
            PERIOD_NM,
            resolutions,
            substrate=case.substrate,
            angle_deg=case.angle_deg,
            assumed_order=case.assumed_order,
            workers=args.workers,
            cache_dir=args.cache_dir,
            progress=False,
        )
        print(
            f"  {time.perf_counter() - start:.0f} s in this call; per rung when computed: "
            f"{np.round(ladder.compute_s).tolist()} s",
            file=sys.stderr,
            flush=True,
        )
        ladders[case.name] = (
            wavelengths,
            ladder.resolutions,
            {"T": ladder.T_ladder, "R": ladder.R_ladder, "compute_s": ladder.compute_s},
        )
    if args.meep_only:
        _save(args.save_ladders, cases, ladders, {}, {})
        return

    rows, spectra, references, checks = {}, {}, {}, {}
    for case in cases:
        wavelengths, resolutions, data = ladders[case.name]
        reference, label, check = _stored_reference(stored, case, wavelengths, args.quick)
        if reference is None:
            if args.offline:
                sys.exit(f"--offline: no stored reference spectrum for {case.name}")
            reference, label, check = _reference(case, wavelengths, args.quick)
        checks[case.name] = (label, check)
        references[case.name] = reference
        for pol, row in zip(case.rows, _row_names(case), strict=True):
            meep = _select(data["T"], pol)  # (K, L)
            ref = _select(reference, pol)  # (L,)
            # The order is fitted on the three finest rungs (Roache's three finest grids): a
            # coarse rung outside the asymptotic range must not bias it.
            fit = extrapolation.extrapolate(
                resolutions,
                meep,
                assumed_order=case.assumed_order,
                fit_levels=3 if len(resolutions) >= 3 else None,
            )
            rms = _rms(fit.value, ref)
            error = float(np.sqrt(np.mean(fit.error**2)))
            rows[row] = {
                "structure": case.name,
                "polarization": pol,
                "angle_deg": case.angle_deg,
                "reference": label,
                "rms_dT_vs_extrapolated": rms,
                "max_abs_dT_vs_extrapolated": _max(fit.value, ref),
                "meep_convergence_order": fit.order,
                "order_fitted": fit.order_fitted,
                "meep_extrapolation_error": error,
                "meep_gci_finest": float(np.sqrt(np.mean(fit.gci**2))),
                "error_exceeds_agreement": error > rms,
                "pre_asymptotic": bool(fit.fit is not None and fit.fit.clamped),
                "notes": fit.notes,
                # Older keys: the finest single Meep run against the reference.
                "rms_dT": _rms(meep[-1], ref),
                "max_abs_dT": _max(meep[-1], ref),
                "meep_resolution": float(resolutions[-1]),
                "meep": [
                    {
                        "resolution": float(r),
                        "rms_vs_reference": _rms(meep[k], ref),
                        "rms_vs_extrapolated": _rms(meep[k], fit.value),
                        "seconds_when_computed": round(float(data["compute_s"][k]), 1),
                    }
                    for k, r in enumerate(resolutions)
                ],
                "rcwa": check,
            }
            spectra[row] = (wavelengths, ref, meep, resolutions, fit)

    _print_table(rows)
    verdicts = _verdicts(rows)
    for sentence in verdicts:
        print(sentence, file=sys.stderr)
    _save(args.save_ladders, cases, ladders, references, checks)
    _plot(args.out, rows, spectra)
    worst = max(rows, key=lambda name: rows[name]["rms_dT_vs_extrapolated"])

    def per_row(key, digits=None):
        return {n: r[key] if digits is None else round(r[key], digits) for n, r in rows.items()}

    summary = {
        "benchmark": "fidelity",
        "peer": f"MIT Meep {_meep_version()} FDTD, Richardson-extrapolated",
        "quick": args.quick,
        "goal": f"max_rms_dT_vs_extrapolated < {GOAL}",
        "rms_dT_vs_extrapolated": per_row("rms_dT_vs_extrapolated", 5),
        "meep_convergence_order": per_row("meep_convergence_order", 3),
        "meep_order_fitted": per_row("order_fitted"),
        "meep_extrapolation_error": per_row("meep_extrapolation_error", 5),
        "max_rms_dT_vs_extrapolated": round(rows[worst]["rms_dT_vs_extrapolated"], 5),
        "worst": worst,
        "goal_met": rows[worst]["rms_dT_vs_extrapolated"] < GOAL,
        "error_exceeds_agreement": per_row("error_exceeds_agreement"),
        "pre_asymptotic": per_row("pre_asymptotic"),
        "verdicts": verdicts,
        "meep_ladders_px_per_um": {
            n: [m["resolution"] for m in r["meep"]] for n, r in rows.items()
        },
        "meep_seconds_per_rung": {
            n: [m["seconds_when_computed"] for m in r["meep"]] for n, r in rows.items()
        },
        "rcwa": per_row("rcwa"),
        # Older keys (finest single Meep run vs the reference).
        "rms_dT": per_row("rms_dT", 4),
        "max_abs_dT": per_row("max_abs_dT", 4),
        "harmonics_M": {n: r["rcwa"].get("harmonics", [0])[0] for n, r in rows.items()},
        "meep_resolution_px_per_um": per_row("meep_resolution"),
        "max_rms_dT": round(max(r["rms_dT"] for r in rows.values()), 4),
        "trend": {n: {"meep": r["meep"], "rcwa": r["rcwa"]} for n, r in rows.items()},
        "plot": str(args.out),
    }
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(_markdown(rows, verdicts))
    print(json.dumps(summary))


def _markdown(rows, verdicts) -> str:
    """The table (one line per row) and the verdicts, as markdown."""
    lines = [
        "| row | reference (change from coarser) | Meep ladder px/um (s per rung) | order"
        " | RMS dT finest rung | RMS dT extrapolated | extrapolation error | flags |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        check = row["rcwa"]
        change = f" ({check['rms_change_from_coarser']:.4f})" if check else ""
        rungs = ", ".join(f"{m['resolution']:.0f}" for m in row["meep"])
        seconds = ", ".join(f"{m['seconds_when_computed']:.0f}" for m in row["meep"])
        order = f"{row['meep_convergence_order']:.2f}" + (
            "" if row["order_fitted"] else " (assumed)"
        )
        flags = [
            flag
            for flag, on in (
                ("error > agreement", row["error_exceeds_agreement"]),
                ("pre-asymptotic", row["pre_asymptotic"]),
                ("error > goal", row["meep_extrapolation_error"] > GOAL),
            )
            if on
        ]
        lines.append(
            f"| {name} | {row['reference']}{change} | {rungs} ({seconds}) | {order}"
            f" | {row['rms_dT']:.4f} | {row['rms_dT_vs_extrapolated']:.4f}"
            f" | {row['meep_extrapolation_error']:.4f} | {', '.join(flags) or '-'} |"
        )
    return "\n".join(lines + [""] + [f"- {v}" for v in verdicts]) + "\n"


def dip_wavelength(wavelengths: np.ndarray, T: np.ndarray) -> float:
    """Wavelength (nm) of the deepest minimum of ``T (L,)``, by a parabola through the lowest
    sample and its two neighbours (sub-grid accuracy for a smooth dip)."""
    k = int(np.clip(np.argmin(T), 1, T.size - 2))
    y0, y1, y2 = T[k - 1], T[k], T[k + 1]
    curvature = y0 - 2 * y1 + y2
    shift = 0.5 * (y0 - y2) / curvature if curvature > 0 else 0.0
    return float(wavelengths[k] + np.clip(shift, -1, 1) * (wavelengths[1] - wavelengths[0]))


def resonance_diagnostic(case: Case, cache_dir=None, workers=None) -> dict:
    """Where is the resonance? Richardson on its *wavelength*, not on T(lambda).

    Near a sharp resonance T(lambda) is not a smooth function of the grid step on a fixed
    wavelength grid: the dip slides across the samples as the grid is refined, and
    extrapolating T point by point fails. The dip's wavelength is smooth in the grid step, so
    it is located at every rung (5 nm grid, parabolic refinement) and extrapolated with a
    fitted order, then compared with the RCWA's dip on the same grid.
    """
    rcwa_T, _, check = _reference(case, case.wavelengths, quick=False)
    # The deepest RCWA dip beyond the Rayleigh anomaly into the substrate (no diffraction),
    # on the benchmark's grid; the window is +-40 nm around it in 5 nm steps.
    above = case.wavelengths > GLASS * PERIOD_NM
    centre = case.wavelengths[above][np.argmin(rcwa_T.mean(-1)[above])]
    window = np.arange(centre - 40.0, centre + 41.0, 5.0)
    reference, _, _ = _reference(case, window, quick=False)
    ladder = fdtd.solve_ladder(
        list(case.layers),
        window,
        PERIOD_NM,
        case.resolutions[:3],
        substrate=case.substrate,
        angle_deg=case.angle_deg,
        workers=workers,
        cache_dir=cache_dir,
        progress=False,
    )
    dips = np.array([dip_wavelength(window, T.mean(-1)) for T in ladder.T_ladder])
    fit = extrapolation.extrapolate(ladder.resolutions, dips)
    return {
        "benchmark": "fidelity_resonance",
        "structure": case.name,
        "window_nm": [float(window[0]), float(window[-1])],
        "rcwa_dip_nm": dip_wavelength(window, reference.mean(-1)),
        "rcwa": check,
        "meep_resolutions": ladder.resolutions.tolist(),
        "meep_dip_nm": dips.round(2).tolist(),
        "meep_dip_extrapolated_nm": round(float(fit.value), 2),
        "meep_dip_error_nm": round(float(fit.error), 2),
        "meep_dip_order": round(fit.order, 3),
        "notes": fit.notes + ladder.grid_notes,
        "meep_seconds_per_rung": np.round(ladder.compute_s).tolist(),
    }


def _meep_version() -> str:
    try:
        return fdtd.meep_version()
    except fdtd.MeepNotFoundError:  # every ladder came from --stored
        return "(not installed here; stored ladders)"


def _verdicts(rows) -> list[str]:
    """Plain sentences: where the extrapolation error is larger than the agreement it supports."""
    out = []
    for name, row in rows.items():
        rms, error = row["rms_dT_vs_extrapolated"], row["meep_extrapolation_error"]
        if row["error_exceeds_agreement"]:
            out.append(
                f"{name}: the extrapolation error ({error:.4f}) is larger than the agreement it "
                f"would support (RMS dT {rms:.4f}), so this agreement is not resolved: the "
                f"solvers agree to within Meep's own uncertainty, not to {rms:.4f}."
            )
        if error > GOAL:
            out.append(
                f"{name}: the extrapolation error ({error:.4f}) exceeds the goal ({GOAL}); this "
                "ladder cannot confirm or refute the goal."
            )
        if row["pre_asymptotic"]:
            out.append(
                f"{name}: the ladder is not in its asymptotic range (the fitted order was "
                f"clamped to {row['meep_convergence_order']:g}); finer rungs are needed before "
                "its extrapolation can be trusted."
            )
        if not row["order_fitted"]:
            out.append(
                f"{name}: two rungs only; the order was assumed "
                f"(p = {row['meep_convergence_order']:g}), not fitted."
            )
    return out


def _save(path, cases, ladders, references, checks) -> None:
    if path is None:
        return
    arrays = {}
    for case in cases:
        if case.name not in ladders:
            continue
        wavelengths, resolutions, data = ladders[case.name]
        arrays[f"{case.name}/wavelengths_nm"] = wavelengths
        arrays[f"{case.name}/resolutions"] = np.asarray(resolutions, float)
        arrays[f"{case.name}/meep_T"] = data["T"]
        arrays[f"{case.name}/meep_R"] = data["R"]
        arrays[f"{case.name}/compute_s"] = np.asarray(data["compute_s"], float)
        if case.name in references:
            arrays[f"{case.name}/reference_T"] = references[case.name]
            label, check = checks[case.name]
            arrays[f"{case.name}/reference_label"] = np.array(label)
            arrays[f"{case.name}/reference_check"] = np.array(json.dumps(check))
    if path.exists():  # keep the other structures already stored there
        previous = dict(np.load(path))
        previous.update(arrays)
        arrays = previous
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def _print_table(rows) -> None:
    print(
        "| row | RMS dT vs extrapolated | extrapolation error | order | finest Meep RMS dT |"
        " reference |",
        file=sys.stderr,
    )
    print("|---|---|---|---|---|---|", file=sys.stderr)
    for name, row in rows.items():
        flag = " (!)" if row["error_exceeds_agreement"] else ""
        fitted = "" if row["order_fitted"] else " (assumed)"
        order = f"{row['meep_convergence_order']:.2f}{fitted}"
        print(
            f"| {name} | {row['rms_dT_vs_extrapolated']:.4f}{flag} |"
            f" {row['meep_extrapolation_error']:.4f} | {order} |"
            f" {row['rms_dT']:.4f} @ {row['meep_resolution']:.0f} | {row['reference']} |",
            file=sys.stderr,
        )


def _plot(path: Path, rows, spectra) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(spectra)
    columns = min(4, len(names))
    lines = -(-len(names) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.4 * lines), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        wavelengths, ref, meep, resolutions, fit = spectra[name]
        ax.plot(wavelengths, ref, "k-", lw=2, label=rows[name]["reference"])
        for k, r in enumerate(resolutions):
            ax.plot(wavelengths, meep[k], ":", lw=1, label=f"Meep {r:.0f} px/um")
        ax.fill_between(
            wavelengths, fit.value - fit.error, fit.value + fit.error, color="C3", alpha=0.3
        )
        ax.plot(wavelengths, fit.value, "C3--", lw=1.2, label=f"extrapolated (p = {fit.order:.2f})")
        ax.set_title(f"{name}: RMS dT = {rows[name]['rms_dT_vs_extrapolated']:.4f}", fontsize=9)
        ax.set_xlabel("wavelength (nm)")
        ax.set_ylabel("T")
        ax.set_ylim(-0.02, 1.05)
        ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
