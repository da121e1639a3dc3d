"""``hyplex demo`` and ``hyplex optics``: the spectrum of one metasurface, and the materials."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import typer

optics_app = typer.Typer(
    help="Physics of one metasurface: materials, thin films, RCWA.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add ``demo`` and the ``optics`` group to the root app."""
    app.command()(demo)
    app.add_typer(optics_app, name="optics")


def demo(
    out: Path = typer.Option(Path("out/demo_transmission.png"), help="PNG to write."),
    points: int = typer.Option(61, min=2, help="Number of wavelengths, 400-1000 nm."),
) -> None:
    """Compute and plot the transmission spectrum of a silicon pillar metasurface."""
    _spectrum(
        radius_nm=110.0,
        period_nm=400.0,
        height_nm=200.0,
        material="cSi",
        substrate="SiO2",
        harmonics=5,
        points=points,
        out=out,
    )


@optics_app.command("spectrum")
def spectrum(
    radius_nm: float = typer.Option(110.0, help="Pillar radius (nm)."),
    period_nm: float = typer.Option(400.0, help="Square lattice period (nm)."),
    height_nm: float = typer.Option(200.0, help="Pillar height (nm)."),
    material: str = typer.Option("cSi", help="Pillar material (see `hyplex optics materials`)."),
    substrate: str = typer.Option("SiO2", help="Substrate material."),
    harmonics: int = typer.Option(5, min=0, help="Orders -M..M kept along x and y."),
    points: int = typer.Option(61, min=2, help="Number of wavelengths, 400-1000 nm."),
    out: Path = typer.Option(Path("out/spectrum.png"), help="PNG to write; a .csv goes beside."),
) -> None:
    """Transmission spectrum of a cylindrical-pillar array (RCWA), plotted and saved as CSV."""
    _spectrum(radius_nm, period_nm, height_nm, material, substrate, harmonics, points, out)


def _spectrum(radius_nm, period_nm, height_nm, material, substrate, harmonics, points, out):
    from hyplex.cli.checks import memory_bad_parameter, output_file
    from hyplex.cli.pillar_spectrum import PillarFilter, pillar_spectrum, plot_spectrum
    from hyplex.optics.memory import MemoryBudgetError

    output_file(out, "--out", "a PNG file path (a .csv goes beside it)")
    design = PillarFilter(radius_nm, period_nm, height_nm, material, substrate, harmonics)
    try:
        _check_spectrum_memory(design, points)
    except MemoryBudgetError as error:
        raise memory_bad_parameter(error) from None
    wl = np.linspace(400.0, 1000.0, points)
    typer.echo(f"RCWA: {design} at {points} wavelengths ...")
    start = time.perf_counter()
    try:
        result = pillar_spectrum(design, wl)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    elapsed = time.perf_counter() - start
    png = plot_spectrum(design, result, out)
    csv = out.with_suffix(".csv")
    table = np.column_stack([wl, result.T.numpy(), result.R.numpy(), result.T0.numpy()])
    np.savetxt(
        csv,
        table,
        delimiter=",",
        fmt="%.6g",
        header="wavelength_nm,T_TE,T_TM,R_TE,R_TM,T0_TE,T0_TM",
    )
    T = result.unpolarized("T").numpy()
    typer.echo(
        f"solved in {elapsed:.1f} s; unpolarised T: min {T.min():.3f} at "
        f"{wl[T.argmin()]:.0f} nm, mean {T.mean():.3f}"
    )
    typer.echo(f"wrote {png} and {csv}")


def _check_spectrum_memory(design, points: int) -> None:
    """Refuse harmonics or wavelength counts whose RCWA cannot fit, before it allocates."""
    from hyplex.optics.memory import (
        available_memory_bytes,
        check_memory,
        fits_hint,
        rcwa_memory_bytes,
    )

    available = available_memory_bytes()
    grid = design.grid

    def needed(harmonics: int, wavelengths: int) -> int:
        return rcwa_memory_bytes(harmonics, grid, batch=1, wavelengths=wavelengths)

    m = design.harmonics
    if needed(m, 1) > available:
        check_memory(
            needed(m, 1),
            f"harmonics={m} ({(2 * m + 1) ** 2:,} orders, the RCWA at one wavelength)",
            setting="harmonics",
            value=m,
            hint=fits_hint(lambda k: needed(k, 1), available, "harmonics"),
            available=available,
        )
    check_memory(
        needed(m, points),
        f"points={points:,} wavelengths at harmonics={m}",
        setting="points",
        value=points,
        hint=fits_hint(lambda k: needed(m, k), available, "points", low=1),
        available=available,
    )


@optics_app.command("materials")
def materials(plot: Path = typer.Option(None, help="Optional PNG of n and k.")) -> None:
    """List the built-in materials with their valid ranges and sources."""
    from hyplex.optics.materials import available_materials, get_material

    for name in available_materials():
        m = get_material(name)
        lo, hi = m.wavelength_range_nm
        typer.echo(f"{name:10s} {lo:7.1f}-{hi:<8.1f} nm  {m.source.splitlines()[0][:90]}")
    if plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 5))
        for name in available_materials():
            m = get_material(name)
            lo, hi = max(m.wavelength_range_nm[0], 400.0), min(m.wavelength_range_nm[1], 1000.0)
            if lo < hi:
                wl = np.linspace(lo, hi, 200)
                ax.plot(wl, m.refractive_index(wl).real, label=name)
        ax.set(xlabel="wavelength (nm)", ylabel="n", title="refractive index (real part)")
        ax.legend(ncol=2)
        plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=110)
        typer.echo(f"wrote {plot}")
