"""Benchmark: the numba kernels of the camera twin against their plain numpy formulations.

Kernels, on the same inputs for both sides (``hyplex.simulation.kernels`` vs
``hyplex.simulation.kernels_numpy``):

- projection: a (S, S, 204) float32 radiance cube onto the 3 x 3 mosaic (S = 256 by default);
  peers: gather + einsum (``project_mosaic_numpy``) and BLAS matmul + gather
  (``project_mosaic_matmul``); the speedup is against the faster of the two.
- barcodes: a 4000 x 3000 uint16 raw frame to (h, w, 9) barcodes through the run-length slot
  map (``kernels.slot_runs``, built once per registration as the slot map is, then
  ``kernels.bin_runs``: what ``BarcodeExtractor`` runs); peer: ``np.bincount`` on the per-pixel
  map. Bytes moved: the whole frame + the run table + the means and counts written.
  ``barcodes_per_pixel_map`` reports the per-pixel-map kernel (``kernels.bin_by_slot``) too.
  ``binning_only_upper_bound_rate`` is the equivalent hyperspectral data rate (4000 x 3000 x
  204 bands x 16 bit) if binning were the whole pipeline: an upper bound, since capture,
  projection and decoding are not counted.
- sensor: EMVA 1288 noise on a 4000 x 3000 frame of expected electrons (100-8000 e-); peer:
  numpy Generator ``poisson`` + ``standard_normal`` (``sensor_frame_numpy``, exact Poisson).
  The headline ``sensor_noise`` is like for like: exact Poisson draws on both sides (numba:
  algorithm PD on Philox-4x32-10, ``shot_noise_exact_below_e = inf``).
  ``sensor_noise_normal_approx`` runs numba with the sensor's default normal approximation of
  shot noise above 1000 e- against the same exact numpy peer: not like for like, so it is
  reported apart (``speedup_not_like_for_like``) and kept out of ``speedup_vs_numpy``.
- RNG limit: numpy's fastest normal generator, stand-alone, on the frame's pixel count: the
  best of ``Generator(PCG64 | SFC64).standard_normal(out=..., dtype=float64 | float32)``.
  ``noise_vs_rng_limit`` is the exact sensor kernel's pixels per second over that generator's
  normals per second (one normal per pixel; the kernel draws a shot-noise Poisson and a
  read-noise normal per pixel, on all of numba's threads, the generator on one).

The machine's copy bandwidth is ``2 x bytes / time`` of ``np.copyto`` on a 256 MiB array (read +
write), the best of samples taken before each kernel and at the end. Each kernel's bandwidth is
the bytes it must move (inputs read once + outputs written) / its time;
``fraction_of_copy_bandwidth`` divides the two. Times are the best of ``--repeats``
after a warm-up (compilation excluded), with numba's default thread count. ``machine`` gives the
cores and the 1-minute load average before and after: on a shared machine take the best of
several runs, and rerun on a quiet one for the figures that matter.

Reproduce (one JSON line on stdout)::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/kernels.py
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/kernels.py --size 512 --repeats 7
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/kernels.py --only barcodes,sensor_noise
"""
# ruff: noqa: E402  (BLAS thread settings must precede the numpy import)

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import time

import numba
import numpy as np

from hyplex.simulation import kernels
from hyplex.simulation.camera import scene_index
from hyplex.simulation.datarate import equivalent_data_rate_bps, format_rate
from hyplex.simulation.kernels_numpy import (
    bin_by_slot_numpy,
    project_mosaic_matmul,
    project_mosaic_numpy,
    sensor_frame_numpy,
)
from hyplex.simulation.layout import MosaicLayout
from hyplex.simulation.sensor import SensorModel

FULL_FRAME = (3000, 4000)
KERNELS = ("projection", "barcodes", "sensor_noise")  # like-for-like comparisons


