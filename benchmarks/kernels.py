"""Benchmark: the numba kernels of the camera twin against their plain numpy formulations.

Kernels, on the same inputs for both sides (``hyplex.simulation.kernels`` vs
``hyplex.simulation.kernels_numpy``):

- projection: a (S, S, 204) float32 radiance cube onto the 3 x 3 mosaic (S = 256 by default);
  peers: gather + einsum (``project_mosaic_numpy``) and BLAS matmul + gather
  (``project_mosaic_matmul``); the speedup is against the faster of the two.
- barcodes: a 4000 x 3000 uint16 raw frame to (h, w, 9) barcodes (slot map precomputed, as a
  calibrated registration is); peer: ``np.bincount``. ``binning_only_upper_bound_rate`` is the
  equivalent hyperspectral data rate (4000 x 3000 x 204 bands x 16 bit) if binning were the
  whole pipeline: an upper bound, since capture, projection and decoding are not counted.
- sensor: EMVA 1288 noise on a 4000 x 3000 frame of expected electrons (100-8000 e-); peer:
  numpy Generator ``poisson`` + ``standard_normal`` (``sensor_frame_numpy``, exact Poisson).
  The headline ``sensor_noise`` is like for like: exact Poisson draws on both sides.
  ``sensor_noise_normal_approx`` runs numba with its default normal approximation of shot
  noise above 1000 e- against the same exact numpy peer: not like for like, so it is reported
  apart (``speedup_not_like_for_like``) and kept out of ``speedup_vs_numpy``.

The machine's copy bandwidth is ``2 x bytes / time`` of ``np.copyto`` on a 256 MiB array (read +
write). Each kernel's bandwidth is the bytes it must move (inputs read once + outputs written) /
its time; ``fraction_of_copy_bandwidth`` divides the two. Times are the best of ``--repeats``
after a warm-up (compilation excluded), with numba's default thread count.

Reproduce (one JSON line on stdout)::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/kernels.py
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/kernels.py --size 512 --repeats 7
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


def bench_barcodes(repeats: int, copy_bps: float) -> dict:
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 4096, FULL_FRAME, dtype=np.uint16)
    layout = MosaicLayout.fit(FULL_FRAME, pitch_px=7.287, rotation_deg=1.0)
    slots = layout.slot_map(FULL_FRAME, margin=0.15)
    n_slots = layout.metapixels[0] * layout.metapixels[1] * layout.n_filters
    threads = numba.get_num_threads()

    def ours():
        return kernels.bin_by_slot(raw, slots, n_slots, threads)

    def peer():
        return bin_by_slot_numpy(raw, slots, n_slots)

    error = np.nanmax(np.abs(ours()[0] - peer()[0]))
    nbytes = raw.nbytes + slots.nbytes + n_slots * 8
    seconds = best_time(ours, repeats)
    result = entry(seconds, {"numpy_bincount": best_time(peer, repeats)}, nbytes, copy_bps, error)
    rate = equivalent_data_rate_bps(FULL_FRAME[1], FULL_FRAME[0], 204, 16, 1.0 / seconds)
    return {
        "input": f"{FULL_FRAME[1]}x{FULL_FRAME[0]} uint16 -> {layout.metapixels} x 9 barcodes",
        **result,
        "frames_per_s": round(1.0 / seconds, 1),
        "binning_only_upper_bound_rate": format_rate(rate),
        "binning_only_upper_bound_note": (
            "equivalent 204-band 16-bit rate if barcode binning were the whole pipeline; "
            "capture, projection and decoding are not counted"
        ),
    }


def bench_sensor(repeats: int, copy_bps: float, exact_below_e: float = float("inf")) -> dict:
    sensor = SensorModel(shape=FULL_FRAME, shot_noise_exact_below_e=exact_below_e)
    rng = np.random.default_rng(2)
    electrons = rng.uniform(100, 8000, FULL_FRAME).astype(np.float32)
    prnu, dsnu = sensor.fixed_pattern()
    settings = sensor.settings(10_000.0)
    key = np.uint64(kernels.frame_key(np.uint64(0), np.uint64(0)))

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
        "exact Poisson on both sides (like for like)"
        if exact
        else f"numba: exact below {exact_below_e:g} e-, normal approximation above; numpy: "
        "exact Poisson everywhere (not like for like)"
    )
    return {
        "input": f"{FULL_FRAME[1]}x{FULL_FRAME[0]} electrons (100-8000 e-) -> uint16 raw",
        "shot_noise": label,
        "like_for_like": exact,
        **result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256, help="Cube side for the projection.")
    parser.add_argument("--bands", type=int, default=204)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    copy_bps = copy_bandwidth(args.repeats)
    report = {
        "benchmark": "hyplex.simulation.kernels vs numpy",
        "numba_threads": numba.get_num_threads(),
        "copy_bandwidth_GBps": round(copy_bps / 1e9, 2),
        "projection": bench_projection(args.size, args.bands, args.repeats, copy_bps),
        "barcodes": bench_barcodes(args.repeats, copy_bps),
        "sensor_noise": bench_sensor(args.repeats, copy_bps, float("inf")),
        "sensor_noise_normal_approx": bench_sensor(args.repeats, copy_bps, 1000.0),
    }
    report["speedup_vs_numpy"] = {name: report[name]["speedup_vs_numpy"] for name in KERNELS}
    report["speedup_not_like_for_like"] = {
        "sensor_noise_normal_approx": report["sensor_noise_normal_approx"]["speedup_vs_numpy"]
    }
    report["fraction_of_copy_bandwidth"] = {
        name: report[name]["fraction_of_copy_bandwidth"] for name in KERNELS
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
