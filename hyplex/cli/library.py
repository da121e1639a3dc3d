"""``hyplex library``: build, inspect and plot RCWA response libraries.

Registered in ``hyplex.cli`` as ``app.add_typer(library_app, name="library")``. ``build`` runs
on a Dask ``LocalCluster`` by default or on an existing cluster with ``--scheduler``; rerunning
the same command resumes an interrupted build (see :mod:`hyplex.optics.library_build`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

library_app = typer.Typer(
    help="Response libraries: many unit-cell designs and their RCWA spectra (HDF5).",
    no_args_is_help=True,
)

LibraryPath = Annotated[Path, typer.Argument(help="Library HDF5 file.")]


def _fail(error: Exception) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=1)


@library_app.command("build")
def build(
    out: Annotated[Path, typer.Option(help="HDF5 file; an existing one is resumed.")] = Path(
        "out/library.h5"
    ),
    family: Annotated[str, typer.Option(help="Shape family: disk, square, ellipse, ...")] = (
        "rectangle"
    ),
    count: Annotated[int, typer.Option(min=1, help="Number of designs.")] = 10_000,
    wavelength_start_nm: Annotated[float, typer.Option(help="First wavelength (nm).")] = 400.0,
    wavelength_stop_nm: Annotated[float, typer.Option(help="Last wavelength (nm).")] = 1000.0,
    wavelengths: Annotated[int, typer.Option(min=1, help="Number of wavelengths.")] = 31,
    period_nm: Annotated[float, typer.Option(help="Square lattice period (nm).")] = 400.0,
    thickness_min_nm: Annotated[float, typer.Option(help="Thinnest pillar (nm).")] = 100.0,
    thickness_max_nm: Annotated[float, typer.Option(help="Thickest pillar (nm).")] = 400.0,
    min_feature_nm: Annotated[float, typer.Option(help="Minimum feature and gap (nm).")] = 40.0,
    material: Annotated[str, typer.Option(help="Pillar material.")] = "cSi",
    substrate: Annotated[str, typer.Option(help="Substrate material.")] = "SiO2",
    superstrate: Annotated[str, typer.Option(help="Medium above and around.")] = "air",
    harmonics: Annotated[
        int, typer.Option(min=0, help="Orders -M..M along x and y (see --target-accuracy).")
    ] = 2,
    grid: Annotated[int, typer.Option(min=4, help="Pattern pixels per side.")] = 64,
    factorization: Annotated[
        str, typer.Option(help="vector (default), jones, normal, li or laurent.")
    ] = "vector",
    precision: Annotated[str, typer.Option(help="complex128 or complex64 (~2x faster).")] = (
        "complex128"
    ),
    target_accuracy: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Choose the order: the smallest M whose rms T error against converged spectra "
            "is <= this on a few probe designs (overrides --harmonics; recorded in the file).",
        ),
    ] = None,
    probe_designs: Annotated[int, typer.Option(min=1, help="Designs of the order probe.")] = 3,
    max_order: Annotated[int, typer.Option(min=1, help="Highest M the probe tries.")] = 12,
    reference_grid: Annotated[
        int, typer.Option(min=4, help="Pixels per side of the converged reference.")
    ] = 128,
    accuracy: Annotated[
        bool,
        typer.Option(
            help="After the build, re-solve a sample at the converged order and store the error."
        ),
    ] = True,
    accuracy_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of designs re-solved.")
    ] = 0.01,
    accuracy_minimum: Annotated[int, typer.Option(min=1, help="At least this many.")] = 5,
    jones: Annotated[bool, typer.Option(help="Also store complex Jones matrices t.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the design list.")] = 0,
    chunk_size: Annotated[int, typer.Option(min=1, help="Designs per RCWA batch/task.")] = 64,
    workers: Annotated[int, typer.Option(min=1, help="LocalCluster worker processes.")] = 2,
    scheduler: Annotated[
        str | None, typer.Option(help="Existing Dask scheduler, e.g. tcp://host:8786.")
    ] = None,
    serial: Annotated[bool, typer.Option(help="Solve in this process, without Dask.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Generate (or resume) a library of COUNT designs, batched through the RCWA.

    With --target-accuracy the order comes from a convergence probe on a few designs (stored in
    the file); with --accuracy (default) a seeded 1% sample (--accuracy-fraction, at least
    --accuracy-minimum designs) is re-solved at the converged order afterwards and the error
    stored (`hyplex library info` shows it). A rerun resumes both steps.
    """
    from dataclasses import replace

    from hyplex.cli.checks import memory_bad_parameter, output_file
    from hyplex.optics.library import LibraryError, SolverSettings
    from hyplex.optics.library_build import build_library
    from hyplex.optics.library_spec import LibrarySpec, check_resources
    from hyplex.optics.memory import MemoryBudgetError

    output_file(out, "--out", "a library file path (.h5)")
    try:
        solver = SolverSettings(
            harmonics=(harmonics, harmonics),
            factorization=factorization,
            grid=(grid, grid),
            precision=precision,
        )
        reference = _reference(reference_grid, "vector")
        spec = LibrarySpec(
            family=family,
            count=count,
            wavelengths_nm=tuple(
                np.linspace(wavelength_start_nm, wavelength_stop_nm, wavelengths).tolist()
            ),
            period_nm=period_nm,
            thickness_range_nm=(thickness_min_nm, thickness_max_nm),
            min_feature_nm=min_feature_nm,
            material=material,
            substrate=substrate,
            superstrate=superstrate,
            solver=solver,
            store_jones=jones,
            seed=seed,
        )
        if accuracy and not 0 < accuracy_fraction <= 1:
            raise ValueError(f"--accuracy-fraction must be in (0, 1], got {accuracy_fraction}")
    except MemoryBudgetError as error:
        raise memory_bad_parameter(error) from None
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    records = None
    if target_accuracy is not None:
        probe = _order_probe(out, spec, target_accuracy, probe_designs, max_order, reference)
        spec = replace(spec, solver=probe.library_solver)
        records = {"convergence_probe": probe.to_record()}
    try:  # before anything is allocated: the file in memory and on disk, one chunk's RCWA
        check_resources(spec, out, chunk_size, 1 if serial else 0 if scheduler else workers)
    except MemoryBudgetError as error:
        raise memory_bad_parameter(error) from None
    where = "this process" if serial else (scheduler or f"a LocalCluster of {workers} workers")
    m = spec.solver.harmonics[0]
    typer.echo(
        f"building {out}: {count} {family} designs, {wavelengths} wavelengths, M={m} "
        f"({spec.solver.factorization}, grid {spec.solver.grid[0]}), on {where}"
    )
    try:
        report = build_library(
            out,
            spec,
            chunk_size=chunk_size,
            scheduler=scheduler,
            n_workers=workers,
            serial=serial,
            progress=progress,
            records=records,
        )
    except MemoryBudgetError as error:  # a resumed file's own chunk size
        raise memory_bad_parameter(error) from None
    except LibraryError as error:
        _fail(error)
    typer.echo(
        f"done: {report.computed} designs solved in {report.seconds:.1f} s "
        f"({report.designs_per_second:.2f} designs/s), {report.skipped} already in the file"
    )
    if accuracy:
        _accuracy(out, accuracy_fraction, accuracy_minimum, 0, reference, None, probe_designs,
                  max_order)  # fmt: skip