def best_time(function, repeats: int) -> float:
    function()  # warm-up (and JIT compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def best_cpu_time(function, repeats: int) -> float:
    """Best CPU time (all of the process's threads) of ``function``: unlike the wall time it
    barely moves when other jobs share the cores, so CPU-time ratios survive a loaded
    machine (they give per-core efficiency, not the speedup of several threads)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        function()
        times.append(time.process_time() - start)
    return min(times)


def copy_bandwidth(repeats: int, mebibytes: int = 256) -> float:
    source = np.ones(mebibytes * 2**20 // 4, np.float32)
    target = np.empty_like(source)
    seconds = best_time(lambda: np.copyto(target, source), repeats)
    return 2 * source.nbytes / seconds


def entry(ours_s, peers_s: dict, nbytes: int, copy_bps: float, error: float) -> dict:
    best_peer = min(peers_s, key=peers_s.get)
    return {
        "numba_ms": round(1e3 * ours_s, 3),
        **{f"{name}_ms": round(1e3 * s, 3) for name, s in peers_s.items()},
        "peer": best_peer,
        "speedup_vs_numpy": round(peers_s[best_peer] / ours_s, 2),
        "bytes_moved": nbytes,
        "bandwidth_GBps": round(nbytes / ours_s / 1e9, 2),
        "fraction_of_copy_bandwidth": round(nbytes / ours_s / copy_bps, 3),
        "max_abs_diff_vs_numpy": float(error),
    }


def bench_projection(size: int, bands: int, repeats: int, copy_bps: float) -> dict:
    rng = np.random.default_rng(0)
    cube = rng.random((size, size, bands), dtype=np.float32)
    layout = MosaicLayout.fit((size, size), pitch_px=7.287)
    codes, neighbours, mix = layout.filter_maps((size, size))
    weights = rng.random((layout.n_filters + 1, bands), dtype=np.float32)
    rows = cols = scene_index(size, size)

    def ours():
        return kernels.project_mosaic(cube, weights, codes, neighbours, mix, rows, cols)

    peers = {
        "numpy_einsum": lambda: project_mosaic_numpy(
            cube, weights, codes, neighbours, mix, rows, cols
        ),
        "numpy_matmul": lambda: project_mosaic_matmul(cube, weights, codes, rows, cols),
    }
    error = np.abs(ours().astype(np.float64) - peers["numpy_einsum"]()).max()
    nbytes = cube.nbytes + codes.nbytes + weights.nbytes + size * size * 4
    result = entry(
        best_time(ours, repeats),
        {name: best_time(peer, repeats) for name, peer in peers.items()},
        nbytes,
        copy_bps,
        error,
    )
    return {"input": f"{size}x{size}x{bands} float32 -> {size}x{size} mosaic", **result}


def barcode_inputs():
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 4096, FULL_FRAME, dtype=np.uint16)
    layout = MosaicLayout.fit(FULL_FRAME, pitch_px=7.287, rotation_deg=1.0)
    slots = layout.slot_map(FULL_FRAME, margin=0.15)
    n_slots = layout.metapixels[0] * layout.metapixels[1] * layout.n_filters
    return raw, layout, slots, n_slots


def bench_barcodes(repeats: int, copy_bps: float, peer_s: float | None = None) -> dict:
    raw, layout, slots, n_slots = barcode_inputs()
    start = time.perf_counter()
    runs = kernels.slot_runs(slots, n_slots)
    build_s = time.perf_counter() - start  # includes the first call's compilation

    def ours():
        return kernels.bin_runs(raw, runs)

    def peer():
        return bin_by_slot_numpy(raw, slots, n_slots)

    reference = peer()
    error = np.nanmax(np.abs(ours()[0] - reference[0]))
    assert np.array_equal(ours()[1], reference[1]), "pixel counts differ from np.bincount"
    nbytes = raw.nbytes + runs.nbytes + n_slots * 8  # frame + run table; means + counts out
    seconds = best_time(ours, repeats)
    cpu_s = best_cpu_time(ours, repeats)
    peer_s = best_time(peer, repeats) if peer_s is None else peer_s
    result = entry(seconds, {"numpy_bincount": peer_s}, nbytes, copy_bps, error)
    rate = equivalent_data_rate_bps(FULL_FRAME[1], FULL_FRAME[0], 204, 16, 1.0 / seconds)
    return {
        "input": f"{FULL_FRAME[1]}x{FULL_FRAME[0]} uint16 -> {layout.metapixels} x 9 barcodes",
        "map": "run-length, grouped by slot (kernels.slot_runs, built once per registration)",
        "runs": int(runs.offsets[-1]),
        "pixels_read_fraction": round(float(runs.counts.sum()) / raw.size, 3),
        # rows without any run (the margins between sub-filter rows) are never touched; the
        # frame's bytes in bytes_moved count them all, as a frame-sized copy would
        "frame_rows_read_fraction": round(
            np.unique(runs.starts // FULL_FRAME[1]).size / FULL_FRAME[0], 3
        ),
        "map_build_s_first_call": round(build_s, 3),
        **result,
        "numba_cpu_ms_all_threads": round(1e3 * cpu_s, 3),
        "frames_per_s": round(1.0 / seconds, 1),
        "binning_only_upper_bound_rate": format_rate(rate),
        "binning_only_upper_bound_note": (
            "equivalent 204-band 16-bit rate if barcode binning were the whole pipeline; "
            "capture, projection and decoding are not counted"
        ),
    }


def bench_barcodes_per_pixel_map(repeats: int, copy_bps: float) -> tuple[dict, float]:
    """The per-pixel-map kernel (``kernels.bin_by_slot``); also returns the peer's time."""
    raw, _, slots, n_slots = barcode_inputs()

    def ours():
        return kernels.bin_by_slot(raw, slots, n_slots, numba.get_num_threads())

    def peer():
        return bin_by_slot_numpy(raw, slots, n_slots)

    error = np.nanmax(np.abs(ours()[0] - peer()[0]))
    nbytes = raw.nbytes + slots.nbytes + n_slots * 8
    peer_s = best_time(peer, repeats)
    result = entry(best_time(ours, repeats), {"numpy_bincount": peer_s}, nbytes, copy_bps, error)
    return {"map": "per-pixel int32 slot map (kernels.bin_by_slot)", **result}, peer_s


