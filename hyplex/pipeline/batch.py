"""Offline decoding of files: one :class:`SegmentJob` per input, run here or on Dask workers.

``hyplex segment`` builds one job per input (a recording, a video, an image folder) and runs
them one after the other, or on a Dask ``LocalCluster`` of single-threaded worker processes
(``workers`` > 1, as ``optics.library_build``), or on an existing Dask cluster
(``scheduler="tcp://host:port"``: ``hyplex segment --scheduler``; the workers must see the
inputs, models and ``out_dir`` at the same paths, a shared file system). Each job writes into
``out_dir``::

    <stem>.labels.h5    label maps, confidences and (optionally) cubes (``DecodedWriter``)
    <stem>.overlay.mp4  the segmentation overlay (``OverlayVideoWriter``)
    <stem>.stats.csv    per-frame latency and drops; <stem>.stats.json the run's summary

Each file is written as ``<stem>.<kind>.partial.<ext>`` and renamed when its job completes
(``hyplex.pipeline.outputs``). A job that fails (a bad or truncated header, a model that does
not fit, no usable frame) is reported with its reason and leaves no output; the other jobs
still run. Ctrl-C keeps the interrupted job's outputs under their ``.partial`` names (valid
files holding every frame processed so far) and runs no further job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hyplex.optics.extras import require


@dataclass
class SegmentJob:
    """One input to decode (all fields picklable, for Dask workers).

    Attributes
    ----------
    input : str
        Recording (.h5), video file, image folder or glob.
    out_dir : str
    reconstructor, segmenter, bundle : str or None
        Decoder files (``NAME.safetensors`` + ``NAME.json``, :mod:`hyplex.pipeline.model_files`)
        or a design bundle directory.
    calibration : str or None
        Calibration file: layout (registration), dark, flat, defects.
    pitch_px : float
        Sub-filter pitch for ``MosaicLayout.fit`` when neither calibration nor bundle gives a
        layout, sensor pixels.
    temporal : str or bool
        Temporal module over the labels (:func:`hyplex.models.temporal.build_temporal`):
        ``"none"``, ``"gated"`` (:class:`~hyplex.models.temporal.GatedLogitSmoother`) or
        ``"tcl"`` (:class:`~hyplex.models.temporal.TemporalEventModule`); True means
        ``"gated"``, False ``"none"`` (older jobs). The bundle's fitted module of that kind
        (``temporal-<kind>.json``, ``hyplex temporal fit``) runs when it has one, else an
        untrained one; the result's ``temporal`` note says which.
    cube : bool
        Store the reconstructed cubes.
    video : bool
        Write the overlay MP4.
    inference, pipeline : dict
        Fields of InferenceConfig and PipelineConfig.
    progress : bool
    profile : str or None
        ``"full"`` or ``"realtime"``: the decoder profile the bundle must have
        (:mod:`hyplex.models.realtime`); None takes either.
    verbose : bool
        Add ``roofline`` to the result: each stage's time as a share of the 30 fps frame
        budget and its bytes against the copy bandwidth (:mod:`hyplex.pipeline.roofline`).
    unknown : bool or None
        Write the ``unknown`` map of the bundle's open-set head (:mod:`hyplex.models.openset`)
        and mark unknown pixels in the overlay: True demands a head (an error without one),
        None uses one when the bundle has it, False never.
    beliefs : bool
        Keep per-object material hypotheses with Noisy-OR probabilities over the frames
        (:mod:`hyplex.pipeline.material_beliefs`): ``<stem>.beliefs.json`` and the result's
        ``material_beliefs``.
    beliefs_from : str or None
        A ``.beliefs.json`` of an earlier session to continue (implies ``beliefs``).
    uncertainty : int
        Posterior samples per frame for a ``cube_std`` map (0: none; >= 2 needs a
        reconstructor with ``posterior``, the conditional flow, and ``cube``).
    fake : bool or None
        Write the ``fake`` map of the bundle's real/fake (metamer) head
        (:mod:`hyplex.models.pretraining.realfake_files`): True demands a head (an error
        without one), None uses one when the bundle has it, False never.
    """

    input: str
    out_dir: str
    reconstructor: str | None = None
    segmenter: str | None = None
    bundle: str | None = None
    calibration: str | None = None
    pitch_px: float = 7.287
    temporal: str | bool = "none"
    cube: bool = True
    video: bool = True
    inference: dict = field(default_factory=dict)
    pipeline: dict = field(default_factory=dict)
    progress: bool = False
    profile: str | None = None
    verbose: bool = False
    unknown: bool | None = None
    beliefs: bool = False
    beliefs_from: str | None = None
    uncertainty: int = 0
    fake: bool | None = None


def job_models(job: SegmentJob) -> dict:
    """The models a job runs: ``reconstructor``, ``segmenter`` (torch modules or None),
    ``wavelengths_nm``, ``class_names`` and ``layout`` from its bundle and/or weight files.
    Raises ValueError when the job names no model."""
    from hyplex.pipeline.models import load_bundle_models, load_module

    models = {
        "reconstructor": None,
        "segmenter": None,
        "wavelengths_nm": None,
        "class_names": None,
        "layout": None,
    }
    if job.bundle:
        models.update(load_bundle_models(job.bundle, profile=job.profile))
    if job.reconstructor:
        models["reconstructor"] = load_module(job.reconstructor, "reconstructor")
    if job.segmenter:
        models["segmenter"] = load_module(job.segmenter, "segmenter")
    if models["reconstructor"] is None and models["segmenter"] is None:
        raise ValueError("no model: give --bundle, --reconstructor and/or --segmenter")
    models["openset"] = _openset_head(job, models)
    if models["openset"] is not None:  # a head that fine-tuned the segmenter brings its own
        models["segmenter"] = models["openset"].model
    models["fake_head"] = _realfake_head(job, models)
    return models


def _bundle_part_wanted(flag, bundle, has_part, need: str, how: str) -> bool:
    """Whether a job loads an optional part of its bundle (an open-set or real/fake head):
    ``flag`` False never, None when the bundle has it, True demands it (a ValueError saying
    ``need``, that the bundle has none, and the command ``how`` that adds one)."""
    if flag is False:
        return False
    if bundle and has_part(bundle):
        return True
    if flag:
        where = f"bundle {bundle}" if bundle else "no --bundle"
        raise ValueError(f"{need}; {where} has none (add one with '{how}')")
    return False


def _realfake_head(job: SegmentJob, models: dict):
    """The bundle's real/fake head when ``job.fake`` asks for it (``SegmentJob.fake``)."""
    from hyplex.models.pretraining.realfake_files import has_realfake_head, load_realfake_head

    wanted = _bundle_part_wanted(
        job.fake, job.bundle, has_realfake_head, "fake maps need a bundle with a real/fake head",
        "hyplex realfake fit --bundle B",
    )  # fmt: skip
    if not wanted:
        return None
    layout = models.get("layout")
    return load_realfake_head(job.bundle, None if layout is None else layout.n_filters)


