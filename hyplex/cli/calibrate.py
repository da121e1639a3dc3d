"""``hyplex calibrate``: run the calibration pipeline and write the file and its report."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``calibrate`` command to ``app``."""

    @app.command("calibrate")
    def calibrate(
        camera: str = typer.Option(
            "sim", help="Camera to calibrate; only 'sim' (the twin on the simulated bench) for now."
        ),
        out: Path = typer.Option(Path("cal.h5"), help="Calibration file (HDF5) to write."),
        report: Path = typer.Option(None, help="PNG report (default: beside --out)."),
        rows: int = typer.Option(240, min=64, help="Simulated sensor rows."),
        cols: int = typer.Option(256, min=64, help="Simulated sensor columns."),
        pitch_px: float = typer.Option(5.3, help="Simulated sub-filter pitch, px."),
        rotation_deg: float = typer.Option(1.0, help="Simulated mosaic rotation, degrees."),
        samples: int = typer.Option(48, min=0, help="Broadband samples of the Hyplex fit."),
        resume: bool = typer.Option(False, help="Continue the sweep of a partial --out."),
        design: Path = typer.Option(
            None,
            help="Design bundle whose filters the simulated camera carries (default: "
            "the thin-film stand-in encoder).",
        ),
        fabricate: bool = typer.Option(
            False,
            help="With --design: the camera carries fabricated filters (shifted, "
            "broadened, scaled; hyplex.simulation.fabrication), not the design.",
        ),
        fabrication_seed: int = typer.Option(0, help="Seed of the fabrication errors."),
    ) -> None:
        """Dark -> flat -> registration -> EMVA 1288 -> spectral sweep, on the simulated bench."""
        if camera != "sim":
            raise typer.BadParameter("only --camera sim is supported", param_hint="--camera")
        _check_options(out, report, pitch_px, rotation_deg, rows, cols, resume, design)
        from tqdm import tqdm

        from hyplex.calibration.pipeline import PipelineSettings, calibrate_simulated
        from hyplex.calibration.report import plot_report
        from hyplex.simulation.camera import default_camera
        from hyplex.simulation.grids import prototype_grid

        if design is None:
            if fabricate:
                raise typer.BadParameter("--fabricate needs --design", param_hint="--fabricate")
            try:
                twin = default_camera(prototype_grid(), (rows, cols), pitch_px, rotation_deg)
            except ValueError as error:  # a mosaic that does not fit the sensor
                raise typer.BadParameter(str(error)) from None
        else:
            from hyplex.hil.measured_response import design_twin
            from hyplex.models.bundle import BundleError, load_bundle
            from hyplex.simulation.fabrication import FabricationError

            try:
                bundle = load_bundle(design)
            except (BundleError, OSError, ValueError) as error:
                raise typer.BadParameter(
                    f"{error} (expected a design bundle folder)", param_hint="'--design'"
                ) from None
            twin, _ = design_twin(
                bundle,
                (rows, cols),
                pitch_px,
                rotation_deg,
                FabricationError() if fabricate else None,
                fabrication_seed,
            )
        bars: dict[str, tqdm] = {}

        def progress(step: str, done: int, total: int) -> None:
            bar = bars.get(step)
            if bar is None:
                bar = bars[step] = tqdm(total=total, desc=step, leave=True)
            bar.n = done
            bar.refresh()

        calibration = calibrate_simulated(
            twin, out, PipelineSettings(n_samples=samples), resume=resume, progress=progress
        )
        for bar in bars.values():
            bar.close()
        png = plot_report(calibration, report or out.with_suffix(".png"))
        emva = calibration.sections["emva"]
        typer.echo(f"wrote {out} and {png}")
        typer.echo(f"layout: {calibration.layout}")
        typer.echo(
            f"K = {float(emva['system_gain_pooled_dn_per_e']):.4f} DN/e- "
            f"(true {twin.sensor.system_gain_dn_per_e})"
        )


def _check_options(out, report, pitch_px, rotation_deg, rows, cols, resume, design) -> None:
    """One line per wrong value, before the seconds of simulated bench work."""
    from hyplex.cli.checks import check_sim_sensor, finite, output_file

    output_file(out, "--out", "a calibration file path (.h5)")
    output_file(report, "--report", "a PNG file path")
    finite(pitch_px, "--pitch-px", positive=True, unit="sensor pixels per sub-filter")
    finite(rotation_deg, "--rotation-deg", unit="degrees")
    # the sweep and EMVA steps hold stacks of frames and their float means
    check_sim_sensor(f"{rows} rows x {cols} cols", rows, cols, frames=32, option="--rows")
    if design is not None and not design.is_dir():
        raise typer.BadParameter(
            f"{design}: "
            + ("a file" if design.exists() else "no such bundle folder")
            + "; expected a design bundle folder (hyplex design)",
            param_hint="'--design'",
        )
    if resume and out.exists():
        from hyplex.calibration.store import load_calibration

        try:
            load_calibration(out, allow_partial=True)
        except (OSError, KeyError, ValueError) as error:
            raise typer.BadParameter(
                f"{out} cannot be resumed: {error}; expected a hyplex calibration file "
                "(an interrupted `hyplex calibrate`)",
                param_hint="'--resume'",
            ) from None
