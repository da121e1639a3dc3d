"""``hyplex temporal fit``: a fitted temporal module (TCL or the gated smoother) in a bundle.

Registered from ``hyplex.cli`` with ``register(app)``.

``hyplex temporal fit --bundle B [--module tcl|gated] [--clips N] [--steps S]`` draws labelled
twin clips of the bundle's classes, seen through the bundle's own encoder and segmenter
(:mod:`hyplex.models.temporal.twin_fitting`), trains the module on them by truncated
back-propagation through time, scores it on a held-out clip, and stores it in the bundle
(``temporal-<module>.json`` + safetensors, hash-checked, written atomically:
:mod:`hyplex.models.temporal.module_files`; ``--output`` writes a new bundle instead).
``hyplex segment --bundle B --temporal tcl`` then runs the fitted module. The last stdout line
is one JSON object: the bundle, the module, the training settings and the held-out figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register", "temporal_app"]

temporal_app = typer.Typer(
    help="Temporal modules of the video engine (TCL, gated smoother): fit them for a bundle.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the ``temporal`` group to ``app``."""
    app.add_typer(temporal_app, name="temporal")


@temporal_app.command("fit")
def fit_command(
    bundle: Annotated[Path, typer.Option("--bundle", help="Design bundle directory.")],
    module: Annotated[
        str,
        typer.Option(
            "--module",
            help="tcl (temporal event learning) or gated (occlusion-aware logit smoothing).",
        ),
    ] = "tcl",
    clips: Annotated[int, typer.Option(min=1, help="Labelled twin training clips.")] = 4,
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps (Adam).")] = 60,
    frames: Annotated[int, typer.Option(min=2, help="Frames per clip.")] = 16,
    size: Annotated[
        str, typer.Option(help="Clip size ROWSxCOLS, metapixels (one pixel = one barcode).")
    ] = "48x64",
    seed: Annotated[int, typer.Option(help="Clips, sensor noise and training draws.")] = 0,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write a new bundle here (default: update B).")
    ] = None,
) -> None:
    """Fit a temporal module on labelled twin video for a bundle and store it there."""
    from hyplex.models.bundle import BundleError, load_bundle
    from hyplex.models.temporal.module_files import save_temporal_module, temporal_record_path
    from hyplex.models.temporal.twin_fitting import TemporalFitSettings, fit_bundle_temporal

    if module not in ("tcl", "gated"):
        raise typer.BadParameter(
            f"{module!r} is no fittable temporal module; expected tcl or gated",
            param_hint="'--module'",
        )
    try:
        rows, cols = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(
            f"expected ROWSxCOLS like 48x64, got {size!r}", param_hint="'--size'"
        ) from None
    try:
        settings = TemporalFitSettings(
            module=module, clips=clips, frames=frames, shape=(rows, cols), steps=steps, seed=seed
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if output is not None and output.exists():
        raise typer.BadParameter(f"{output} exists; choose a new folder", param_hint="'--output'")
    try:
        loaded = load_bundle(bundle)
    except BundleError as error:
        raise typer.BadParameter(str(error), param_hint="'--bundle'") from None
    try:  # nothing is written until the module is fitted: Ctrl-C leaves the bundle as it was
        fitted, training, metrics = fit_bundle_temporal(loaded, settings, progress=True)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'--bundle'") from None
    n_filters = int(loaded.responses.shape[0])
    arguments = (fitted, loaded.class_names, n_filters, training["segmenter_sha256"])
    from hyplex.models.bundle_records import add_to_bundle

    where = add_to_bundle(  # in place, or a copy that appears with its module
        loaded.path,
        output,
        lambda folder: save_temporal_module(folder, *arguments, training, metrics),
    )
    path = temporal_record_path(where, module)
    typer.echo(
        json.dumps(
            {
                "bundle": str(path.parent),
                "module": module,
                "file": str(path),
                "training": training,
                "heldout": metrics,
            }  # fmt: skip
        )
    )