def _openset_head(job: SegmentJob, models: dict):
    """The bundle's open-set detector when ``job.unknown`` asks for it (module doc)."""
    from hyplex.models.openset.head_files import has_openset_head, load_openset_head

    wanted = _bundle_part_wanted(
        job.unknown, job.bundle, has_openset_head,
        "unknown maps need a bundle with an open-set head",
        "hyplex openset fit --bundle B --method OE",
    )  # fmt: skip
    if not wanted:
        return None
    if job.segmenter or models["segmenter"] is None:
        raise ValueError("the open-set head scores the bundle's own segmenter; drop --segmenter")
    import copy

    return load_openset_head(job.bundle, copy.deepcopy(models["segmenter"]), models["class_names"])


def output_channels(module, in_channels: int, n_filters: int, shape=(8, 8)) -> int:
    """Output channels of ``module`` on a zero input (B=1, C, 8, 8)."""
    import torch

    with torch.no_grad():
        return int(module(torch.zeros(1, in_channels or n_filters, *shape)).shape[1])


def segment_file(job: SegmentJob) -> dict:
    """Run one job (see the module doc); returns the run summary as a dict plus ``outputs``."""
    from hyplex.calibration.store import load_calibration
    from hyplex.models.temporal.module_files import temporal_for_run
    from hyplex.pipeline.engine import Pipeline
    from hyplex.pipeline.inference import InferenceConfig, InferenceEngine
    from hyplex.pipeline.outputs import (
        DecodedWriter,
        OverlayVideoWriter,
        StatsWriter,
        partial_path,
    )
    from hyplex.pipeline.sources import open_source
    from hyplex.pipeline.stages import DarkFlat, Preprocessor
    from hyplex.pipeline.types import PipelineConfig, PipelineSummary
    from hyplex.simulation.layout import MosaicLayout

    source = open_source(job.input)
    sinks = []
    try:
        shape = getattr(source, "sensor_shape", None)
        if shape is None:
            raise ValueError(f"{job.input}: cannot tell the frame shape before reading")
        models = job_models(job)
        darkflat, layout, scale = None, models.get("layout"), None
        if job.calibration:
            calibration = load_calibration(job.calibration, sensor_shape=shape)
            layout = calibration.layout or layout
            darkflat = DarkFlat.from_calibration(calibration)
            flat = calibration.sections.get("flat", {})
            if "channel_level_dn" in flat and layout is not None:
                # white-reference level per filter: the barcode normalisation of the decoders
                scale = np.asarray(flat["channel_level_dn"][: layout.n_filters], np.float32)
        if layout is None:
            layout = MosaicLayout.fit(shape, pitch_px=job.pitch_px)
        preprocessor = Preprocessor(layout, shape, darkflat)
        fake_head = models.get("fake_head")
        if fake_head is not None and fake_head.in_channels != layout.n_filters:
            raise ValueError(
                f"the real/fake head reads {fake_head.in_channels} filters, the input's layout "
                f"has {layout.n_filters}: mismatched channel counts"
            )
        inference = dict(job.inference)
        if job.uncertainty:
            if not hasattr(models["reconstructor"], "posterior"):
                raise ValueError(
                    "uncertainty maps need a reconstructor with a posterior (a 'flow' "
                    "decoder); this job's has none"
                )
            if not job.cube:
                raise ValueError("uncertainty maps are stored beside the cube; drop --no-cube")
            inference["uncertainty_samples"] = int(job.uncertainty)
        if scale is not None and "input_scale_dn" not in inference:
            inference["input_scale_dn"] = scale
        config = InferenceConfig(**inference)
        segmenter, n_classes = models["segmenter"], 0
        if segmenter is not None:
            in_channels = None
            if config.segment_from == "cube":
                in_channels = output_channels(models["reconstructor"], None, layout.n_filters)
            n_classes = output_channels(segmenter, in_channels, layout.n_filters)
        name = {True: "gated", False: "none"}.get(job.temporal, job.temporal)
        # the bundle's fitted module (temporal-<name>.json) when it has one, else untrained
        temporal, temporal_note = temporal_for_run(
            name,
            n_classes,
            layout.n_filters,
            job.bundle,
            models.get("class_names"),
            None if models.get("openset") is not None else segmenter,  # a head's fine-tuned copy
            "--segmenter replaces the bundle's segmenter" if job.segmenter and job.bundle else None,
        )
        openset = models.get("openset")
        engine = InferenceEngine(
            models["reconstructor"], segmenter, temporal, config, openset, fake_head
        )
        pipeline = Pipeline(preprocessor, engine, PipelineConfig(**job.pipeline))
        out_dir = Path(job.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = Path(job.input.rstrip("/*")).stem or "frames"
        n_bands = 0
        if job.cube and models["reconstructor"] is not None:
            n_bands = (
                len(config.bands)
                if config.bands
                else output_channels(models["reconstructor"], None, layout.n_filters)
            )
        wavelengths = models.get("wavelengths_nm")
        if wavelengths is not None and config.bands:
            wavelengths = np.asarray(wavelengths)[list(config.bands)]
        outputs = {"labels": out_dir / f"{stem}.labels.h5", "stats": out_dir / f"{stem}.stats.csv"}
        sinks.append(
            DecodedWriter(
                outputs["labels"],
                layout.metapixels,
                max(n_classes, 1),
                n_bands,
                wavelengths,
                models.get("class_names"),
                unknown_method=None if openset is None else openset.method,
                uncertainty=bool(job.uncertainty),
                fake_head=None if fake_head is None else _fake_attrs(fake_head),
            )
        )
        sinks.append(StatsWriter(outputs["stats"]))
        beliefs = None
        if (job.beliefs or job.beliefs_from) and segmenter is not None and n_classes >= 2:
            from hyplex.pipeline.material_beliefs import MaterialBeliefSink

            names = models.get("class_names") or [f"class {c}" for c in range(n_classes)]
            outputs["beliefs"] = out_dir / f"{stem}.beliefs.json"
            beliefs = MaterialBeliefSink(names, outputs["beliefs"], job.beliefs_from)
            sinks.append(beliefs)
        if job.video and segmenter is not None:
            outputs["video"] = out_dir / f"{stem}.overlay.mp4"
            sinks.append(OverlayVideoWriter(outputs["video"], n_classes))
        times = None
        if job.verbose:
            from hyplex.pipeline.roofline import StageTimes

            times = StageTimes()
            sinks.append(times)
        summary = pipeline.run(source, sinks, progress=job.progress)
    except BaseException as error:
        # sinks made before the run started (or a run that raised) leave no file behind;
        # closing is idempotent, so sinks the run already closed are left as it left them
        failed = PipelineSummary(failure=f"{type(error).__name__}: {error}")
        for sink in sinks:
            try:
                sink.close(failed)
            except Exception:
                pass
        raise
    finally:
        source.close()
    if summary.outcome == "partial":
        outputs = {key: partial_path(path) for key, path in outputs.items()}
    result = summary.to_dict()
    result["input"], result["outputs"] = job.input, {k: str(v) for k, v in outputs.items()}
    if temporal_note is not None:  # fitted or untrained, and from where (hyplex temporal fit)
        result["temporal"] = temporal_note
    if beliefs is not None:  # each object's candidate materials with probabilities
        result["material_beliefs"] = beliefs.top()
    if times is not None and times.stage_ms():
        result["roofline"] = _roofline_record(times, shape, layout, n_bands, n_classes)
    return result


def _fake_attrs(head) -> dict:
    """What the ``fake`` map's HDF5 attribute says about its head."""
    return {
        "method": "HierCon",
        "criterion": head.criterion,
        "threshold_logit": head.threshold_logit,
        "real_classes": list(head.real_classes),
        "fake_classes": list(head.fake_classes),
    }


def _roofline_record(times, sensor_shape, layout, n_bands: int, n_classes: int) -> dict:
    """The roofline table of a run (:mod:`hyplex.pipeline.roofline`) as a JSON-ready dict."""
    from hyplex.pipeline.roofline import (
        copy_bandwidth_bytes_per_s,
        format_roofline,
        roofline,
        stage_bytes,
    )

    copy_rate = copy_bandwidth_bytes_per_s()
    moved = stage_bytes(
        sensor_shape, 2, layout.metapixels, layout.n_filters, n_bands, n_classes
    )  # raw uint16 (8 and 12-bit sensors are stored in 16 bits)
    stage_ms = times.stage_ms()
    rows = roofline(stage_ms, moved, copy_rate)
    return {
        "stage_ms": {k: round(v, 2) for k, v in stage_ms.items()},
        "rows": [row.to_dict() for row in rows],
        "copy_bytes_per_s": copy_rate,
        "table": format_roofline(rows, copy_rate),
    }


def run_jobs(jobs, workers: int = 1, on_done=None, scheduler: str | None = None) -> list[dict]:
    """Run every job; each result is its summary, or ``{"input", "error"}`` if it failed.

    ``workers`` > 1 runs them on a Dask LocalCluster of single-threaded processes;
    ``scheduler`` (``"tcp://host:port"``) on the workers of an existing Dask cluster instead
    (``workers`` is then ignored; each result gains ``worker``, the address that ran it).
    ``on_done(result)`` is called as each job ends (progress). Ctrl-C (a job whose run was
    interrupted) raises KeyboardInterrupt after reporting it: no further job runs.
    """
    results = []
    if scheduler:
        return _run_on_cluster(jobs, scheduler, on_done)
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            try:
                result = segment_file(job)
            except KeyboardInterrupt:
                raise
            except Exception as error:  # reported; the other jobs still run
                result = {"input": job.input, "error": f"{type(error).__name__}: {error}"}
            results.append(result)
            if on_done is not None:
                on_done(result)
            if result.get("interrupted"):
                raise KeyboardInterrupt
        return results
    import logging

    distributed = require("distributed", feature="batch runs on several workers")
    Client, LocalCluster = distributed.Client, distributed.LocalCluster

    from hyplex.optics.library_build import WORKER_ENV, kept_environ

    with kept_environ():  # Dask's Nanny would leave OMP_NUM_THREADS=1 etc. in os.environ
        cluster = LocalCluster(
            n_workers=int(workers),
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
            env=WORKER_ENV,
        )
    with cluster, Client(cluster) as client:
        return _gather(client, distributed.as_completed, segment_file, jobs, on_done)


def _gather(client, as_completed, function, jobs, on_done) -> list[dict]:
    """Submit ``function(job)`` for every job to a Dask ``client``; the results in job order,
    a failed job as ``{"input", "error"}``. Ctrl-C cancels what is still queued."""
    results = []
    futures = {client.submit(function, job, pure=False): job for job in jobs}
    try:
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as error:
                result = {
                    "input": futures[future].input,
                    "error": f"{type(error).__name__}: {error}",
                }
            results.append(result)
            if on_done is not None:
                on_done(result)
    except BaseException:
        client.cancel(list(futures))
        raise
    order = {os.fspath(job.input): i for i, job in enumerate(jobs)}
    return sorted(results, key=lambda r: order.get(r["input"], 0))


def _segment_file_on_worker(job: SegmentJob) -> dict:
    """:func:`segment_file` on a Dask worker, with the worker's address in the result."""
    result = segment_file(job)
    try:
        from distributed import get_worker

        result["worker"] = get_worker().address
    except (ImportError, ValueError):
        pass
    return result


def _run_on_cluster(jobs, scheduler: str, on_done=None) -> list[dict]:
    """Run the jobs on the workers of the Dask scheduler at ``scheduler``."""
    distributed = require("distributed", feature="decoding on a Dask cluster (--scheduler)")
    if not isinstance(scheduler, str) or "://" not in scheduler:
        raise ValueError(f"scheduler must be an address like tcp://host:8786, got {scheduler!r}")
    try:
        client = distributed.Client(scheduler, timeout=10)  # s to connect
    except (OSError, TimeoutError) as error:
        raise ValueError(f"no Dask scheduler answers at {scheduler}: {error}") from None
    with client:
        return _gather(client, distributed.as_completed, _segment_file_on_worker, jobs, on_done)
