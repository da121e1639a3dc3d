"""Generate response libraries: draw designs from a seed, batch them through the RCWA, and commit
finished chunks to HDF5 (:mod:`hyplex.optics.library`), resuming where a run stopped.

Pipeline::

    LibrarySpec --sample_designs(seed)--> params (N, P), thickness (N,)   stored when created
        --chunks of chunk_size--> Dask workers: render_batch -> rcwa.solve  (one chunk a task)
        --as_completed--> the client alone writes: spectra, fsync, done flags, fsync

The design list is deterministic (:mod:`hyplex.optics.library_spec`) and stored when the file
is created; chunk boundaries are stored too, so a resumed run solves exactly the batches a
clean run would. Commits are crash-safe (:class:`LibraryWriter`).

Scale-out follows the Dask distributed model (Rocklin, Proc. SciPy 2015): tasks go to a
``LocalCluster`` of single-threaded worker processes by default, or to an existing scheduler.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .extras import require
from .library import (
    LibraryError,
    ResponseLibrary,
    check_same_grid,
    open_library,
    read_library,
    read_metadata,
    read_records,
    write_library,
)
from .library_spec import LibrarySpec, check_resources, sample_designs, solve_designs
from .parallel import single_torch_thread
from .threads import apply_thread_policy

__all__ = ["BuildReport", "LibraryWriter", "build_library", "kept_environ", "WORKER_ENV"]

#: Environment of LocalCluster workers: one thread each for BLAS, torch and hyplex's batch pool.
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "HYPLEX_WORKERS": "1",
}


@dataclass(frozen=True)
class BuildReport:
    """Outcome of :func:`build_library`: designs solved in this run and the solver rate."""

    path: Path
    count: int
    computed: int
    skipped: int
    seconds: float
    workers: int

    @property
    def designs_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else float("nan")


def _solve_chunk(spec: LibrarySpec, index: int, start: int, params, thickness):
    """One Dask task: solve a chunk and time it."""
    began = time.perf_counter()
    T, t = solve_designs(spec, params, thickness)  # noqa: N806
    return index, start, T, t, time.perf_counter() - began


class LibraryWriter:
    """Commits computed chunks of designs into an existing library file, crash-safely.

    Use as a context manager; only one writer (one process) may hold a file.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._handle = open_library(self.path, "r+")
        self._has_jones = "t" in self._handle

    def __enter__(self) -> LibraryWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._handle.id.valid:
            self._handle.close()

    def done_mask(self) -> np.ndarray:
        """``(N,)`` bool, the designs already committed."""
        return self._handle["done"][()].astype(bool)

    def commit(self, start: int, T, t=None, chunk_index: int | None = None, seconds=None):  # noqa: N803
        """Write spectra for designs ``start .. start + len(T)`` and then mark them done.

        ``T`` is ``(n, L, 2)``; ``t`` ``(n, L, 2, 2)`` is required when the file stores Jones
        matrices. The spectra reach the disk before the ``done`` flags do.
        """
        T = np.asarray(T, dtype=np.float64)  # noqa: N806
        stop = start + T.shape[0]
        if not np.isfinite(T).all():
            raise LibraryError(f"designs {start}..{stop - 1}: transmittance has NaN or inf")
        self._handle["T"][start:stop] = T
        if self._has_jones:
            if t is None:
                raise LibraryError(f"{self.path} stores Jones matrices t; commit needs t")
            self._handle["t"][start:stop] = np.asarray(t, dtype=np.complex128)
        if chunk_index is not None and seconds is not None:
            self._handle["solve_seconds"][chunk_index] = float(seconds)
        self._sync()
        self._handle["done"][start:stop] = 1
        self._sync()

    def _sync(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.id.get_vfd_handle())


# --------------------------------------------------------------------------- file management