def _reference(grid: int, factorization: str):
    from hyplex.optics.library import SolverSettings

    return SolverSettings(harmonics=(1, 1), factorization=factorization, grid=(grid, grid))


def _order_probe(out, spec, target, designs, max_order, reference):
    """The probe that picks the order for ``target`` (reused from ``out`` when it has one)."""
    from dataclasses import replace

    from hyplex.optics.library import LibraryError, read_records
    from hyplex.optics.library_probe import DEFAULT_TOLERANCE, ConvergenceProbe, probe_convergence

    if out.exists():
        try:
            stored = read_records(out)["convergence_probe"]
        except LibraryError as error:
            _fail(error)
        if stored is not None and stored.summary.get("target") == target:
            probe = ConvergenceProbe.from_record(stored)
            # the stored probe answers only for the same library and reference settings
            unordered = lambda settings: replace(settings, harmonics=(0, 0))  # noqa: E731
            asked = (unordered(spec.solver), unordered(reference))
            if asked != (unordered(probe.library_solver), unordered(probe.reference)):
                _fail(
                    f"{out} holds a library whose order was probed for {probe.library_solver} "
                    f"against {probe.reference}; the options ask for {spec.solver} against "
                    f"{reference}: use another --out, or the file's settings to resume it"
                )
            typer.echo(f"order M={probe.chosen_order} from the probe stored in {out}")
            return probe
    tolerance = min(DEFAULT_TOLERANCE, target / 2)
    typer.echo(
        f"probing the order on {designs} designs: reference {reference.factorization} on a "
        f"{reference.grid[0]} px grid, converged when M -> M+1 changes rms T by <= {tolerance:g}"
    )
    try:
        probe = probe_convergence(
            spec,
            designs=designs,
            reference=reference,
            tolerance=tolerance,
            max_order=max_order,
            target=target,
            log=lambda line: typer.echo(f"  {line}"),
        )
    except LibraryError as error:  # did not converge, or no order meets the target
        _fail(error)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'--target-accuracy'") from error
    chosen = probe.candidates[-1]
    typer.echo(
        f"chose M={probe.chosen_order} ({(2 * probe.chosen_order + 1) ** 2} orders): rms "
        f"{chosen['rms']:.4f}, max |dT| {chosen['max_abs_dT']:.3f} against the reference at "
        f"M={probe.converged_order} (target {target}); {chosen['seconds_per_design']:.2f} "
        "s/design in the probe"
    )
    return probe


