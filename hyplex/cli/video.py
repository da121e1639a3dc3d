"""``hyplex segment`` (decode recordings and videos to files) and ``hyplex view`` (live viewer).

Registered from ``hyplex.cli`` with ``register(app)``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

Inputs = Annotated[
    list[str], typer.Argument(help="Recordings (.h5), video files, image folders or globs.")
]
OutDir = Annotated[Path, typer.Option("--out", help="Folder for the outputs.")]
ModelFile = Annotated[
    Path | None,
    typer.Option(
        help="Decoder weights: NAME.safetensors with NAME.json beside it (either file names the "
        "pair; hyplex convert-weights makes them from your own .pt). Pickles, TorchScript and "
        ".pt2 are refused: loading them can run code.",
        exists=True,
    ),
]
Bundle = Annotated[Path | None, typer.Option(help="Design bundle directory (decoders, layout).")]
CalibrationFile = Annotated[
    Path | None, typer.Option(help="Calibration file: registration, dark, flat.", exists=True)
]
Bands = Annotated[
    str | None, typer.Option(help="Bands to keep: '0,5,9' or 'start:stop[:step]' (default all).")
]


def register(app: typer.Typer) -> None:
    """Add ``segment`` and ``view`` to ``app``."""
    app.command("segment")(segment_command)
    app.command("view")(view_command)


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """'0,5,9' or 'start:stop[:step]' -> band indices; None stays None."""
    if text is None or not text.strip():
        return None
    try:
        if ":" in text:
            parts = [int(p) if p else None for p in text.split(":")]
            if len(parts) not in (2, 3) or parts[1] is None:
                raise ValueError
            return tuple(range(parts[0] or 0, parts[1], parts[2] if len(parts) == 3 else 1))
        bands = tuple(int(p) for p in text.split(","))
    except (TypeError, ValueError):
        raise typer.BadParameter(
            f"bands must be like '0,5,9' or '0:34:2', got {text!r}", param_hint="--bands"
        ) from None
    if not bands or min(bands) < 0:
        raise typer.BadParameter(f"bands must be >= 0, got {text!r}", param_hint="--bands")
    return bands


def check_bands(bands, reconstructor, segmenter, bundle, text: str | None = None) -> None:
    """Refuse band indices the reconstructor does not output, before any input is decoded.
    Models that do not load are left to the jobs, which report them per input."""
    from hyplex.pipeline.batch import SegmentJob, job_models, output_channels

    job = SegmentJob(
        input="",
        out_dir="",
        reconstructor=reconstructor and str(reconstructor),
        segmenter=segmenter and str(segmenter),
        bundle=bundle and str(bundle),
        fake=False,  # no fake map here: a bundle's real/fake head is not loaded
    )
    try:
        models = job_models(job)
    except (ImportError, OSError, RuntimeError, ValueError):
        return
    if models["reconstructor"] is None:
        raise typer.BadParameter(
            f"{_bands_text(bands, text)}: no reconstructor to take bands from; expected "
            "--reconstructor or a --bundle with one",
            param_hint="'--bands'",
        )
    count = None if models.get("wavelengths_nm") is None else len(models["wavelengths_nm"])
    if count is None:
        layout = models.get("layout")
        try:
            count = output_channels(
                models["reconstructor"], None, layout.n_filters if layout else 9
            )
        except (RuntimeError, ValueError):
            return  # the input's own layout decides; the job reports a mismatch
    outside = [b for b in bands if b >= count]
    if outside:
        raise typer.BadParameter(
            f"{_bands_text(bands, text)} asks for band {outside[0]}; the reconstructor gives "
            f"{count} bands, so expected indices 0..{count - 1}",
            param_hint="'--bands'",
        )


def _bands_text(bands, text: str | None) -> str:
    if text is not None:
        return repr(text)
    return ",".join(str(b) for b in bands[:8]) + (",..." if len(bands) > 8 else "")


UNCERTAINTY_SAMPLES = 16  # posterior samples per frame for --uncertainty


def check_uncertainty(reconstructor, bundle, cube: bool) -> None:
    """``--uncertainty`` needs a stored cube and a reconstructor with a posterior (the
    conditional flow of :mod:`hyplex.models.restoration.conditional_flow`)."""
    if not cube:
        raise typer.BadParameter(
            "the std map is stored beside the cube; drop --no-cube", param_hint="'--uncertainty'"
        )
    if reconstructor is not None:
        from hyplex.pipeline.models import load_module

        module, where = (
            load_module(reconstructor, "reconstructor"),
            f"--reconstructor {reconstructor}",
        )
    elif bundle is not None:
        from hyplex.models.bundle import BundleError, load_bundle

        try:
            module, where = load_bundle(bundle).reconstructor, f"bundle {bundle}"
        except BundleError as error:
            raise typer.BadParameter(str(error), param_hint="'--bundle'") from None
    else:
        raise typer.BadParameter(
            "--uncertainty needs a reconstructor (--bundle or --reconstructor)",
            param_hint="'--uncertainty'",
        )
    if not hasattr(module, "posterior"):
        raise typer.BadParameter(
            f"{where} has a {type(module).__name__} reconstructor, which gives no posterior; "
            "--uncertainty needs a 'flow' decoder (train one with reconstructor = \"flow\" in "
            "the design config)",
            param_hint="'--uncertainty'",
        )


def check_fake_head(bundle) -> None:
    """``--fake`` needs a bundle whose real/fake head loads (hash, shapes) and reads as
    many filters as the bundle's encoder has; typer.BadParameter otherwise."""
    from hyplex.models.pretraining.realfake_files import has_realfake_head, load_realfake_head

    if bundle is None or not has_realfake_head(bundle):
        raise typer.BadParameter(
            f"--fake needs a bundle with a real/fake head; "
            f"{'bundle ' + str(bundle) if bundle else 'no --bundle'} has none (add one with "
            "'hyplex realfake fit --bundle B')",
            param_hint="'--fake'",
        )
    from hyplex.models.bundle import BundleError, load_bundle

    try:
        load_realfake_head(bundle, int(load_bundle(bundle).responses.shape[0]))
    except (BundleError, ValueError) as error:
        raise typer.BadParameter(str(error), param_hint="'--fake'") from None


