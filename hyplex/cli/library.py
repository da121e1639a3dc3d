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
    harmonics: Annotated[int, typer.Option(min=0, help="Orders -M..M along x and y.")] = 2,
    grid: Annotated[int, typer.Option(min=4, help="Pattern pixels per side.")] = 64,
    factorization: Annotated[str, typer.Option(help="'li' or 'laurent'.")] = "li",
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
    """Generate (or resume) a library of COUNT designs, batched through the RCWA."""
    from hyplex.cli.checks import memory_bad_parameter, output_file
    from hyplex.optics.library import LibraryError, SolverSettings
    from hyplex.optics.library_build import build_library
    from hyplex.optics.library_spec import LibrarySpec, check_resources
    from hyplex.optics.memory import MemoryBudgetError

    output_file(out, "--out", "a library file path (.h5)")
    try:
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
            solver=SolverSettings(
                harmonics=(harmonics, harmonics), factorization=factorization, grid=(grid, grid)
            ),
            store_jones=jones,
            seed=seed,
        )
        # before anything is allocated: the file in memory and on disk, one chunk's RCWA
        check_resources(spec, out, chunk_size, 1 if serial else 0 if scheduler else workers)
    except MemoryBudgetError as error:
        raise memory_bad_parameter(error) from None
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    where = "this process" if serial else (scheduler or f"a LocalCluster of {workers} workers")
    typer.echo(f"building {out}: {count} {family} designs, {wavelengths} wavelengths, on {where}")
    try:
        report = build_library(
            out,
            spec,
            chunk_size=chunk_size,
            scheduler=scheduler,
            n_workers=workers,
            serial=serial,
            progress=progress,
        )
    except MemoryBudgetError as error:  # a resumed file's own chunk size
        raise memory_bad_parameter(error) from None
    except LibraryError as error:
        _fail(error)
    typer.echo(
        f"done: {report.computed} designs solved in {report.seconds:.1f} s "
        f"({report.designs_per_second:.2f} designs/s), {report.skipped} already in the file"
    )


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
        typer.echo(f"{key:18s} {value}")


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
