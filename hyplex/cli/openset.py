"""``hyplex openset fit`` (an open-set head for a bundle) and ``hyplex coverage``.

Registered from ``hyplex.cli`` with ``register(app)``.

* ``hyplex openset fit --bundle B --method M [--target-frames DIR]`` fits an open-set head
  (:mod:`hyplex.models.openset`) on the twin's open-set scenes seen through the bundle's own
  encoder, sets its threshold at 95 % TPR on held-out ID pixels, and stores it in the bundle
  (``openset.json`` + safetensors, written atomically; ``--output`` writes a new bundle
  instead). ``--target-frames`` gives unlabelled captured frames (ACT adapts to them).
* ``hyplex coverage --bundle B INPUTS`` prints the share of captured pixels outside the convex
  hull of the bundle's training mixture (twin barcodes of its classes) and writes an ``.npz``
  map per input (``outside (N, h, w)`` bool).

Captured inputs are barcode arrays (``.npy``: ``(h, w, F)`` or ``(N, h, w, F)``, normalised as
the decoders read them) or raw frames (a recording ``.h5``, a video, an image folder), which
are cut into barcodes with the bundle's mosaic layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

__all__ = [
    "register",
    "openset_app",
    "read_barcode_frames",
    "NEEDS_TARGET_FRAMES",
    "check_target_frames",
]

#: methods whose ``fit`` adapts to unlabelled captured frames (``--target-frames DIR``)
NEEDS_TARGET_FRAMES = ("ACT",)

openset_app = typer.Typer(
    help="Open-set heads: unknown materials and anomalies.", no_args_is_help=True
)

BundleOption = Annotated[Path, typer.Option("--bundle", help="Design bundle directory.")]
ScaleOption = Annotated[
    float,
    typer.Option(
        min=1e-9, help="Raw frames: divide barcodes by this white level, DN (.npy: unused)."
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``openset`` (group) and ``coverage`` to ``app``."""
    app.add_typer(openset_app, name="openset")
    app.command("coverage")(coverage_command)


def _load_bundle(path: Path):
    from hyplex.models.bundle import BundleError, load_bundle

    try:
        return load_bundle(path)
    except BundleError as error:
        raise typer.BadParameter(str(error), param_hint="'--bundle'") from None


def check_target_frames(method: str, target_frames) -> None:
    """Refuse, before any data is built or trained, a method of :data:`NEEDS_TARGET_FRAMES`
    without ``target_frames`` (a folder or file of captured frames, or None)."""
    if method in NEEDS_TARGET_FRAMES and target_frames is None:
        raise typer.BadParameter(
            f"{method} adapts the head to unlabelled captured frames and needs them: give "
            f"--target-frames DIR (barcode .npy files or raw frames), as in `hyplex openset fit "
            f"--bundle B --method {method} --target-frames DIR`",
            param_hint="'--target-frames'",
        )


def read_barcode_frames(
    path, bundle, max_frames: int = 64, input_scale_dn: float = 1.0
) -> np.ndarray:
    """Barcodes ``(N, F, h, w)`` float32 of captured frames at ``path`` for ``bundle``.

    ``.npy`` files (a file or every ``*.npy`` of a folder) hold barcodes ``(h, w, F)`` or
    ``(N, h, w, F)``; anything else is read as raw frames (:func:`hyplex.pipeline.sources.
    open_source`) and cut with the bundle's layout (:class:`hyplex.pipeline.stages.
    Preprocessor`), divided by ``input_scale_dn`` (the white-reference level in DN, as
    ``hyplex segment --input-scale-dn``), NaN (empty sub-filters) set to 0. At most
    ``max_frames`` frames.

    Raises
    ------
    ValueError
        No frames at ``path``; barcodes whose channel count is not the bundle's ``F``.
    """
    path = Path(path)
    n_filters = int(bundle.responses.shape[0])
    files = (
        sorted(path.glob("*.npy")) if path.is_dir() else ([path] if path.suffix == ".npy" else [])
    )
    frames = []
    if files:
        for file in files:
            array = np.load(file, allow_pickle=False)
            array = array[None] if array.ndim == 3 else array
            if array.ndim != 4:
                raise ValueError(
                    f"{file}: barcodes must be (h, w, F) or (N, h, w, F); got {array.shape}"
                )
            if array.shape[-1] != n_filters:
                raise ValueError(
                    f"{file}: barcodes have {array.shape[-1]} channels, the bundle's encoder has "
                    f"{n_filters} filters: mismatched channel counts"
                )
            frames.extend(array[: max_frames - len(frames)])
            if len(frames) >= max_frames:
                break
    elif path.exists() and not (path.is_dir() and not any(path.iterdir())):
        from hyplex.pipeline.sources import SourceError, open_source
        from hyplex.pipeline.stages import Preprocessor

        try:
            source = open_source(str(path))
        except SourceError as error:
            raise ValueError(f"{path}: cannot read frames: {error}") from None
        try:
            shape = getattr(source, "sensor_shape", None)
            if shape is not None:
                preprocessor = Preprocessor(bundle.layout, shape)
                for item in source:
                    raw = getattr(item, "data", item)
                    frames.append(np.nan_to_num(preprocessor(raw) / float(input_scale_dn)))
                    if len(frames) >= max_frames:
                        break
        finally:
            source.close()
    if not frames:
        raise ValueError(
            f"{path} holds no frames: expected barcode arrays (*.npy, (h, w, {n_filters})) or raw "
            "frames (images, a recording .h5, a video)"
        )
    stacked = np.stack([np.asarray(f, np.float32) for f in frames])
    return np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))