def segment_command(
    inputs: Inputs,
    out: OutDir = Path("out/segment"),
    reconstructor: ModelFile = None,
    segmenter: ModelFile = None,
    bundle: Bundle = None,
    calibration: CalibrationFile = None,
    pitch_px: Annotated[
        float, typer.Option(min=0.5, help="Pitch when no layout is given, px.")
    ] = 7.287,
    bands: Bands = None,
    temporal: Annotated[
        str,
        typer.Option(
            help="Temporal module over the labels: none, gated (occlusion-aware logit "
            "smoothing) or tcl (temporal event learning: DPC-kNN event merging + contextual "
            "attention over the last frames). The bundle's fitted module runs when it has one "
            "('hyplex temporal fit'), else an untrained one, with a warning.",
        ),
    ] = "none",
    cube: Annotated[bool, typer.Option(help="Store reconstructed cubes.")] = True,
    video: Annotated[bool, typer.Option(help="Write the overlay MP4.")] = True,
    policy: Annotated[str, typer.Option(help="block | drop_oldest")] = "block",
    batch: Annotated[int, typer.Option(min=1, help="Frames per forward pass.")] = 1,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    precision: Annotated[str, typer.Option(help="auto | fp32 | bf16 | fp16")] = "auto",
    compile_models: Annotated[bool, typer.Option("--compile", help="torch.compile.")] = False,
    input_scale_dn: Annotated[
        float | None, typer.Option(help="Divide barcodes by this, DN (default: calibration/1).")
    ] = None,
    max_frames: Annotated[int | None, typer.Option(min=1, help="Frames per input.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Dask worker processes (files).")] = 1,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Existing Dask scheduler, e.g. tcp://host:8786: its workers decode the inputs "
            "(they must see the inputs, models and --out at the same paths).",
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(help="Require a bundle of this decoder profile: full | realtime."),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", help="Print each stage's share of the 30 fps budget and bandwidth."
        ),
    ] = False,
    unknown: Annotated[
        bool | None,
        typer.Option(
            "--unknown/--no-unknown",
            help="Write the unknown-material map of the bundle's open-set head and mark "
            "unknown pixels in the overlay (default: when the bundle has a head).",
        ),
    ] = None,
    beliefs: Annotated[
        bool,
        typer.Option(
            "--beliefs",
            help="Keep per-object material hypotheses with Noisy-OR probabilities over the "
            "frames (BeliefMem): <stem>.beliefs.json, printed per input.",
        ),
    ] = False,
    beliefs_from: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Continue the material beliefs of an earlier session (a .beliefs.json).",
        ),
    ] = None,
    uncertainty: Annotated[
        bool,
        typer.Option(
            "--uncertainty",
            help="Write the posterior standard deviation of every cube value (cube_std in "
            f"the HDF5, {UNCERTAINTY_SAMPLES} samples per frame); needs a 'flow' "
            "reconstructor.",
        ),
    ] = False,
    fake: Annotated[
        bool | None,
        typer.Option(
            "--fake/--no-fake",
            help="Write the fake (metamer) probability map of the bundle's real/fake head "
            "(/fake in the HDF5; 'hyplex realfake fit'; default: when the bundle has a head).",
        ),
    ] = None,
) -> None:
    """Decode INPUTS: barcodes, reconstruction and segmentation of every frame, to files.

    Writes <stem>.labels.h5, <stem>.overlay.mp4 (H.264) and <stem>.stats.csv/.json per input
    into --out, each renamed into place when its input completes. An input that fails (a
    truncated file, no usable frame) leaves no output and makes the exit code 1. Ctrl-C
    stops cleanly: the interrupted input's files stay as <stem>.*.partial.* and hold every
    frame processed so far (exit code 130).
    """
    from hyplex.pipeline.batch import SegmentJob, run_jobs

    if policy not in ("block", "drop_oldest"):
        raise typer.BadParameter(f"policy must be block or drop_oldest, got {policy!r}")
    if profile not in (None, "full", "realtime"):
        raise typer.BadParameter(
            f"profile must be full or realtime, got {profile!r}", param_hint="'--profile'"
        )
    if profile is not None and bundle is None:
        raise typer.BadParameter(
            "--profile checks a design bundle's decoders; expected --bundle with it",
            param_hint="'--profile'",
        )
    if scheduler is not None and "://" not in scheduler:
        raise typer.BadParameter(
            f"expected a scheduler address like tcp://host:8786, got {scheduler!r}",
            param_hint="'--scheduler'",
        )
    if bundle is not None and profile is not None:  # before any input is opened
        from hyplex.models.bundle import BundleError, load_bundle

        try:
            load_bundle(bundle, profile=profile)
        except BundleError as error:
            raise typer.BadParameter(str(error), param_hint="'--bundle'") from None
    if reconstructor is None and segmenter is None and bundle is None:
        raise typer.BadParameter("give --bundle, or --reconstructor and/or --segmenter")
    if unknown:  # before any input is opened
        from hyplex.models.openset.head_files import has_openset_head

        if bundle is None or not has_openset_head(bundle):
            raise typer.BadParameter(
                f"--unknown needs a bundle with an open-set head; "
                f"{'bundle ' + str(bundle) if bundle else 'no --bundle'} has none (add one with "
                "'hyplex openset fit --bundle B --method OE')",
                param_hint="'--unknown'",
            )
    from hyplex.pipeline.models import load_module

    for role, path in (("reconstructor", reconstructor), ("segmenter", segmenter)):
        if path is not None:  # a refused or broken file fails here, before any input is opened
            try:
                load_module(path, role)
            except ValueError as error:
                raise typer.BadParameter(str(error), param_hint=f"--{role}") from None
    if uncertainty:  # before any input is opened
        check_uncertainty(reconstructor, bundle, cube)
    if fake:  # before any input is opened
        check_fake_head(bundle)
    from hyplex.cli.checks import output_dir
    from hyplex.models.temporal import TEMPORAL_MODULES

    if temporal not in TEMPORAL_MODULES:
        raise typer.BadParameter(
            f"{temporal!r} is no temporal module; expected one of {', '.join(TEMPORAL_MODULES)}",
            param_hint="'--temporal'",
        )
    output_dir(out, "--out", "a folder for the outputs")
    kept = parse_bands(bands)
    if kept is not None:
        check_bands(kept, reconstructor, segmenter, bundle, text=bands)
    inference = {
        "batch_size": batch,
        "device": device,
        "precision": precision,
        "compile": compile_models,
        "bands": kept,
    }
    if input_scale_dn is not None:
        inference["input_scale_dn"] = input_scale_dn
    jobs = [
        SegmentJob(
            input=text,
            out_dir=str(out),
            reconstructor=str(reconstructor) if reconstructor else None,
            segmenter=str(segmenter) if segmenter else None,
            bundle=str(bundle) if bundle else None,
            calibration=str(calibration) if calibration else None,
            pitch_px=pitch_px,
            temporal=temporal,
            cube=cube,
            video=video,
            inference=inference,
            pipeline={"policy": policy, "max_frames": max_frames},
            progress=workers == 1 and scheduler is None and sys.stderr.isatty(),
            profile=profile,
            verbose=verbose,
            unknown=unknown,
            beliefs=beliefs,
            beliefs_from=str(beliefs_from) if beliefs_from else None,
            uncertainty=UNCERTAINTY_SAMPLES if uncertainty else 0,
            fake=fake,
        )
        for text in inputs
    ]

    def report(result: dict) -> None:
        if "error" in result:
            typer.echo(f"FAILED {result['input']}: {result['error']}", err=True)
        else:
            typer.echo(
                f"{result['input']}: {result['processed']} frames at {result['fps']:.1f} fps, "
                f"dropped {result['dropped']}, corrupt {result['corrupt']} -> "
                + ", ".join(result["outputs"].values())
            )
            for error in result["errors"][:5]:
                typer.echo(f"  frame {error['index']}: {error['error']}", err=True)
            if verbose and "roofline" in result:
                typer.echo(result["roofline"]["table"])
            note = result.get("temporal")  # a fitted temporal module, or a warning without one
            if note:
                typer.echo(f"  {note['message']}", err=not note["fitted"])
            for obj, candidates in list(result.get("material_beliefs", {}).items())[:10]:
                shown = ", ".join(f"{name} {p:.2f}" for name, p in candidates)
                typer.echo(f"  object {obj}: {shown}")

    try:
        results = run_jobs(jobs, workers=workers, on_done=report, scheduler=scheduler)
    except ValueError as error:  # no scheduler at that address
        raise typer.BadParameter(str(error), param_hint="'--scheduler'") from None
    except KeyboardInterrupt:
        typer.echo(
            "interrupted: the frames processed so far are in the *.partial.* outputs", err=True
        )
        raise typer.Exit(130) from None
    out.mkdir(parents=True, exist_ok=True)  # absent when every job failed before writing
    (out / "segment_summary.json").write_text(json.dumps(results, indent=2))
    if any("error" in r for r in results):
        raise typer.Exit(1)


