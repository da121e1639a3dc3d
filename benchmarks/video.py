"""Benchmark: end-to-end decoding of raw 4000 x 3000 frames (barcodes, 34-band reconstruction,
segmentation) by the streaming engine, against a naive implementation of the same models in
the same run; plus temporal consistency of the segmentation on a synthetic video.

Frames: the camera twin (``default_camera``, the prototype's 7.287 px pitch) looking at a
synthetic video (``simulation.video.make_video``, 34 bands 400-730 nm); ``--rendered`` noisy
frames are rendered once and looped (rendering is not what is measured).

Models (same instances on both sides, random weights: this measures speed, not accuracy):
``hyplex.models.reconstruction.SpectralTransformer(9, 34)`` and
``hyplex.models.segmentation.UNet(9, n_classes)``.

- engine: :class:`hyplex.pipeline.Pipeline`: acquisition, numba preprocessing, torch inference
  (``inference_mode``, channels_last (NHWC, also on the CPU: oneDNN), batched on GPU, bf16
  autocast on GPU; on the CPU fp32 and one inference worker per core, frames in order) and
  output in concurrent threads with bounded queues (BLOCK: nothing dropped);
Naive and engine run in alternating chunks (``--rounds``) so that load from other processes on
shared cores falls on both alike.

- naive (the peer): per frame, one after the other: numpy float64 barcodes (``bincount`` over
  the same slot map, the vectorised form of the Hyplex reference code), then eager fp32 torch
  (``no_grad``, NCHW) reconstruction and segmentation, on the same device; run with 1 torch
  thread and with all cores (``--quick``: 1 thread only), and the faster is the peer.

Both outputs are compared (max |cube difference|, label agreement) so the speed is for the
same result. ``cpu_s_per_frame`` (process CPU time, all threads) is the work each side does per
frame; on cores shared with other jobs it varies less than the wall-clock fps.
``equivalent_tbps`` is ``simulation.datarate.equivalent_data_rate_bps`` at the engine's fps for
the frame size used and the 34 reconstructed bands, 16 bit.

Temporal consistency: a per-metapixel classifier fitted on two frames of a small noisy clip of
the twin, then :class:`hyplex.models.temporal.GatedLogitSmoother` (untrained, and trained on
the first half); label flip rate (pixels whose label changes where the truth does not) and
mIoU on the second half, against per-frame labels.

Profiles (``--profile``, :mod:`hyplex.models.realtime`): ``full`` runs the models above;
``realtime`` runs the real-time decoders (``SeparableReconstructor(9, 34)`` and
``SeparableSegNet(9, n_classes)``, BatchNorm and whitening folded by the engine). With
``realtime`` the accuracy cost is measured too: both profiles are co-designed with the quick
settings (``quick_config``, the shipped quick library, ``--accuracy-steps``) on the same
scenes and scored on the same held-out scenes; ``miou_drop_vs_full_points`` and
``psnr_drop_vs_full_db`` are full minus realtime (positive: the real-time profile is worse).

Threads: before the timed run the engine is run under every split of the compute threads
between torch intra-op threads, inference workers and numba preprocessing
(:mod:`hyplex.pipeline.thread_split`; ``threads`` in the JSON) and the fastest split is used
(``--no-tune``: the engine's default split).

Roofline: ``stage_ms`` (preprocess, inference: per frame on their threads; frame: wall time
per frame), ``stage_budget_fraction`` (of the 33.3 ms of 30 fps) and
``stage_bandwidth_fraction`` (compulsory bytes per second over the copy bandwidth,
:mod:`hyplex.pipeline.roofline`); the table goes to stderr.

Batch (``--batch``): files per second of ``hyplex segment``'s batch decoding
(:func:`hyplex.pipeline.batch.run_jobs` on a Dask scheduler) with 1 and then 2
single-threaded worker processes, on the same folder of twin recordings;
``scaling_1_to_2_workers`` is their ratio (ideal 2). The folder holds 16 recordings of 30
frames (about 0.1 s of decoding each): with 6-frame files (30 ms each) Dask's per-task cost
(scheduling, result transfer, the client's bookkeeping, on the same 2 cores) held the ratio
at 1.47-1.55. Each worker count decodes the folder 5 times and the median pass counts: single
passes of 1-3 s gave ratios from 1.09 to 1.92 on the quiet machine.

Reproduce (one JSON line on stdout)::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/video.py --quick   # < 60 s, 1500 x 2000
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/video.py           # 4000 x 3000
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/video.py --profile realtime --full-frame
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/video.py --batch
"""
# ruff: noqa: E402  (BLAS thread settings must precede the numpy import)

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import time