@openset_app.command("fit")
def fit_command(
    bundle: BundleOption,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="OE, DOE, DAL, ATOL, Watermarking, MSP, energy, CEDL, NSReg, BCE or ACT.",
        ),
    ] = "OE",
    target_frames: Annotated[
        Path | None, typer.Option("--target-frames", help="Unlabelled captured frames (ACT).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write a new bundle here (default: update B).")
    ] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Training steps of the method.")] = None,
    scenes: Annotated[int, typer.Option(min=2, help="Twin training scenes (ID).")] = 32,
    seed: Annotated[int, typer.Option(help="Scenes, noise and training draws.")] = 0,
    quick: Annotated[bool, typer.Option("--quick", help="Few scenes and steps (a demo).")] = False,
    input_scale_dn: ScaleOption = 1.0,
) -> None:
    """Fit an open-set head (unknown-material score + 95 %-TPR threshold) into a bundle."""
    from hyplex.models.openset.bundle_fitting import (
        HeadFitSettings,
        fit_bundle_head,
        step_options,
    )
    from hyplex.models.openset.scores import detector_class

    try:  # unknown names and methods whose module is missing alike
        detector_class(method)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'--method'") from None
    check_target_frames(method, target_frames)
    loaded = _load_bundle(bundle)
    target = None
    if target_frames is not None:
        try:
            target = read_barcode_frames(target_frames, loaded, input_scale_dn=input_scale_dn)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="'--target-frames'") from None
    options = step_options(method, steps or (40 if quick else None))
    train = 8 if quick else scenes
    counts = {
        "train": train,
        "auxiliary": max(train // 2, 2),
        "heldout": max(train // 4, 2),
        "test": max(train // 4, 2),
    }
    settings = HeadFitSettings(method, options, counts, (24, 24) if quick else (32, 32), seed)
    if output is not None and output.exists():
        raise typer.BadParameter(f"{output} exists; choose a new folder", param_hint="'--output'")
    try:  # nothing is written until the head is fitted: Ctrl-C leaves no half bundle
        detector, metrics = fit_bundle_head(
            loaded, settings, target=target, progress=True, write=False
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    from hyplex.models.bundle_records import add_to_bundle
    from hyplex.models.openset.head_files import save_openset_head

    where = add_to_bundle(  # in place, or a copy that appears with its head
        loaded.path,
        output,
        lambda folder: save_openset_head(folder, detector, loaded.class_names, metrics),
    )
    typer.echo(json.dumps({"bundle": str(where), "method": method, **metrics}))


def coverage_command(
    inputs: Annotated[list[Path], typer.Argument(help="Captured barcodes (.npy) or raw frames.")],
    bundle: BundleOption,
    out: Annotated[Path, typer.Option("--out", help="Folder for the coverage maps.")] = Path(
        "out/coverage"
    ),
    scenes: Annotated[int, typer.Option(min=1, help="Twin scenes of the training mixture.")] = 8,
    training_points: Annotated[
        int, typer.Option(min=10, help="Training barcodes kept (random).")
    ] = 2000,
    stride: Annotated[int, typer.Option(min=1, help="Test every n-th metapixel per axis.")] = 1,
    seed: Annotated[int, typer.Option(help="Scenes and sampling.")] = 0,
    input_scale_dn: ScaleOption = 1.0,
) -> None:
    """Share of captured pixels outside the convex hull of the bundle's training mixture."""
    from hyplex.models.openset.auxiliary import OpenSetSplit, make_openset_scenes
    from hyplex.models.openset.coverage import coverage_map
    from hyplex.optics.atomic_io import atomic_write

    loaded = _load_bundle(bundle)
    split = OpenSetSplit.for_class_names(loaded.class_names)
    training = make_openset_scenes(split, loaded.wavelengths_nm, scenes, "id", (32, 32), seed=seed)
    codes = training.barcodes(loaded.encoder(), seed=seed).barcodes  # (S, F, H, W)
    points = codes.permute(0, 2, 3, 1).reshape(-1, codes.shape[1]).numpy().astype(np.float64)
    rng = np.random.default_rng(seed)
    points = points[rng.choice(len(points), min(training_points, len(points)), replace=False)]
    out.mkdir(parents=True, exist_ok=True)
    report = {}
    for path in inputs:
        try:
            frames = read_barcode_frames(path, loaded, input_scale_dn=input_scale_dn)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="INPUTS") from None
        maps = np.stack(
            [coverage_map(frame.transpose(1, 2, 0), points, stride) for frame in frames]
        )
        target = out / f"{path.stem}.coverage.npz"
        atomic_write(target, lambda handle, maps=maps: np.savez(handle, outside=maps))
        report[str(path)] = {"outside_share": float(maps.mean()), "map": str(target)}
        typer.echo(f"{path}: {maps.mean():.1%} of pixels outside the training hull -> {target}")
    typer.echo(json.dumps(report))