def view_command(
    camera: Annotated[str, typer.Option(help="sim | opencv:<...> | genicam[:N]")] = "sim",
    host: Annotated[
        str, typer.Option(help="Address to serve on (local by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="HTTP port (0: any free).")] = 8000,
    sim_shape: Annotated[str, typer.Option(help="Simulated sensor ROWSxCOLS.")] = "240x320",
    reconstructor: ModelFile = None,
    segmenter: ModelFile = None,
    bundle: Bundle = None,
    calibration: CalibrationFile = None,
    pitch_px: Annotated[
        float | None,
        typer.Option(
            min=0.5, help="Pitch without a layout, px (default 7.287; sim: 3 below 1000 px)."
        ),
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(help="Serve this long (default: Ctrl-C).")
    ] = None,
) -> None:
    """Serve the live viewer: raw frame, reconstructed cube, segmentation, spectrum on click.

    With --camera sim, the twin looks at a synthetic video and the decoders are fitted on the
    twin in a few seconds (no weights to download); with --camera sim --bundle B the twin
    carries the bundle's filters and the bundle's decoders and open-set head (unknown view and
    share) decode it. Decoder files and calibrations are refused with --camera sim; other
    cameras need model files or a bundle.
    """
    if camera == "sim":  # before the (slow) imports of the viewer
        shape = check_sim_view(sim_shape, pitch_px, reconstructor, segmenter, bundle, calibration)
    from hyplex.viewer.server import LiveSession, ViewerServer, simulated_session

    if camera == "sim" and bundle is not None:
        typer.echo(f"building the camera twin with the filters of {bundle} ...", err=True)
        try:
            session = simulated_session(sensor_shape=shape, pitch_px=pitch_px, bundle=bundle)
        except ValueError as error:  # not a bundle, a mosaic that does not fit the sensor
            raise typer.BadParameter(str(error), param_hint="'--bundle'") from None
    elif camera == "sim":
        typer.echo("building the camera twin and fitting decoders on it ...", err=True)
        session = simulated_session(sensor_shape=shape, pitch_px=pitch_px)
    else:
        session = _camera_session(
            camera, reconstructor, segmenter, bundle, calibration, pitch_px or 7.287, LiveSession
        )
    session.start()
    server = ViewerServer(session, host=host, port=port).start()
    typer.echo(f"hyplex viewer on {server.url}  (Ctrl-C to stop)")
    start = time.monotonic()
    try:
        while seconds is None or time.monotonic() - start < seconds:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        session.stop()
    typer.echo(json.dumps({k: v for k, v in session.status().items() if k != "wavelengths_nm"}))


def check_sim_view(sim_shape, pitch_px, reconstructor, segmenter, bundle, calibration):
    """The simulated sensor's ``(rows, cols)``, after refusing what the simulated viewer
    cannot honour: decoder files (its decoders are fitted on the twin, or come with a
    ``--bundle`` whose filters the twin then carries), a calibration, a sensor that does not
    fit in memory, a pitch that does not fit the sensor."""
    from hyplex.cli.checks import check_sim_sensor
    from hyplex.cli.devices import parse_shape

    given = {
        "--reconstructor": reconstructor,
        "--segmenter": segmenter,
        "--calibration": calibration,
    }
    for option, value in given.items():
        if value is not None:
            raise typer.BadParameter(
                f"{value}: --camera sim fits its own decoders on the twin (or runs a --bundle's "
                f"on a twin with its filters) and has no calibration; expected no {option} "
                "with --camera sim (give a real --camera, or `hyplex segment` a recording, to "
                "use decoder files)",
                param_hint=f"'{option}'",
            )
    if bundle is not None and not Path(bundle).is_dir():
        raise typer.BadParameter(
            f"{bundle}: no such bundle folder; expected a design bundle folder (hyplex design)",
            param_hint="'--bundle'",
        )
    rows, cols = parse_shape(sim_shape)
    check_sim_sensor(sim_shape, rows, cols, frames=16)  # the looped frames, ring, previews
    if pitch_px is not None:
        from hyplex.simulation.layout import MosaicLayout

        try:
            MosaicLayout.fit((rows, cols), pitch_px=pitch_px)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="'--pitch-px'") from None
    return rows, cols


def _camera_session(camera, reconstructor, segmenter, bundle, calibration, pitch_px, session_cls):
    """A LiveSession on a real camera with models from files."""
    import numpy as np

    from hyplex.devices.discovery import open_camera
    from hyplex.pipeline.batch import SegmentJob, job_models
    from hyplex.pipeline.engine import Pipeline
    from hyplex.pipeline.inference import InferenceConfig, InferenceEngine
    from hyplex.pipeline.sources import CameraSource
    from hyplex.pipeline.stages import DarkFlat, Preprocessor
    from hyplex.pipeline.types import PipelineConfig
    from hyplex.simulation.layout import MosaicLayout

    job = SegmentJob(
        input=camera,
        out_dir=".",
        reconstructor=reconstructor and str(reconstructor),
        segmenter=segmenter and str(segmenter),
        bundle=bundle and str(bundle),
        fake=False,  # no fake map here: a bundle's real/fake head is not loaded
    )
    try:
        models = job_models(job)
    except ValueError as error:
        raise typer.BadParameter(f"{error} (a real camera needs decoders)") from None
    device = open_camera(camera)
    device.open()
    shape = device.roi.shape
    layout, darkflat = models.get("layout"), None
    if calibration is not None:
        from hyplex.calibration.store import load_calibration

        loaded = load_calibration(calibration, sensor_shape=shape)
        layout, darkflat = loaded.layout or layout, DarkFlat.from_calibration(loaded)
    layout = layout or MosaicLayout.fit(shape, pitch_px=pitch_px)
    engine = InferenceEngine(
        models["reconstructor"],
        models["segmenter"],
        config=InferenceConfig(),
        openset=models.get("openset"),  # a bundle's open-set head: unknown map and share
    )
    pipeline = Pipeline(
        Preprocessor(layout, shape, darkflat),
        engine,
        PipelineConfig(policy="drop_oldest", raw_preview_px=640),
    )
    wavelengths = models.get("wavelengths_nm")
    if wavelengths is None:
        wavelengths = np.arange(1, 1 + _count_bands(models["reconstructor"], layout.n_filters))
    classes = models.get("class_names") or []
    return session_cls(pipeline, CameraSource(device, policy="newest_only"), wavelengths, classes)


def _count_bands(module, n_filters: int) -> int:
    from hyplex.pipeline.batch import output_channels

    return 0 if module is None else output_channels(module, None, n_filters)