import numpy as np
import torch


def _twin_frames(shape, n_rendered, seed=0):
    from hyplex.devices.sim_camera import SimulatedCamera
    from hyplex.simulation.camera import default_camera
    from hyplex.simulation.grids import prototype_grid
    from hyplex.simulation.video import make_video

    grid = prototype_grid()
    video = make_video(max(n_rendered, 2), (shape[0] // 20, shape[1] // 20), grid, seed=seed)
    twin = default_camera(grid, shape)
    camera = SimulatedCamera(video, twin=twin, seed=seed)
    frames = [camera.render_raw(t) for t in range(n_rendered)]
    return frames, twin.encoder.layout, len(video.class_names)


def _naive(frames, extractor, shape, reconstructor, segmenter, scale, device):
    from hyplex.pipeline.stages import naive_barcodes

    cubes, labels, preprocess_s = [], [], 0.0
    start, cpu_start = time.perf_counter(), time.process_time()
    for raw in frames:
        tick = time.perf_counter()
        barcodes = naive_barcodes(raw, extractor.slots, extractor.n_slots, shape)
        preprocess_s += time.perf_counter() - tick
        x = torch.from_numpy(np.nan_to_num(barcodes / scale)).permute(2, 0, 1)[None]
        x = x.contiguous().to(device)
        with torch.no_grad():
            cube = reconstructor(x)
            logits = segmenter(x)
        cubes.append(cube[0].permute(1, 2, 0).cpu().numpy())
        labels.append(logits.argmax(1)[0].cpu().numpy())
    seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    return seconds, preprocess_s, cubes, labels, cpu_s


def _temporal_consistency(seed=3):
    from hyplex.devices.sim_camera import SimulatedCamera
    from hyplex.models.temporal import (
        GatedLogitSmoother,
        fit_temporal,
        label_flip_rate,
        mean_iou,
        smooth_sequence,
    )
    from hyplex.pipeline.models import fit_pixel_classifier
    from hyplex.pipeline.stages import Preprocessor, labels_at_metapixels
    from hyplex.simulation.camera import default_camera
    from hyplex.simulation.grids import prototype_grid
    from hyplex.simulation.video import make_video

    n_frames, sensor = 16, (192, 256)
    grid = prototype_grid()
    video = make_video(n_frames, (48, 64), grid, n_objects=4, speed_px=(0.3, 1.0), seed=seed)
    twin = default_camera(grid, sensor, pitch_px=3.0)
    camera = SimulatedCamera(video, twin=twin, exposure_us=300.0, seed=1)
    preprocessor = Preprocessor(twin.encoder.layout, sensor)
    barcodes = np.stack([preprocessor(camera.render_raw(t)) for t in range(n_frames)])
    truth = labels_at_metapixels(video.labels()["class_map"], preprocessor.extractor)
    scale, n_classes = float(np.nanmedian(barcodes)), len(video.class_names)
    classifier = fit_pixel_classifier(barcodes[[0, 4]], truth[[0, 4]], n_classes, scale, 200)
    x = torch.from_numpy(np.nan_to_num(barcodes / scale)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        logits = classifier(x)
    half = n_frames // 2
    per_frame = logits.argmax(1).numpy()[half:]
    out = {
        "clip": f"{n_frames} frames {sensor[1]}x{sensor[0]} px, {x.shape[2]}x{x.shape[3]} "
        "metapixels, exposure 300 us; metrics on the last half"
    }
    out["per_frame"] = {
        "flip_rate": label_flip_rate(per_frame, truth[half:]),
        "miou": mean_iou(per_frame, truth[half:], n_classes),
    }
    for name, steps in (("gated_untrained", 0), ("gated_trained", 60)):
        module = GatedLogitSmoother(n_classes)
        if steps:
            fit_temporal(module, logits[:half], x[:half], torch.from_numpy(truth[:half]), steps)
        with torch.no_grad():
            smoothed = smooth_sequence(module, logits, x)[0].argmax(1).numpy()[half:]
        out[name] = {
            "flip_rate": label_flip_rate(smoothed, truth[half:]),
            "miou": mean_iou(smoothed, truth[half:], n_classes),
        }
    for value in out.values():
        if isinstance(value, dict):
            value.update({k: round(v, 4) for k, v in value.items()})
    return out


def _roofline(stage_ms: dict, shape, barcode_shape, n_classes: int) -> dict:
    from hyplex.pipeline.roofline import (
        copy_bandwidth_bytes_per_s,
        format_roofline,
        roofline,
        stage_bytes,
    )

    copy_rate = copy_bandwidth_bytes_per_s()
    moved = stage_bytes(shape, 2, barcode_shape[:2], barcode_shape[2], 34, n_classes)
    rows = roofline(stage_ms, moved, copy_rate)
    return {"rows": rows, "copy_bytes_per_s": copy_rate, "table": format_roofline(rows, copy_rate)}


def _profile_accuracy(steps: int, seed: int = 0) -> dict:
    """Co-design the full and the real-time profile with the same quick settings, scenes and
    seed (``steps`` relaxed steps, ``steps // 5`` fine-tuning steps each; the shipped quick
    library), and score both on the same held-out scenes (the real-time reconstructor decodes
    with the running average of its weights, :mod:`hyplex.models.realtime`)."""
    import tempfile
    from pathlib import Path

    from hyplex.models.codesign import train_codesign
    from hyplex.models.codesign_config import quick_config
    from hyplex.models.codesign_library import quick_library
    from hyplex.models.realtime import realtime_codesign_settings

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the quick runs are sized for one thread
    with tempfile.TemporaryDirectory() as folder:
        library = quick_library(Path(folder) / "quick_library.h5")
        full = quick_config(
            seed=seed, device="cpu", evaluate_initial=False, steps=int(steps),
            finetune_steps=max(1, int(steps) // 5),
        )  # fmt: skip
        scores, train_s = {}, {}
        for name, config in (("full", full), ("realtime", realtime_codesign_settings(full))):
            tick = time.perf_counter()
            result = train_codesign(config, None, library=library, progress=False)
            train_s[name] = round(time.perf_counter() - tick, 1)
            scores[name] = {k: float(v) for k, v in result.metrics["final"].items()}
    torch.set_num_threads(threads)
    return {
        "miou_drop_vs_full_points": round(
            100 * (scores["full"]["miou"] - scores["realtime"]["miou"]), 2
        ),
        "psnr_drop_vs_full_db": round(scores["full"]["psnr"] - scores["realtime"]["psnr"], 2),
        "accuracy": {
            name: {k: round(v, 4) for k, v in values.items() if k in ("psnr", "miou", "sam")}
            for name, values in scores.items()
        },
        "accuracy_setup": f"quick_config seed {seed}, {steps} + {max(1, steps // 5)} steps per "
        "profile, shipped quick library, 8 held-out scenes of 48 x 48",
        "accuracy_train_s": train_s,
    }


def _batch_scaling(args) -> dict:
    """Files per second of batch decoding on 1 and 2 Dask worker processes (see the doc)."""
    import logging
    import tempfile
    from pathlib import Path

    from distributed import LocalCluster

    from hyplex.devices.frame import Frame, PixelFormat
    from hyplex.devices.recorder import Recorder, StreamSpec
    from hyplex.models.reconstruction import LinearDecoder
    from hyplex.optics.library_build import WORKER_ENV, kept_environ
    from hyplex.pipeline.batch import SegmentJob, run_jobs
    from hyplex.pipeline.model_files import save_decoder
    from hyplex.pipeline.models import PixelClassifier

    shape = (480, 640)
    n_files = args.frames or 16
    frames_per_file = 30  # ~0.1 s of work per file, so the per-task cost of Dask is small
    started = time.perf_counter()
    frames, layout, n_classes = _twin_frames(shape, 2)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        torch.manual_seed(0)
        save_decoder(LinearDecoder(9, 34), folder / "rec")
        save_decoder(PixelClassifier(9, n_classes, hidden=16), folder / "seg.json")
        inputs = []
        for k in range(n_files):
            path = folder / f"clip{k}.h5"
            with Recorder(path, StreamSpec(shape, PixelFormat.MONO12)) as recorder:
                for i in range(frames_per_file):
                    recorder.write(Frame(frames[i % 2], frame_id=i, seq=i, host_timestamp_ns=i))
            inputs.append(str(path))
        for workers in (1, 2):
            with kept_environ():
                cluster = LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True,
                    dashboard_address=":0", silence_logs=logging.ERROR,
                    env={**WORKER_ENV, "HYPLEX_THREADS": "1"},
                )  # fmt: skip
            with cluster:
                jobs = [
                    SegmentJob(
                        input=path,
                        out_dir=str(folder / f"out{workers}"),
                        reconstructor=str(folder / "rec.safetensors"),
                        segmenter=str(folder / "seg.json"),
                        pitch_px=7.287,
                        video=False,
                        inference={"input_scale_dn": 1000.0},
                    )  # fmt: skip
                    for path in inputs
                ]
                # warm-up: every worker imports and compiles (numba) on one file first
                run_jobs(jobs[:workers], scheduler=cluster.scheduler_address)
                runs = []  # a pass lasts 1-3 s: the median of 5 steadies the ratio
                for _ in range(5):
                    tick = time.perf_counter()
                    done = run_jobs(jobs, scheduler=cluster.scheduler_address)
                    runs.append(time.perf_counter() - tick)
                seconds = float(np.median(runs))
            failed = [r for r in done if "error" in r]
            if failed:
                raise RuntimeError(f"batch decoding failed: {failed[0]['error']}")
            results[workers] = {
                "files_per_s": n_files / seconds,
                "workers_used": len({r.get("worker") for r in done}),
                "files_per_worker": sorted(
                    sum(r.get("worker") == w for r in done) for w in {r.get("worker") for r in done}
                ),
            }
    return {
        "benchmark": "video_batch",
        "files": n_files,
        "frames_per_file": frames_per_file,
        "frame_shape": [shape[1], shape[0]],
        "files_per_s_by_workers": {k: round(v["files_per_s"], 3) for k, v in results.items()},
        "workers_used": {k: v["workers_used"] for k, v in results.items()},
        "files_per_worker": {k: v["files_per_worker"] for k, v in results.items()},
        "scaling_1_to_2_workers": round(results[2]["files_per_s"] / results[1]["files_per_s"], 3),
        "goal_scaling": 1.6,
        "peer": "the same jobs on one Dask worker process (run_jobs(scheduler=...))",
        "cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1500 x 2000 frames, few of them")
    parser.add_argument("--frames", type=int, default=None, help="frames per side")
    parser.add_argument("--rendered", type=int, default=None, help="distinct noisy frames")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="engine batch (default 1 CPU, 8 CUDA)"
    )
    parser.add_argument(
        "--batch", action="store_true", help="files/s of batch decoding on 1 and 2 Dask workers"
    )
    parser.add_argument("--profile", choices=("full", "realtime"), default="full")
    parser.add_argument("--full-frame", action="store_true", help="4000 x 3000 (the default)")
    parser.add_argument("--no-tune", action="store_true", help="the engine's default threads")
    parser.add_argument(
        "--accuracy-steps", type=int, default=1500, help="co-design steps per profile (realtime)"
    )
    parser.add_argument("--no-accuracy", action="store_true", help="skip the accuracy part")
    parser.add_argument("--accuracy-seed", type=int, default=0, help="scenes and training seed")
    parser.add_argument("--compile", action="store_true", help="torch.compile in the engine")
    parser.add_argument("--workers", type=int, default=None, help="engine inference workers")
    parser.add_argument(
        "--nchw", action="store_true", help="engine without channels_last (for comparison)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating naive/engine chunks")
    parser.add_argument("--no-temporal", action="store_true", help="skip the temporal part")
    args = parser.parse_args(argv)
    if args.batch:
        return _batch_scaling(args)
    if args.quick and args.full_frame:
        parser.error("--quick (1500 x 2000) and --full-frame (4000 x 3000) exclude each other")

    from hyplex.models.realtime import (
        REALTIME_RECONSTRUCTOR,
        REALTIME_SEGMENTER,
        SeparableReconstructor,
        SeparableSegNet,
    )
    from hyplex.models.reconstruction import SpectralTransformer
    from hyplex.models.segmentation import UNet
    from hyplex.pipeline import Pipeline, PipelineConfig
    from hyplex.pipeline.inference import InferenceConfig, InferenceEngine, resolve_device
    from hyplex.pipeline.stages import Preprocessor
    from hyplex.simulation.datarate import equivalent_data_rate_bps

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores - 1))
    shape = (1500, 2000) if args.quick else (3000, 4000)
    n_frames = args.frames or (6 if args.quick else (60 if cuda else 16))
    n_rendered = args.rendered or (2 if args.quick else 3)
    batch = args.batch_size or (8 if cuda else 1)
    started = time.perf_counter()
    frames, layout, n_classes = _twin_frames(shape, n_rendered)
    stream = [frames[i % n_rendered] for i in range(n_frames)]
    preprocessor = Preprocessor(layout, shape)
    barcode_shape = preprocessor.barcode_shape
    scale = float(np.nanmedian(preprocessor(frames[0])))
    torch.manual_seed(0)
    if args.profile == "realtime":
        reconstructor = SeparableReconstructor(9, 34, **REALTIME_RECONSTRUCTOR[1])
        reconstructor = reconstructor.eval().to(device)
        segmenter = SeparableSegNet(9, n_classes, **REALTIME_SEGMENTER[1]).eval().to(device)
        names = ("SeparableReconstructor(9, 34)", f"SeparableSegNet(9, {n_classes})")
    else:
        reconstructor = SpectralTransformer(9, 34).eval().to(device)
        segmenter = UNet(9, n_classes).eval().to(device)
        names = ("SpectralTransformer(9, 34)", f"UNet(9, {n_classes})")
    setup_s = time.perf_counter() - started
    threads_report, split = None, None
    if not args.no_tune and not cuda:
        from hyplex.pipeline.thread_split import measure_thread_splits

        measured = measure_thread_splits(
            preprocessor, reconstructor, segmenter, stream[: min(3, n_frames)],
            {"device": str(device), "batch_size": batch, "input_scale_dn": scale,
             "channels_last": not args.nchw},
        )  # fmt: skip
        threads_report, split = measured.to_dict(), measured.best

    _naive(
        stream[:2], preprocessor.extractor, barcode_shape, reconstructor, segmenter, scale, device
    )  # warm-up (allocator, kernels)
    config = InferenceConfig(
        device=str(device),
        batch_size=batch,
        input_scale_dn=scale,
        compile=args.compile,
        torch_threads=split.torch_threads if split else max(1, cores - 1),
        workers=args.workers or (split.inference_workers if split else None),
        channels_last=not args.nchw,
    )
    engine = InferenceEngine(reconstructor, segmenter, config=config)
    pipeline = Pipeline(
        preprocessor,
        engine,
        PipelineConfig(
            policy="block",
            queue_frames=4,
            preprocess_threads=split.preprocess_threads if split else None,
        ),
    )
    pipeline.run(stream[: max(2, batch)])  # warm-up
    # Alternate naive and engine chunks so that a change in the machine's load (shared cores)
    # falls on both sides alike.
    engine_threads = torch.get_num_threads()  # set by the engine (the split's torch threads)
    # naive at 1 and at all-core torch threads (quick: 1 only, to stay within a minute)
    peers = {1: [0.0, 0.0, 0.0]} if args.quick else {1: [0.0, 0.0, 0.0], cores: [0.0, 0.0, 0.0]}
    engine_s = engine_cpu_s = 0.0
    naive_cubes, naive_labels, results, latencies, dropped = [], [], [], [], 0
    for chunk in np.array_split(np.arange(n_frames), args.rounds):
        frames_chunk = [stream[i] for i in chunk]
        for threads, totals in peers.items():
            torch.set_num_threads(threads)
            seconds, pre_s, cubes, labels, cpu_s = _naive(
                frames_chunk, preprocessor.extractor, barcode_shape, reconstructor, segmenter,
                scale, device,
            )  # fmt: skip
            totals[0] += seconds
            totals[1] += pre_s
            totals[2] += cpu_s
        naive_cubes += cubes
        naive_labels += labels
        torch.set_num_threads(engine_threads)
        cpu_start = time.process_time()
        summary = pipeline.run(frames_chunk, on_result=results.append)
        engine_cpu_s += time.process_time() - cpu_start
        engine_s += summary.seconds
        latencies += summary.latencies_s
        dropped += summary.dropped
    best_threads = min(peers, key=lambda k: peers[k][0])
    naive_s, naive_pre_s, naive_cpu_s = peers[best_threads]
    fps = n_frames / engine_s
    naive_fps = n_frames / naive_s
    cube_error = max(
        float(np.abs(r.cube - c).max()) for r, c in zip(results, naive_cubes, strict=True)
    )
    agreement = float(
        np.mean([np.mean(r.labels == lab) for r, lab in zip(results, naive_labels, strict=True)])
    )
    counts = engine.parameter_counts()
    stage_ms = {
        "preprocess": float(np.mean([r.preprocess_s for r in results])) * 1e3,
        "inference": float(np.mean([r.inference_s for r in results])) * 1e3,
        "frame": 1e3 / fps,
    }
    roof = _roofline(stage_ms, shape, barcode_shape, n_classes)
    threads_report = threads_report or {"best": "engine default (--no-tune)"}
    threads_report["used"] = {
        "torch_threads": engine_threads,
        "inference_workers": engine.workers,
        "preprocess_threads": split.preprocess_threads if split else "cores - torch threads",
    }
    report = {
        "benchmark": "video",
        "profile": args.profile,
        "quick": bool(args.quick),
        "frame_shape": [shape[1], shape[0]],
        "note": "quick: 2000x1500 frames instead of 4000x3000" if args.quick else "full frames",
        "metapixels": list(barcode_shape[:2]),
        "frames": n_frames,
        "distinct_frames": n_rendered,
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({cores} cores)",
        "torch_threads": torch.get_num_threads(),
        "batch": batch,
        "engine_channels_last": not args.nchw,
        "fps": round(fps, 3),
        "naive_fps": round(naive_fps, 3),
        "naive_fps_by_torch_threads": {k: round(n_frames / v[0], 3) for k, v in peers.items()},
        "engine_inference_workers": engine.workers,
        "speedup_vs_naive": round(fps / naive_fps, 3),
        "peer": "naive: numpy float64 bincount barcodes + eager fp32 torch per frame, serial; "
        f"the faster of torch threads {sorted(peers)} ({best_threads})",
        "equivalent_tbps": round(
            equivalent_data_rate_bps(shape[1], shape[0], 34, 16, fps) / 1e12, 6
        ),
        "bands_reconstructed": 34,
        "latency_ms_p50": round(float(np.median(latencies)) * 1e3, 1),
        "rounds": args.rounds,
        "ms_per_frame": {
            "naive_preprocess": round(naive_pre_s / n_frames * 1e3, 1),
            "naive_models": round((naive_s - naive_pre_s) / n_frames * 1e3, 1),
            "engine_preprocess": round(np.mean([r.preprocess_s for r in results]) * 1e3, 1),
            "engine_models": round(np.mean([r.inference_s for r in results]) * 1e3, 1),
        },
        # CPU seconds (all threads of this process) per frame: the work done, which the load
        # of other processes on shared cores changes less than the wall time
        "cpu_s_per_frame": {
            "naive": round(naive_cpu_s / n_frames, 3),
            "engine": round(engine_cpu_s / n_frames, 3),
        },
        "load_average_1min": round(os.getloadavg()[0], 2),
        "dropped": dropped,
        "max_abs_cube_difference": cube_error,
        "label_agreement": round(agreement, 5),
        "parameters": {
            f"reconstructor {names[0]}": counts["reconstructor"],
            f"segmenter {names[1]}": counts["segmenter"],
        },
        "stage_ms": {k: round(v, 2) for k, v in stage_ms.items()},
        "stage_budget_fraction": {r.stage: round(r.budget_fraction, 3) for r in roof["rows"]},
        "stage_bandwidth_fraction": {r.stage: round(r.bandwidth_fraction, 4) for r in roof["rows"]},
        "copy_bandwidth_gb_s": round(roof["copy_bytes_per_s"] / 1e9, 2),
        "threads": threads_report,
        "setup_s": round(setup_s, 1),
    }
    print(roof["table"], file=sys.stderr)
    if args.profile == "realtime" and not args.no_accuracy:
        report.update(_profile_accuracy(args.accuracy_steps, args.accuracy_seed))
    if not args.no_temporal:
        report["temporal"] = _temporal_consistency()
    report["wall_s"] = round(time.perf_counter() - started, 1)
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