def _matches(meta: dict, spec: LibrarySpec, path: Path) -> None:
    """Raise LibraryError if an existing library was built with other settings than ``spec``."""
    check_same_grid(spec.wavelengths_nm, meta["wavelengths_nm"], f"the existing library {path}")
    generation = meta["generation"] or {}
    stored = {
        "family": meta["family"],
        "period_nm": meta["period_nm"],
        "material": meta["material"],
        "substrate": meta["substrate"],
        "superstrate": meta["superstrate"],
        "solver": meta["solver"],
        "store_jones": meta["has_jones"],
        "seed": generation.get("seed"),
        "thickness_range_nm": tuple(generation.get("thickness_range_nm", ())),
        "min_feature_nm": generation.get("min_feature_nm"),
    }
    wanted = {key: getattr(spec, key) for key in stored}
    differ = [
        f"{k}: file {stored[k]!r}, asked {wanted[k]!r}" for k in stored if stored[k] != wanted[k]
    ]
    if differ:
        raise LibraryError(
            f"{path} holds a library built with other settings ({'; '.join(differ)}); "
            "pass the same settings to resume it, or write to another file"
        )


def _create(path: Path, spec: LibrarySpec, chunk_size: int, records=None) -> None:
    params, thickness = sample_designs(spec)
    n, n_wl = spec.count, len(spec.wavelengths_nm)
    library = ResponseLibrary(
        wavelengths_nm=np.asarray(spec.wavelengths_nm),
        family=spec.family,
        parameter_names=spec.parameter_names,
        params_nm=params,
        thickness_nm=thickness,
        period_nm=spec.period_nm,
        material=spec.material,
        substrate=spec.substrate,
        superstrate=spec.superstrate,
        solver=spec.solver,
        T=np.full((n, n_wl, 2), np.nan),
        done=np.zeros(n, dtype=bool),
        t=np.full((n, n_wl, 2, 2), np.nan + 0j) if spec.store_jones else None,
        generation=spec.generation(chunk_size),
    )
    write_library(path, library, chunk_count=math.ceil(n / chunk_size), records=records)


def _grow(path: Path, spec: LibrarySpec, chunk_size: int) -> None:
    """Extend a library to ``spec.count`` designs; the old file is replaced atomically."""
    old = read_library(path)
    params, thickness = sample_designs(spec)
    n_old = len(old)
    if not (
        np.array_equal(old.params_nm, params[:n_old])
        and np.array_equal(old.thickness_nm, thickness[:n_old])
    ):
        raise LibraryError(f"{path}: stored designs differ from the seed's design list")

    def padded(array, fill):
        if array is None:
            return None
        grown = np.full((spec.count, *array.shape[1:]), fill, dtype=array.dtype)
        grown[:n_old] = array
        return grown

    grown = replace(
        old,
        params_nm=params,
        thickness_nm=thickness,
        T=padded(old.T, np.nan),
        done=padded(old.done, False),
        t=padded(old.t, np.nan),
        generation=dict(old.generation, count=spec.count),
    )
    # The per-chunk solve_seconds restart: a grown file times only chunks solved from now on.
    # The convergence probe still describes the stack; the accuracy sample was drawn from the
    # old designs, so it is dropped (estimate it again for the grown library).
    kept = {"convergence_probe": read_records(path)["convergence_probe"]}
    write_library(path, grown, chunk_count=math.ceil(spec.count / chunk_size), records=kept)


# --------------------------------------------------------------------------- driver