#: The rms error against converged spectra above which a library's accuracy is warned about
#: (issue 21's goal for the libraries behind co-design and the surrogate).
ACCURACY_GOAL = 0.01


def _accuracy(path, fraction, minimum, seed, reference, tolerance, designs, max_order, order=None):
    from hyplex.optics.library import LibraryError
    from hyplex.optics.library_accuracy import estimate_accuracy
    from hyplex.optics.library_probe import DEFAULT_TOLERANCE

    typer.echo(f"accuracy: re-solving {fraction:.1%} of {path.name} (at least {minimum}) ...")
    try:
        estimate = estimate_accuracy(
            path,
            fraction=fraction,
            minimum=minimum,
            seed=seed,
            reference=reference,
            tolerance=DEFAULT_TOLERANCE if tolerance is None else tolerance,
            probe_designs=designs,
            max_order=max_order,
            reference_order=order,
            log=lambda line: typer.echo(f"  {line}"),
        )
    except LibraryError as error:
        _fail(error)
    typer.echo(_describe_accuracy(estimate.summary()))
    if estimate.rms > ACCURACY_GOAL:
        typer.echo(
            f"warning: {path.name} is off by rms {estimate.rms:.3f} from converged spectra "
            f"(more than {ACCURACY_GOAL:g}): co-design and surrogates trained on it inherit "
            "that error; `hyplex library build --target-accuracy 0.01` picks an order that "
            "meets 0.01",
            err=True,
        )
    return estimate


def _describe_accuracy(summary: dict | None) -> str:
    if summary is None:
        return "accuracy unknown (no estimate stored; run `hyplex library accuracy PATH`)"
    ref = summary["reference"]
    return (
        f"accuracy: rms {summary['rms']:.4f}, max |dT| {summary['max_abs_dT']:.3f} on "
        f"{summary['designs']} designs against {ref['factorization']} M={ref['harmonics'][0]} "
        f"on a {ref['grid'][0]} px grid (converged to {summary['tolerance']:g})"
    )


