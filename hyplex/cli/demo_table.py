"""The demo's last step: a design bundle against RGB and the Hyplex baseline, as a table.

``python -m hyplex.cli.demo_table --design out/design/bundle`` (``make demo`` runs it after
``hyplex design --quick``) trains the RGB and Hyplex PCA baselines with the design's own
config, scores all three rows on the same held-out twin scenes with the same noise and
exposure (:func:`hyplex.models.comparison.comparison_table`), prints the table, writes
``OUT/overlay.png`` (labels over an sRGB rendering, truth vs each model) and
``OUT/table.json``, and exits 1 when a claim of :func:`hyplex.models.comparison.compare_rows`
fails (``--no-check``: exit 0 anyway). ``register(app)`` adds it to a typer app as
``demo-table``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["demo_table", "register", "resolve_library"]

Design = Annotated[Path, typer.Option(help="The design bundle (OUT/bundle of hyplex design).")]
Library = Annotated[
    Path | None,
    typer.Option(help="The library the design chose from (default: the config's library_path, "
                 "else quick_library.h5 beside the bundle)."),
]  # fmt: skip
Out = Annotated[Path, typer.Option(help="Directory of overlay.png and table.json.")]
Check = Annotated[bool, typer.Option("--check/--no-check", help="Exit 1 when a comparison fails.")]
Workers = Annotated[
    int, typer.Option(min=1, help="Processes for the two baseline trainings (one thread each).")
]


def resolve_library(bundle_path: Path, config: dict, library: Path | None) -> Path:
    """The response library of the design: ``library``, else the config's ``library_path``,
    else ``quick_library.h5`` that ``hyplex design`` solved beside the bundle."""
    candidates = [library] if library is not None else []
    if library is None and config.get("library_path"):
        candidates.append(Path(config["library_path"]))
    if library is None:
        candidates.append(Path(bundle_path).resolve().parent / "quick_library.h5")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ValueError(
        f"no response library found (tried {', '.join(str(c) for c in candidates)}); give the "
        "one the design chose from with --library"
    )


def demo_table(
    design: Design = Path("out/design/bundle"),
    library: Library = None,
    out: Out = Path("out/demo"),
    check: Check = True,
    workers: Workers = 2,
) -> None:
    """Compare a co-designed bundle with RGB and the Hyplex PCA baseline on held-out scenes."""
    from hyplex.models.bundle import BundleError, load_bundle
    from hyplex.models.comparison import comparison_table, default_scene_cache, format_table
    from hyplex.models.report import write_overlay
    from hyplex.optics.library import LibraryError, read_library

    began = time.perf_counter()
    try:
        bundle = load_bundle(design)
        library_path = resolve_library(design, bundle.config, library)
        read_library(library_path)  # readable before any training starts
    except (BundleError, LibraryError, ValueError, OSError) as error:
        raise typer.BadParameter(str(error)) from error
    log = lambda message: typer.echo(message, err=True)  # noqa: E731
    cache = default_scene_cache(design)
    try:
        result = comparison_table(bundle, library_path, cache, log=log, workers=workers)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    out.mkdir(parents=True, exist_ok=True)
    rows = result["rows"]
    titles = {"truth": "truth"} | {
        key: row["label"].replace(" + ", "\n+ ") + f" (mIoU {row['miou']:.2f})"
        for key, row in rows.items()
    }
    titles["pca_linear"] += "\nlabels: its learned segmenter"
    overlay = write_overlay(out / "overlay.png", result["validation"], result["predictions"],
                            titles, result["overlay_scenes"])  # fmt: skip
    config = result["config"]
    record = {
        "design": str(design),
        "library": str(library_path),
        "rows": rows,
        "failures": result["failures"],
        "held_out_scenes": {"count": config["n_val_scenes"], "seed": config["seed"] + 1},
        "noise_seed": config["seed"] + 2,
        "config": config,
        "seconds": round(time.perf_counter() - began, 1),
    }
    (out / "table.json").write_text(json.dumps(record, indent=1))
    typer.echo(
        f"\nheld-out twin scenes: {config['n_val_scenes']} of {config['scene_size']} x "
        f"{config['scene_size']} px, {config['bands']} bands; every row trained with "
        f"{config['steps']} + {config['finetune_steps']} steps on {config['n_train_scenes']} "
        "scenes, same noise and exposure"
    )
    typer.echo(format_table(rows))
    typer.echo(
        "(the Hyplex row's mIoU is that of a segmenter trained on the same PCA encoder: a "
        "linear projector gives spectra, not labels)"
    )
    for failure in result["failures"]:
        typer.echo(f"NOT MET: {failure}")
    if not result["failures"]:
        codesign = rows["codesign"]
        typer.echo(
            f"co-design: mIoU {codesign['miou'] - rows['rgb']['miou']:+.3f} over RGB, PSNR "
            f"{codesign['psnr'] - rows['pca_linear']['psnr']:+.2f} dB over Hyplex PCA + linear"
        )
    typer.echo(f"wrote {overlay} and {out / 'table.json'} in {record['seconds']:.0f} s")
    if check and result["failures"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``demo-table`` as a command of ``app``."""
    app.command("demo-table")(demo_table)


def main() -> None:
    """``python -m hyplex.cli.demo_table``."""
    app = typer.Typer(add_completion=False)
    app.command()(demo_table)
    app()


if __name__ == "__main__":
    main()
