"""``hyplex refit``: retrain a design bundle's decoders on a calibration's measured responses."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _table(metrics: dict) -> str:
    """The refit figures as a text table (the camera is the measured one on hardware)."""
    camera = "measured camera" if metrics.get("camera") == "measured" else "true camera"
    rows = [
        ("design decoders, design camera (promised)", "design"),
        (f"design decoders, {camera}, uncalibrated (before)", "before"),
        (f"design decoders, {camera}, flat-fielded", "flat_only"),
        (f"refitted decoders, {camera} (after)", "after"),
        ("linear projector fitted on the design", "linear_before"),
        ("linear projector refitted on the measurement", "linear_after"),
    ]
    lines = [f"{'':56s} {'PSNR dB':>8s} {'SAM deg':>8s} {'mIoU':>6s}"]
    for label, key in rows:
        figures = metrics.get(key, {})
        miou = figures.get("miou")
        lines.append(
            f"{label:56s} {figures.get('psnr', float('nan')):8.2f} "
            f"{figures.get('sam', float('nan')):8.2f} "
            + (f"{miou:6.3f}" if miou is not None else f"{'-':>6s}")
        )
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    """Add the ``refit`` command to ``app``."""

    @app.command("refit")
    def refit(
        design: Path = typer.Option(..., help="Design bundle directory (hyplex design)."),
        calibration: Path = typer.Option(
            ..., help="Calibration file (hyplex calibrate, or hyplex calibrate import)."
        ),
        out: Path = typer.Option(None, help="Refitted bundle (default: <design>_refit)."),
        steps: int = typer.Option(150, min=0, help="Fine-tuning steps of the learned decoders."),
        seed: int = typer.Option(7, help="Seed of the scenes, patches and noise."),
        overwrite: bool = typer.Option(False, help="Replace an existing --out."),
    ) -> None:
        """Re-fit the linear decoder and fine-tune the learned decoders on the measured
        responses; write a new bundle and print the recovered performance."""
        from hyplex.cli.checks import input_file, output_dir
        from hyplex.hil.refit import RefitSettings, refit_bundle
        from hyplex.models.bundle import BundleError

        target = out or design.with_name(design.name + "_refit")
        try:  # one line, as the refit's own errors below, before the scenes are made
            if not design.is_dir():
                raise typer.BadParameter(
                    f"{design}: "
                    + ("a file" if design.exists() else "no such bundle folder")
                    + "; expected a design bundle folder (hyplex design)",
                    param_hint="'--design'",
                )
            input_file(calibration, "--calibration", "a calibration file (hyplex calibrate)")
            output_dir(target, "--out", "a folder for the refitted bundle")
        except typer.BadParameter as error:
            typer.echo(f"error: {error.format_message()}", err=True)
            raise typer.Exit(2) from None
        try:
            result, path = refit_bundle(
                design, calibration, target, RefitSettings(steps=steps, seed=seed), overwrite
            )
        except (BundleError, ValueError) as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        typer.echo(_table(result.metrics))
        typer.echo(f"wrote {path} ({result.seconds:.0f} s)")
        typer.echo(json.dumps({"psnr_before_refit": result.metrics["before"]["psnr"],
                               "psnr_after_refit": result.metrics["after"]["psnr"]}))  # fmt: skip
