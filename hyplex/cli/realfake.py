"""``hyplex realfake fit``: a real-vs-fake (metamer) head for a bundle, HierCon.

Registered from ``hyplex.cli`` with ``register(app)``.

::

    hyplex realfake fit --bundle B [--steps 600] [--scenes 16] [--threshold eer|tpr95]
    hyplex segment INPUTS --bundle B --fake      # writes /fake into <stem>.labels.h5

``fit`` trains a HierCon head (:mod:`hyplex.models.pretraining.hierarchical_contrastive`) on
twin pixels of the bundle's fake-able classes and their painted metamers, seen through the
bundle's own encoder (:mod:`hyplex.models.pretraining.realfake_fitting`), sets its threshold
on held-out twin scenes (at the EER, or at 95 % TPR on the fakes) and stores it in the bundle
(``realfake.json`` + safetensors, hash-checked, written atomically: Ctrl-C during training
writes nothing; ``--output`` writes a new bundle instead). The last stdout line is one JSON
object: the bundle, the held-out EER and AUROC, the threshold, and the EER of the bundle's
own segmenter read as a fake detector (``segmenter_eer``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register", "realfake_app"]

realfake_app = typer.Typer(
    help="Real-vs-fake (metamer) heads: HierCon on the bundle's barcodes.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the ``realfake`` group to ``app``."""
    app.add_typer(realfake_app, name="realfake")


@realfake_app.command("fit")
def fit_command(
    bundle: Annotated[Path, typer.Option("--bundle", help="Design bundle directory.")],
    steps: Annotated[int | None, typer.Option(min=1, help="HierCon training steps.")] = None,
    scenes: Annotated[int, typer.Option(min=1, help="Twin training scenes.")] = 16,
    heldout_scenes: Annotated[
        int, typer.Option(min=1, help="Twin scenes that set the threshold.")
    ] = 8,
    threshold: Annotated[
        str,
        typer.Option(
            help="Where the threshold sits on held-out pixels: eer (false acceptance = false "
            "rejection) or tpr95 (95 % of the fakes called fake)."
        ),
    ] = "eer",
    seed: Annotated[int, typer.Option(help="Scenes, noise, weights and batches.")] = 0,
    quick: Annotated[
        bool, typer.Option("--quick", help="Few, small scenes and 60 steps (a demo).")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write a new bundle here (default: update B).")
    ] = None,
) -> None:
    """Fit a HierCon real-vs-fake head (fake probability + threshold) into a bundle."""
    from hyplex.models.bundle import BundleError, load_bundle
    from hyplex.models.pretraining.realfake_files import THRESHOLD_CRITERIA, save_realfake_head
    from hyplex.models.pretraining.realfake_fitting import RealFakeFitSettings, fit_realfake_head

    if threshold not in THRESHOLD_CRITERIA:
        raise typer.BadParameter(
            f"expected one of {', '.join(THRESHOLD_CRITERIA)}, got {threshold!r}",
            param_hint="'--threshold'",
        )
    if output is not None and output.exists():
        raise typer.BadParameter(f"{output} exists; choose a new folder", param_hint="'--output'")
    try:
        loaded = load_bundle(bundle)
    except BundleError as error:
        raise typer.BadParameter(str(error), param_hint="'--bundle'") from None
    settings = RealFakeFitSettings(
        train_scenes=6 if quick else scenes,
        heldout_scenes=4 if quick else heldout_scenes,
        shape=(24, 24) if quick else (32, 32),
        steps=steps or (60 if quick else 600),
        criterion=threshold,
        seed=seed,
    )
    try:  # nothing is written until the head is fitted: Ctrl-C leaves the bundle as it was
        head, metrics = fit_realfake_head(loaded, settings, progress=True)
    except KeyboardInterrupt:
        typer.echo("interrupted: no head written", err=True)
        raise typer.Exit(130) from None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'--bundle'") from None
    from hyplex.models.bundle_records import add_to_bundle

    where = add_to_bundle(  # in place, or a copy that appears with its head
        loaded.path, output, lambda folder: save_realfake_head(folder, head, metrics)
    )
    typer.echo(json.dumps({"bundle": str(where), "method": "HierCon", **metrics}))
