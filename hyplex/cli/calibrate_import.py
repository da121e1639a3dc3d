"""``hyplex calibrate import``: measured (reference spectrum, channel readings) pairs from
before hyplex -> a calibration file that ``hyplex refit --calibration`` accepts.

The fits and the file layouts are :mod:`hyplex.calibration.measured_import`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

HELP = """Import measured samples: pairs of (reference spectrum, channel readings) from
CSV, NPY (numeric only, never unpickled), NPZ or HDF5, on any wavelength grid and
channel count. Fits the Hyplex basis/NNLS responses and hyplex's own estimate with
smoothness and non-negativity priors, reports leave-one-out errors (per-channel R^2,
spectral RMSE against a plain ridge readings->spectra regression) and writes a
calibration file for hyplex refit --calibration.

\b
CSV layout: a header line, then one line per sample; columns named ch<...> are
channel readings (dark-subtracted), columns named by a number are the reference
spectrum at that wavelength (nm). Example (tests/data/measured_samples.csv):
  ch0,ch1,ch2,450,500,550,600,650
  812.5,301.2,95.1,0.20,0.45,0.80,0.60,0.30
"""


def register(group: typer.Typer) -> None:
    """Add the ``import`` subcommand to the ``calibrate`` group."""
    group.command("import", help=HELP)(import_command)


def import_command(
    samples: Path = typer.Option(..., help="Sample file (.csv, .npy, .npz, .h5/.hdf5)."),
    out: Path = typer.Option(..., help="Calibration file to write (HDF5)."),
    n_basis: int = typer.Option(12, min=1, help="Basis functions of the Hyplex NNLS fit."),
    camera_id: str = typer.Option("imported", help="Camera id recorded in the file."),
    report: Path = typer.Option(None, help="Also write the text report and figures (JSON)."),
    overwrite: bool = typer.Option(False, help="Replace an existing --out."),
) -> None:
    """Fit responses to measured samples and write a calibration file."""
    from hyplex.calibration.measured_import import (
        SampleFileError,
        calibration_from_import,
        import_samples,
        read_samples,
    )
    from hyplex.calibration.store import save_calibration
    from hyplex.cli.checks import input_file, output_file

    try:
        input_file(samples, "--samples", "a sample file (.csv, .npy, .npz, .h5)")
        output_file(out, "--out", "a calibration file path (.h5)")
        output_file(report, "--report", "a report file path (.json)")
        if out.exists() and not overwrite:
            raise typer.BadParameter(
                f"{out} exists; pass --overwrite to replace it (it is left untouched)",
                param_hint="'--out'",
            )
    except typer.BadParameter as error:
        typer.echo(f"error: {error.format_message()}", err=True)
        raise typer.Exit(2) from None
    try:
        measured = read_samples(samples)
        from tqdm import tqdm

        with tqdm(total=len(measured.spectra), desc="leave-one-out", unit="sample",
                  disable=None) as bar:  # fmt: skip
            result = import_samples(measured, n_basis, progress=lambda done, total: bar.update())
    except (SampleFileError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    # every check and fit is done before anything is written; the write is atomic, so a
    # failed run never leaves or replaces a half-written --out
    save_calibration(out, calibration_from_import(result, camera_id))
    typer.echo(result.summary())
    typer.echo(
        f"weakest channel: {result.weak_channel_name} "
        f"(leave-one-out R^2 {result.r_squared_loo[result.weak_channel]:.4f})"
    )
    if report is not None:
        from hyplex.optics.atomic_io import atomic_path

        figures = import_figures(result)
        with atomic_path(report) as temporary:
            Path(temporary).write_text(json.dumps(figures, indent=2))
        typer.echo(f"wrote {report}")
    typer.echo(f"wrote {out}")


def import_figures(result) -> dict:
    """The leave-one-out figures of an :class:`ImportResult` as JSON-ready numbers."""
    names = result.samples.channel_names
    return {
        "samples": int(len(result.samples.spectra)),
        "channels": list(names),
        "wavelengths_nm": [float(v) for v in result.samples.wavelengths_nm],
        "r_squared_loo": dict(zip(names, map(float, result.r_squared_loo), strict=True)),
        "basis_r_squared_loo": dict(
            zip(names, map(float, result.basis_r_squared_loo), strict=True)
        ),
        "weak_channel": result.weak_channel_name,
        "loo_rmse": result.loo_rmse,
        "basis_loo_rmse": result.basis_loo_rmse,
        "ridge_loo_rmse": result.ridge_loo_rmse,
        "spectra_rms": result.spectra_rms,
    }
