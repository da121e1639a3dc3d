"""Benchmark: response-library generation rate (designs/s) on 1 and 2 Dask workers.

Builds the same small library twice, each time on a fresh ``LocalCluster`` of single-threaded
worker processes (``threads_per_worker=1``, one BLAS/torch thread each), through the code path
of ``hyplex library build``. The clusters are started and warmed up (imports, first solve)
before the clock starts, so the figure is the steady solving-and-committing rate; each setting
is built ``--repeats`` times and the best rate is kept (other jobs on a shared machine make
single runs noisy). The peer is
the same code on one worker; ideal scaling on two cores is 2.0. The 1-minute load average is
printed beside it because other jobs on a shared machine take cores away.

Reproduce (the last stdout line is one JSON object; about 1-2 min on an idle 2-core machine)::

    .venv/bin/python benchmarks/library_scaling.py
    .venv/bin/python benchmarks/library_scaling.py --designs 32 --wavelengths 5 --harmonics 1
"""
# ruff: noqa: E402  (BLAS thread settings must precede the imports that read them)

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hyplex.optics.extras import require
from hyplex.optics.library import SolverSettings
from hyplex.optics.library_build import WORKER_ENV, build_library
from hyplex.optics.library_spec import LibrarySpec, solve_designs


def _warm(spec: LibrarySpec) -> float:
    """Solve one design on a worker (imports, material tables, first eig), return seconds."""
    began = time.perf_counter()
    low, high = spec.parameter_bounds()
    solve_designs(spec, ((low + high) / 2)[None], np.array([spec.thickness_range_nm[0]]))
    return time.perf_counter() - began


def rate(spec: LibrarySpec, workers: int, chunk_size: int, folder: Path, repeats: int) -> float:
    """Best designs/s over ``repeats`` builds on one warm LocalCluster of ``workers`` processes."""
    distributed = require("distributed", feature="benchmarks/library_scaling.py")
    Client, LocalCluster = distributed.Client, distributed.LocalCluster  # noqa: N806

    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
        env=WORKER_ENV,
    )
    with cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        client.run(_warm, spec)
        rates = []
        for repeat in range(repeats):
            path = folder / f"scaling_{workers}_{repeat}.h5"
            report = build_library(path, spec, chunk_size=chunk_size, client=client, progress=False)
            rates.append(report.designs_per_second)
            print(
                f"{workers} worker(s): {report.computed} designs in {report.seconds:.1f} s",
                file=sys.stderr,
            )
    return max(rates)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--designs", type=int, default=64, help="designs per build")
    parser.add_argument("--wavelengths", type=int, default=11, help="400-1000 nm")
    parser.add_argument("--harmonics", type=int, default=2, help="orders -M..M")
    parser.add_argument("--chunk-size", type=int, default=8, help="designs per Dask task")
    parser.add_argument("--family", default="rectangle")
    parser.add_argument("--repeats", type=int, default=3, help="builds per setting; best kept")
    args = parser.parse_args(argv)

    spec = LibrarySpec(
        family=args.family,
        count=args.designs,
        wavelengths_nm=tuple(np.linspace(400.0, 1000.0, args.wavelengths).tolist()),
        solver=SolverSettings(harmonics=(args.harmonics, args.harmonics), grid=(64, 64)),
    )
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        one = rate(spec, 1, args.chunk_size, Path(folder), args.repeats)
        two = rate(spec, 2, args.chunk_size, Path(folder), args.repeats)
    result = {
        "benchmark": "library_scaling",
        "designs": args.designs,
        "wavelengths": args.wavelengths,
        "harmonics": args.harmonics,
        "family": args.family,
        "chunk_size": args.chunk_size,
        "repeats_best_of": args.repeats,
        "designs_per_s_1_worker": round(one, 3),
        "designs_per_s_2_workers": round(two, 3),
        "scaling_2_workers": round(two / one, 3),
        "ideal_scaling": 2.0,
        "peer": "the same build on 1 Dask worker (LocalCluster, threads_per_worker=1)",
        "cpu_count": os.cpu_count(),
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