@library_app.command("accuracy")
def accuracy_command(
    path: LibraryPath,
    fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share re-solved.")] = 0.01,
    minimum: Annotated[int, typer.Option(min=1, help="At least this many designs.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    tolerance: Annotated[
        float, typer.Option(min=0.0, help="rms change M -> M+1 counted as converged.")
    ] = 0.005,
    reference_factorization: Annotated[str, typer.Option(help="Reference rule.")] = "vector",
    reference_grid: Annotated[int, typer.Option(min=4, help="Reference pixels per side.")] = 128,
    probe_designs: Annotated[int, typer.Option(min=1, help="Designs of the order probe.")] = 3,
    max_order: Annotated[int, typer.Option(min=1, help="Highest M the probe tries.")] = 12,
    reference_order: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Skip the probe: the converged M (e.g. what a probe of another library of "
            "this stack found, `hyplex library info`).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """(Re)compute a library's accuracy: a seeded sample re-solved at the converged order.

    The converged order comes from the file's convergence probe, else from a new one. Reference
    spectra are kept in PATH.accuracy-partial.npz as they are solved, so a rerun resumes; the
    estimate is added to the library atomically.
    """
    try:
        if not 0 < fraction <= 1:
            raise ValueError(f"--fraction must be in (0, 1], got {fraction}")
        if not tolerance > 0:
            raise ValueError(f"--tolerance must be > 0, got {tolerance}")
        reference = _reference(reference_grid, reference_factorization)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    estimate = _accuracy(
        path, fraction, minimum, seed, reference, tolerance, probe_designs, max_order,
        reference_order,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(estimate.summary()))


@library_app.command("info")
def info(
    path: LibraryPath,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Summarise a library: designs done, wavelengths, stack, solver, provenance."""
    from hyplex.optics.library import LibraryError, read_metadata

    try:
        meta = read_metadata(path, locking=False)  # also works while a build is writing
    except LibraryError as error:
        _fail(error)
    wl = meta["wavelengths_nm"]
    summary = {
        "path": str(path),
        "family": meta["family"],
        "parameter_names": list(meta["parameter_names"]),
        "designs": meta["count"],
        "done": meta["done"],
        "wavelengths": int(wl.size),
        "wavelength_range_nm": [float(wl[0]), float(wl[-1])],
        "period_nm": meta["period_nm"],
        "material": meta["material"],
        "substrate": meta["substrate"],
        "superstrate": meta["superstrate"],
        "solver": json.loads(meta["solver"].to_json()),
        "has_jones": meta["has_jones"],
        "has_density": meta["has_density"],
        "generation": meta["generation"],
        "solve_seconds": round(meta["solve_seconds"], 3),
        "nonfinite_designs": [int(i) for i in meta["nonfinite"]],
        "format_version": meta["format_version"],
        "accuracy": meta["accuracy"],
        "convergence_probe": _probe_summary(meta["convergence_probe"]),
        **meta["provenance"],
    }
    bad = meta["nonfinite"]
    if bad.size:
        shown = ", ".join(str(int(i)) for i in bad[:20]) + (", ..." if bad.size > 20 else "")
        typer.echo(
            f"warning: {bad.size} of {meta['done']} finished designs hold NaN or inf "
            f"(designs {shown}); `hyplex library plot` marks them",
            err=True,
        )
    if as_json:
        typer.echo(json.dumps(summary))
        return
    for key, value in summary.items():
        if key == "nonfinite_designs":
            value = f"{len(value)}" + (f" ({shown})" if bad.size else "")
        elif key == "accuracy":
            value = _describe_accuracy(value).removeprefix("accuracy: ")
        elif key == "convergence_probe":
            value = _describe_probe(value)
        typer.echo(f"{key:18s} {value}")


def _probe_summary(summary: dict | None) -> dict | None:
    """The probe's outcome without its per-rung table (which `--json` keeps short)."""
    if summary is None:
        return None
    keep = ("converged_order", "tolerance", "target", "chosen_order", "reference", "indices")
    return {key: summary[key] for key in keep} | {
        "ladder": [{"M": r["M"], "change_to_next": r["change_to_next"]} for r in summary["ladder"]],
        "candidates": [
            {"M": c["M"], "rms": c["rms"], "max_abs_dT": c["max_abs_dT"]}
            for c in summary["candidates"]
        ],
    }


def _describe_probe(summary: dict | None) -> str:
    if summary is None:
        return "none"
    text = (
        f"converged at M={summary['converged_order']} (rms change <= {summary['tolerance']:g}) "
        f"on {len(summary['indices'])} designs"
    )
    if summary["chosen_order"] is not None:
        text += f"; M={summary['chosen_order']} chosen for target rms {summary['target']:g}"
    return text


@library_app.command("plot")
def plot(
    path: LibraryPath,
    out: Annotated[Path | None, typer.Option(help="PNG to write (default: beside the file).")] = (
        None
    ),
    designs: Annotated[int, typer.Option(min=1, help="Spectra to draw.")] = 6,
    seed: Annotated[int, typer.Option(help="Which designs to draw.")] = 0,
) -> None:
    """Plot TE/TM spectra of a few designs and the mean transmittance over the design space."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hyplex.optics.library import LibraryError, nonfinite_designs, read_library

    try:
        library = read_library(path, locking=False, nonfinite="keep").completed()
    except LibraryError as error:
        _fail(error)
    if len(library) == 0:
        _fail(ValueError(f"{path} has no finished designs yet"))
    bad = nonfinite_designs(library)  # indices into the finished designs
    if bad.size:
        typer.echo(
            f"warning: {bad.size} of {len(library)} finished designs hold NaN or inf; "
            "marked with red crosses, left out of the spectra and the mean",
            err=True,
        )
    good = np.setdiff1d(np.arange(len(library)), bad)
    out = out or Path(path).with_suffix(".png")
    rng = np.random.default_rng(seed)
    picks = rng.choice(good, size=min(designs, good.size), replace=False) if good.size else []
    wl = library.wavelengths_nm
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, index in enumerate(picks):
        colour = f"C{i % 10}"
        label = ", ".join(
            f"{n.removesuffix('_nm')}={v:.0f}"
            for n, v in zip(library.parameter_names, library.params_nm[index], strict=True)
        )
        label += f", t={library.thickness_nm[index]:.0f} nm"
        left.plot(wl, library.T[index, :, 0], color=colour, label=label)
        left.plot(wl, library.T[index, :, 1], color=colour, linestyle="--")
    left.set(xlabel="wavelength (nm)", ylabel="T (solid TE, dashed TM)", ylim=(0, 1))
    left.legend(fontsize=6)
    mean_t = library.T[good].mean(axis=(1, 2))
    points = right.scatter(
        library.params_nm[good, 0], library.thickness_nm[good], c=mean_t, s=4, cmap="viridis"
    )
    title = f"{library.family}: {len(library)} designs, mean T over band and polarisation"
    if bad.size:
        right.scatter(
            np.nan_to_num(library.params_nm[bad, 0]),
            np.nan_to_num(library.thickness_nm[bad]),
            marker="x",
            color="red",
            s=24,
            label=f"{bad.size} with NaN/inf",
        )
        right.legend(fontsize=7, loc="upper right")
        title += f"\n{bad.size} designs hold NaN/inf (red x)"
    right.set(
        xlabel=f"{library.parameter_names[0]}",
        ylabel="thickness (nm)",
        title=title,
    )
    fig.colorbar(points, ax=right)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    typer.echo(f"wrote {out}")


if __name__ == "__main__":  # pragma: no cover
    library_app()
