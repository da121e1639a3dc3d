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

Reproduce (one JSON line on stdout)::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/video.py --quick   # < 60 s, 1500 x 2000
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/video.py           # 4000 x 3000
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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1500 x 2000 frames, few of them")
    parser.add_argument("--frames", type=int, default=None, help="frames per side")
    parser.add_argument("--rendered", type=int, default=None, help="distinct noisy frames")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--batch", type=int, default=None, help="engine batch (default 1 CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile in the engine")
    parser.add_argument("--workers", type=int, default=None, help="engine inference workers")
    parser.add_argument(
        "--nchw", action="store_true", help="engine without channels_last (for comparison)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating naive/engine chunks")
    parser.add_argument("--no-temporal", action="store_true", help="skip the temporal part")
    args = parser.parse_args(argv)

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
    batch = args.batch or (8 if cuda else 1)
    started = time.perf_counter()
    frames, layout, n_classes = _twin_frames(shape, n_rendered)
    stream = [frames[i % n_rendered] for i in range(n_frames)]
    preprocessor = Preprocessor(layout, shape)
    barcode_shape = preprocessor.barcode_shape
    scale = float(np.nanmedian(preprocessor(frames[0])))
    torch.manual_seed(0)
    reconstructor = SpectralTransformer(9, 34).eval().to(device)
    segmenter = UNet(9, n_classes).eval().to(device)
    setup_s = time.perf_counter() - started

    _naive(
        stream[:2], preprocessor.extractor, barcode_shape, reconstructor, segmenter, scale, device
    )  # warm-up (allocator, kernels)
    config = InferenceConfig(
        device=str(device),
        batch_size=batch,
        input_scale_dn=scale,
        compile=args.compile,
        torch_threads=max(1, cores - 1),
        workers=args.workers,
        channels_last=not args.nchw,
    )
    engine = InferenceEngine(reconstructor, segmenter, config=config)
    pipeline = Pipeline(preprocessor, engine, PipelineConfig(policy="block", queue_frames=4))
    pipeline.run(stream[: max(2, batch)])  # warm-up
    # Alternate naive and engine chunks so that a change in the machine's load (shared cores)
    # falls on both sides alike.
    engine_threads = torch.get_num_threads()
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
    report = {
        "benchmark": "video",
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
            "reconstructor SpectralTransformer(9, 34)": counts["reconstructor"],
            f"segmenter UNet(9, {n_classes})": counts["segmenter"],
        },
        "setup_s": round(setup_s, 1),
    }
    if not args.no_temporal:
        report["temporal"] = _temporal_consistency()
    report["wall_s"] = round(time.perf_counter() - started, 1)
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
