"""``hyplex design``: co-design a realizable metasurface encoder with its decoders.

Registered in ``hyplex.cli`` by ``register(app)``. Trains
(:func:`hyplex.models.codesign.train_codesign`), then writes a design bundle
(:func:`hyplex.models.bundle.save_bundle`) to ``OUT/bundle``; the checkpoint is
``OUT/checkpoint.pt`` (``--resume`` continues it). Without a library (``--library`` or
``library_path`` in the config) the library encoders use the quick RCWA library of 384
c-Si rectangles solved at a converged order, copied from the file that ships with hyplex into
``OUT/quick_library.h5`` (:mod:`hyplex.models.codesign_library`; by rank 0 alone under
torchrun, :func:`shared_quick_library`), so even
``--quick`` trains a fabricable design. Data parallel:
``torchrun --nproc_per_node 2 $(which hyplex) design ...`` (gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["design", "register", "resolve_config", "shared_quick_library"]

ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="TOML file of CodesignConfig settings.")
]
Quick = Annotated[
    bool,
    typer.Option(
        "--quick", help="The demo's run: 1500 + 300 steps, about a minute on one CPU thread."
    ),
]
Library = Annotated[Path | None, typer.Option(help="Response library (HDF5) to choose from.")]
Out = Annotated[Path, typer.Option(help="Directory of the checkpoint and the bundle.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt.")]
Device = Annotated[str | None, typer.Option(help="cpu or cuda (default: CUDA when present).")]
Steps = Annotated[int | None, typer.Option(help="Override the number of training steps.")]
Profile = Annotated[
    str,
    typer.Option(
        "--profile",
        help="full (MST++ and U-Net decoders) or realtime (linear reconstruction and a "
        "depthwise-separable segmenter sized for 30 fps full frames on 2 CPU cores; "
        "hyplex.models.realtime). Recorded in the bundle.",
    ),
]


def resolve_config(config_file=None, quick=False, library=None, device=None, steps=None):
    """The :class:`~hyplex.models.codesign_config.CodesignConfig` of the command line: the
    quick or default settings, overridden by the TOML file, then by the options."""
    from hyplex.models.codesign_config import CodesignConfig, quick_config, tomllib

    base = quick_config() if quick else CodesignConfig()
    values = base.to_dict()
    if config_file is not None:
        loaded = CodesignConfig.from_toml(config_file)  # validates the file on its own
        text = tomllib.loads(Path(config_file).read_text())
        values.update(
            {k: v for k, v in loaded.to_dict().items() if k in text.get("codesign", text)}
        )
    if library is not None:
        if not Path(library).is_file():
            raise ValueError(f"library file {library} does not exist")
        values["library_path"] = str(library)
    if device is not None:
        values["device"] = device
    if steps is not None:
        values["steps"] = int(steps)
    return CodesignConfig.from_dict(values)


def shared_quick_library(path: Path, context):
    """The quick RCWA library at ``path``, solved once per run: rank 0 builds (or reuses) the
    HDF5 file, every rank waits at a barrier, then the other ranks read the finished file.
    (Every rank building it would mean concurrent HDF5 writes of one file.)

    Parameters
    ----------
    path : the library file (``OUT/quick_library.h5``).
    context : this process's :class:`~hyplex.models.distributed.DistributedContext`.

    Returns
    -------
    hyplex.optics.library.ResponseLibrary
    """
    from hyplex.models import codesign_library, distributed
    from hyplex.optics import library as library_io

    if context.is_main:
        library = codesign_library.quick_library(path)
        distributed.barrier(context)  # the file is complete: the other ranks may read it
        return library
    distributed.barrier(context)
    return library_io.read_library(path)


def design(
    config: ConfigFile = None,
    quick: Quick = False,
    library: Library = None,
    out: Out = Path("out/design"),
    resume: Resume = False,
    device: Device = None,
    steps: Steps = None,
    profile: Profile = "full",
    openset: Annotated[
        str | None,
        typer.Option(
            "--openset",
            help="Also fit an open-set head into the bundle (unknown materials): OE, DOE, "
            "DAL, ATOL, Watermarking, MSP, energy, ... (as 'hyplex openset fit').",
        ),
    ] = None,
    init_encoder: Annotated[
        Path | None,
        typer.Option(
            "--init-encoder",
            help="Start the U-Net segmenter's encoder from a 'hyplex pretrain' file "
            "(.safetensors).",
        ),
    ] = None,
) -> None:
    """Co-design a metasurface encoder with reconstruction and segmentation decoders."""
    from hyplex.cli.checks import output_dir
    from hyplex.models import distributed
    from hyplex.models.bundle import save_bundle
    from hyplex.models.codesign import train_codesign

    output_dir(out, "--out", "a folder for the checkpoint and the bundle")
    if openset is not None:  # before training: a typo must not cost a co-design run
        from hyplex.models.openset.scores import METHODS

        if openset not in METHODS:
            raise typer.BadParameter(
                f"unknown open-set method {openset!r}; choose from {sorted(METHODS)}",
                param_hint="'--openset'",
            )
        from hyplex.cli.openset import NEEDS_TARGET_FRAMES

        if openset in NEEDS_TARGET_FRAMES:  # design has no captured frames to adapt to
            raise typer.BadParameter(
                f"{openset} needs captured frames: use `hyplex openset fit --bundle "
                f"{out / 'bundle'} --method {openset} --target-frames DIR` after the design",
                param_hint="'--openset'",
            )
    began = time.perf_counter()
    try:
        settings = resolve_config(config, quick, library, device, steps)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    if init_encoder is not None:  # before training: a wrong file must not cost a run
        from hyplex.models.pretraining import load_encoder
        from hyplex.models.segmentation import build_segmenter

        if settings.segmenter != "unet":
            raise typer.BadParameter(
                f"the pretrained encoder is a U-Net's; the segmenter is {settings.segmenter!r}",
                param_hint="'--init-encoder'",
            )
        channels = {"rgb": 3, "identity": settings.bands}.get(settings.encoder, settings.n_filters)
        try:  # the file must fit the segmenter the run will build (channels, width, depth)
            probe = {**settings.segmenter_config, "in_channels": channels}
            load_encoder(build_segmenter("unet", **probe, n_classes=2), init_encoder)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="'--init-encoder'") from None
        settings = settings.replace(init_encoder=str(init_encoder))
    if profile not in ("full", "realtime"):
        raise typer.BadParameter(
            f"--profile must be full or realtime, got {profile!r}", param_hint="'--profile'"
        )
    if profile == "realtime":  # same scenes, encoder and steps; the real-time decoders
        from hyplex.models.realtime import realtime_codesign_settings

        settings = realtime_codesign_settings(settings)
    out.mkdir(parents=True, exist_ok=True)
    try:  # first: under torchrun the ranks must agree on who writes what
        context = distributed.init_distributed(settings.device)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    library_data = None
    if settings.encoder in ("library", "pca") and not settings.library_path:
        if context.is_main:
            typer.echo(
                f"no library given: the quick RCWA library (M = 8, shipped) into {out}", err=True
            )
        library_data = shared_quick_library(out / "quick_library.h5", context)
    typer.echo(
        f"co-design: encoder {settings.encoder}, {settings.bands} bands "
        f"{settings.wavelength_range_nm[0]:g}-{settings.wavelength_range_nm[1]:g} nm, "
        f"{settings.steps} steps, reconstructor {settings.reconstructor}, "
        f"segmenter {settings.segmenter}",
        err=True,
    )
    try:
        result = train_codesign(settings, out, resume=resume, library=library_data)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: the last checkpoint in {out} is intact; rerun with --resume")
        raise typer.Exit(130) from None
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    if context.is_main:
        bundle = save_bundle(out / "bundle", result, overwrite=True)
        for phase, values in result.metrics.items():
            shown = ", ".join(f"{name} {value:.3g}" for name, value in values.items())
            typer.echo(f"{phase:>9}: {shown}")
        if "library_indices" in result.design:
            typer.echo(f"chosen library designs: {result.design['library_indices'].tolist()}")
        typer.echo(f"wrote {bundle} in {time.perf_counter() - began:.0f} s")
        if openset is not None:
            from hyplex.models.bundle import load_bundle
            from hyplex.models.openset.bundle_fitting import (
                HeadFitSettings,
                fit_bundle_head,
                step_options,
            )

            options = step_options(openset, 40 if quick else None)
            try:
                _, metrics = fit_bundle_head(
                    load_bundle(bundle), HeadFitSettings(openset, options), progress=True
                )
            except ValueError as error:  # the bundle stands; only its head failed
                distributed.shutdown(context)
                raise typer.BadParameter(
                    f"{error} ({bundle} was written without an open-set head; add one with "
                    f"`hyplex openset fit --bundle {bundle} --method {openset}`)",
                    param_hint="'--openset'",
                ) from None
            shown = ", ".join(f"{k} {metrics[k]:.3g}" for k in ("auroc", "fpr95", "threshold"))
            typer.echo(f"open-set head {openset}: {shown} (twin test unknowns)")
    distributed.shutdown(context)


def register(app: typer.Typer) -> None:
    """Add ``design`` as a command of ``app``."""
    app.command("design")(design)
