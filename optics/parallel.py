"""Thread safety and batch parallelism for the small dense linear algebra of RCWA.

Measured on the team's 2-core machines (torch 2.13.0+cpu with its bundled oneMKL): batched
complex LU (``torch.linalg.solve``/``inv``) of matrices of size ~200 or more hangs, or prints
``Intel oneMKL ERROR: Parameter 6 was incorrect on entry to ZLASWP``, when torch runs more than
one intra-op thread; with one thread it is correct. Torch also walks a batch of ``eig`` calls
sequentially, so intra-op threads never helped there. hyplex therefore runs the RCWA with one
torch intra-op thread on CPU and parallelises across the *batch* itself with a thread pool
(ATen releases the GIL), which is both safe and faster for many small matrices.

How this sits inside the process-wide thread policy (:mod:`hyplex.optics.threads`):

- :func:`use_safe_threading` (every RCWA solve) puts torch on one intra-op thread, checked on
  *every* call: anything may have raised the count since (the policy at an entry point,
  numba's OpenMP layer, a caller), and a solve must never run on more.
- A forward-only batch (a library build, :func:`single_torch_thread`) gives the count back
  when it ends; a solve with gradients leaves torch on one thread, since its backward pass
  runs later and needs the same.
- Results do not depend on the batch split: :func:`map_batch` returns the same memory layout
  whether it split the batch or not (LAPACK's column-major eigenvectors and a ``torch.cat``
  of chunks differ in layout, and the next matrix products then round differently), and
  each matrix's factorisation does not depend on its neighbours in the batch. So a response
  library is bitwise the same on 1 or 16 cores, with ``HYPLEX_WORKERS`` at any value.

Set ``HYPLEX_KEEP_TORCH_THREADS=1`` to leave torch's thread count alone (at your risk).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

__all__ = ["use_safe_threading", "single_torch_thread", "default_workers", "map_batch"]

_log = logging.getLogger(__name__)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_scope_lock = threading.Lock()
_scope_depth = 0
_scope_saved = 1


def default_workers() -> int:
    """Worker threads for batch parallelism: ``HYPLEX_WORKERS`` or the usable CPU count."""
    value = os.environ.get("HYPLEX_WORKERS")
    if value:
        return max(1, int(value))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _keep_threads() -> bool:
    return bool(os.environ.get("HYPLEX_KEEP_TORCH_THREADS"))


def use_safe_threading() -> None:
    """Run torch CPU ops with one intra-op thread from here on (see the module docstring).

    Cheap; checked on every call, so a count raised since the last solve is put back.
    """
    if _keep_threads():
        return
    threads = torch.get_num_threads()
    if threads != 1:
        _log.info("torch intra-op threads %d -> 1 (batched MKL LU hangs with more)", threads)
        torch.set_num_threads(1)


@contextmanager
def single_torch_thread() -> Iterator[None]:
    """One torch intra-op thread inside the block, the previous count restored after it.

    For forward-only solves (no autograd graph outlives the block). Nested and concurrent
    blocks share one count: the outermost entry saves it, the last exit restores it.
    """
    global _scope_depth, _scope_saved
    if _keep_threads():
        yield
        return
    with _scope_lock:
        if _scope_depth == 0:
            _scope_saved = torch.get_num_threads()
        _scope_depth += 1
        use_safe_threading()
    try:
        yield
    finally:
        with _scope_lock:
            _scope_depth -= 1
            if _scope_depth == 0 and _scope_saved != torch.get_num_threads():
                torch.set_num_threads(_scope_saved)


def _one_thread_worker() -> None:
    # A pool thread takes torch's thread count lazily from the process-wide setting at its
    # first parallel op, whenever that is; pin it to one (the MKL hang, and a result that
    # does not depend on when the thread was born).
    if not _keep_threads():
        torch.set_num_threads(1)


def _get_pool(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < workers:
            _pool = ThreadPoolExecutor(
                max_workers=workers,
                thread_name_prefix="hyplex-linalg",
                initializer=_one_thread_worker,
            )
        return _pool


def map_batch(
    fn, tensor: torch.Tensor, workers: int | None = None, min_chunk: int = 2, core_dims: int = 2
):
    """Apply ``fn`` to chunks of ``tensor`` along its flattened batch dims, in parallel threads.

    Parameters
    ----------
    fn : callable taking a tensor ``(b, ...)`` and returning a tensor or a tuple of tensors,
        each with leading dimension ``b``; the result for one batch item must depend on that
        item alone (true of torch's batched linear algebra).
    tensor : ``(*batch, *core)`` with ``core_dims`` trailing core dimensions (default a matrix);
        CUDA tensors are passed through in one call.
    workers : number of threads (default :func:`default_workers`).

    Returns
    -------
    The outputs reshaped back to ``(*batch, ...)``, always contiguous (row-major), so the
    values *and* the layout are the same however the batch was split.
    """
    workers = default_workers() if workers is None else workers
    batch_shape = tensor.shape[: tensor.ndim - core_dims]
    flat = tensor.reshape(-1, *tensor.shape[tensor.ndim - core_dims :])
    count = flat.shape[0]
    if tensor.device.type != "cpu" or workers <= 1 or count < workers * min_chunk:
        outputs = fn(flat)
        if isinstance(outputs, tuple):
            outputs = tuple(o.contiguous() for o in outputs)
        else:
            outputs = outputs.contiguous()
    else:
        parts = list(_get_pool(workers).map(fn, flat.tensor_split(workers)))
        if isinstance(parts[0], tuple):
            outputs = tuple(torch.cat(p) for p in zip(*parts, strict=True))
        else:
            outputs = torch.cat(parts)
    if isinstance(outputs, tuple):
        return tuple(o.reshape(*batch_shape, *o.shape[1:]) for o in outputs)
    return outputs.reshape(*batch_shape, *outputs.shape[1:])