def build_library(
    path,
    spec: LibrarySpec,
    chunk_size: int = 128,
    scheduler: str | None = None,
    n_workers: int = 2,
    serial: bool = False,
    client=None,
    progress: bool = True,
    on_commit: Callable[[int, int], None] | None = None,
    records: dict | None = None,
) -> BuildReport:
    """Create or resume the library at ``path`` and solve every design not yet done.

    Parameters
    ----------
    path : HDF5 file. If it exists it must hold a library built with the same settings; its
        finished designs are kept, and a larger ``spec.count`` extends it.
    spec : what to generate.
    chunk_size : designs per RCWA batch and per Dask task (a resumed file keeps its own).
    scheduler : address of a running Dask scheduler (``"tcp://host:8786"``); default: a
        ``LocalCluster`` of ``n_workers`` single-threaded processes, closed at the end.
    n_workers : workers of the LocalCluster.
    serial : solve in this process without Dask (debugging, tests).
    client : an existing ``distributed.Client`` to use instead (not closed).
    progress : show a tqdm bar on stderr.
    on_commit : called as ``on_commit(chunk_index, designs_done)`` after each commit.
    records : :class:`~hyplex.optics.library.Record` s to store when the file is created
        (a ``convergence_probe`` that chose the order); a resumed file keeps its own.

    The accuracy estimate is a separate step (it re-solves a sample at the converged order):
    :func:`hyplex.optics.library_accuracy.estimate_accuracy`, which ``hyplex library build``
    runs after the build.

    Returns
    -------
    BuildReport; its ``designs_per_second`` covers the solving phase of this run.
    """
    path = Path(path)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 design, got {chunk_size}")
    apply_thread_policy()
    if path.is_dir():
        raise LibraryError(f"{path} is a directory; expected a library file path (.h5)")
    meta = read_metadata(path) if path.exists() else None
    if meta is not None:
        _matches(meta, spec, path)
        chunk_size = int(meta["generation"]["chunk_size"])
        if spec.count < meta["count"]:
            raise LibraryError(
                f"{path} holds {meta['count']} designs; count={spec.count} would drop some"
            )
    # before anything is allocated: the file, the disk and one chunk's RCWA per local worker
    local_workers = 1 if serial else 0 if (scheduler or client is not None) else n_workers
    local_workers = min(local_workers, math.ceil(spec.count / chunk_size))
    check_resources(spec, path, chunk_size, local_workers)
    if meta is None:
        _create(path, spec, chunk_size, records)
    elif spec.count > meta["count"]:
        _grow(path, spec, chunk_size)

    with LibraryWriter(path) as writer:
        done = writer.done_mask()
        params, thickness = sample_designs(spec)
        chunks = [
            (index, start, min(start + chunk_size, spec.count))
            for index, start in enumerate(range(0, spec.count, chunk_size))
            if not done[start : start + chunk_size].all()
        ]
        skipped = int(done.sum())
        began = time.perf_counter()
        bar = _progress_bar(spec.count, skipped, path.name, progress)
        committed = skipped

        def commit(result):
            nonlocal committed
            index, start, T, t, seconds = result  # noqa: N806
            writer.commit(start, T, t, chunk_index=index, seconds=seconds)
            newly = len(T) - int(done[start : start + len(T)].sum())
            committed += newly
            bar.update(newly)
            if on_commit is not None:
                on_commit(index, committed)

        tasks = [
            (index, start, params[start:stop], thickness[start:stop])
            for index, start, stop in chunks
        ]
        try:
            if serial or not tasks:
                workers = 1
                with single_torch_thread():  # forward only: the policy's count comes back
                    for task in tasks:
                        commit(_solve_chunk(spec, *task))
            else:
                workers = _run_distributed(spec, tasks, commit, scheduler, n_workers, client)
        finally:
            bar.close()
        elapsed = time.perf_counter() - began
    return BuildReport(path, spec.count, committed - skipped, skipped, elapsed, workers)


def _progress_bar(total: int, initial: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="design", desc=name, disable=not enabled)


@contextmanager
def kept_environ():
    """Give back this process's environment as it was before the block.

    Dask's Nanny writes its pre-spawn variables (``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1``,
    ``OPENBLAS_NUM_THREADS=1``, ``PYTHONHASHSEED``, ...) into the *parent's* ``os.environ``
    when it starts a worker, so every later child process (and library loaded later) of a
    program that once started a LocalCluster ran differently. Wrap the cluster's start in this.
    """
    saved = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        for name, value in saved.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


def _run_distributed(spec, tasks, commit, scheduler, n_workers, client) -> int:
    """Submit every chunk to Dask and commit results as they complete; returns worker count."""
    distributed = require("distributed", feature="a library build on Dask (--serial needs none)")
    Client, LocalCluster = distributed.Client, distributed.LocalCluster  # noqa: N806

    owned = []
    if client is None:
        if scheduler:
            client = Client(scheduler)
        else:
            if n_workers < 1:
                raise ValueError(f"n_workers must be >= 1, got {n_workers}")
            with kept_environ():
                cluster = LocalCluster(
                    n_workers=n_workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    silence_logs=logging.ERROR,
                    env=WORKER_ENV,
                )
            owned.append(cluster)
            client = Client(cluster)
        owned.insert(0, client)
    try:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        futures = [client.submit(_solve_chunk, spec, *task, pure=False) for task in tasks]
        try:
            for future in distributed.as_completed(futures):
                commit(future.result())
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        for item in owned:
            item.close()
    return workers