def bench_rng_limit(repeats: int, count: int) -> dict:
    """numpy's fastest stand-alone normal generator on ``count`` draws (one thread)."""
    times = {}
    for bit_generator in (np.random.PCG64, np.random.SFC64):
        generator = np.random.Generator(bit_generator(0))
        for dtype in (np.float64, np.float32):
            out = np.empty(count, dtype)
            seconds = best_time(
                lambda g=generator, o=out, d=dtype: g.standard_normal(out=o, dtype=d), repeats
            )
            times[f"{bit_generator.__name__}_{np.dtype(dtype).name}"] = seconds
    fastest = min(times, key=times.get)
    name, dtype_name = fastest.rsplit("_", 1)
    generator = np.random.Generator(getattr(np.random, name)(0))
    out = np.empty(count, np.dtype(dtype_name))

    def fastest_call():
        return generator.standard_normal(out=out, dtype=out.dtype)

    return {
        "count": count,
        **{f"{name}_ms": round(1e3 * s, 3) for name, s in times.items()},
        "fastest": fastest,
        "fastest_normals_per_s": round(count / times[fastest]),
        "fastest_cpu_ms": round(1e3 * best_cpu_time(fastest_call, repeats), 3),
    }


def bench_sensor(repeats: int, copy_bps: float, exact_below_e: float = float("inf")) -> dict:
    sensor = SensorModel(shape=FULL_FRAME, shot_noise_exact_below_e=exact_below_e)
    rng = np.random.default_rng(2)
    electrons = rng.uniform(100, 8000, FULL_FRAME).astype(np.float32)
    prnu, dsnu = sensor.fixed_pattern()
    settings = sensor.settings(10_000.0)
    key = kernels.frame_key(0, 0)

    def ours():
        return kernels.sensor_frame(electrons, prnu, dsnu, settings, key, True, kernels.ZIGGURAT)

    def peer():
        return sensor_frame_numpy(electrons, prnu, dsnu, settings, np.random.default_rng(3))

    mean_difference = abs(float(ours().mean()) - float(peer().mean()))
    nbytes = electrons.nbytes + prnu.nbytes + dsnu.nbytes + electrons.size * 2
    result = entry(
        best_time(ours, repeats),
        {"numpy_generator": best_time(peer, repeats)},
        nbytes,
        copy_bps,
        mean_difference,
    )
    result["max_abs_diff_vs_numpy"] = "n/a (independent random streams)"
    result["frame_mean_diff_dn"] = round(mean_difference, 3)
    exact = exact_below_e == float("inf")
    label = (
        "exact Poisson on both sides (like for like); numba: algorithm PD (Ahrens & Dieter "
        "1982) on Philox-4x32-10"
        if exact
        else f"numba: exact below {exact_below_e:g} e-, normal approximation above; numpy: "
        "exact Poisson everywhere (not like for like)"
    )
    return {
        "input": f"{FULL_FRAME[1]}x{FULL_FRAME[0]} electrons (100-8000 e-) -> uint16 raw",
        "shot_noise": label,
        "like_for_like": exact,
        "pixels_per_s": round(electrons.size / (result["numba_ms"] / 1e3)),
        "numba_cpu_ms_all_threads": round(1e3 * (ours_cpu := best_cpu_time(ours, repeats)), 3),
        "numpy_cpu_ms": round(1e3 * (peer_cpu := best_cpu_time(peer, max(1, repeats // 3))), 3),
        # CPU-time ratio: per core, robust to other jobs (the speedup of n threads is about
        # n x efficiency times this)
        "speedup_vs_numpy_per_core": round(peer_cpu / ours_cpu, 2),
        **result,
    }


def machine() -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "load_average_1min_before": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256, help="Cube side for the projection.")
    parser.add_argument("--bands", type=int, default=204)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--only",
        default="projection,barcodes,sensor_noise",
        help="Comma-separated kernels to run (projection, barcodes, sensor_noise).",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    unknown = only - set(KERNELS)
    if unknown:
        parser.error(f"--only takes {', '.join(KERNELS)}; got {', '.join(sorted(unknown))}")
    report = {"benchmark": "hyplex.simulation.kernels vs numpy", "machine": machine()}
    # the copy bandwidth is measured before each kernel and at the end, and every fraction
    # divides by the best of these: on a shared machine a single early sample could be taken
    # under another load than the kernel's (the best is the conservative choice)
    copies = [copy_bandwidth(args.repeats)]
    copy_bps = copies[0]
    report["numba_threads"] = numba.get_num_threads()
    if "projection" in only:
        report["projection"] = bench_projection(args.size, args.bands, args.repeats, copy_bps)
        copies.append(copy_bandwidth(args.repeats))
    if "barcodes" in only:
        per_pixel, peer_s = bench_barcodes_per_pixel_map(args.repeats, copy_bps)
        copies.append(copy_bandwidth(args.repeats))
        report["barcodes"] = bench_barcodes(args.repeats, copy_bps, peer_s)
        report["barcodes_per_pixel_map"] = per_pixel
        copies.append(copy_bandwidth(args.repeats))
    if "sensor_noise" in only:
        report["sensor_noise"] = bench_sensor(args.repeats, copy_bps, float("inf"))
        report["sensor_noise_normal_approx"] = bench_sensor(args.repeats, copy_bps, 1000.0)
        report["rng_limit"] = bench_rng_limit(args.repeats, FULL_FRAME[0] * FULL_FRAME[1])
        limit = report["rng_limit"]["fastest_normals_per_s"]
        report["noise_vs_rng_limit"] = round(report["sensor_noise"]["pixels_per_s"] / limit, 3)
        report["noise_vs_rng_limit_regime"] = (
            "exact Poisson shot noise everywhere (algorithm PD) + Gaussian read noise, "
            f"{report['numba_threads']} numba threads, against one stand-alone "
            f"{report['rng_limit']['fastest']} standard_normal per pixel"
        )
        # per core, from CPU times (robust to other jobs on the machine): the wall-clock
        # figure above is this times the threads' parallel efficiency
        report["noise_vs_rng_limit_per_core"] = round(
            report["rng_limit"]["fastest_cpu_ms"]
            / report["sensor_noise"]["numba_cpu_ms_all_threads"],
            3,
        )
        report["noise_vs_rng_limit_normal_approx"] = round(
            report["sensor_noise_normal_approx"]["pixels_per_s"] / limit, 3
        )
        report["speedup_not_like_for_like"] = {
            "sensor_noise_normal_approx": report["sensor_noise_normal_approx"]["speedup_vs_numpy"]
        }
    best_copy = max(copies)
    report["copy_bandwidth_GBps"] = round(best_copy / 1e9, 2)
    report["copy_bandwidth_GBps_samples"] = [round(c / 1e9, 2) for c in copies]
    for value in report.values():
        if isinstance(value, dict) and "bytes_moved" in value:
            seconds = value["numba_ms"] / 1e3
            value["fraction_of_copy_bandwidth"] = round(
                value["bytes_moved"] / seconds / best_copy, 3
            )
    ran = [name for name in KERNELS if name in report]
    report["speedup_vs_numpy"] = {name: report[name]["speedup_vs_numpy"] for name in ran}
    report["fraction_of_copy_bandwidth"] = {
        name: report[name]["fraction_of_copy_bandwidth"] for name in ran
    }
    report["machine"]["load_average_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
