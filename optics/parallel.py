"""Thread policy and batch parallelism for the small dense linear algebra of RCWA.

Measured on the team's 2-core machines (torch 2.13.0+cpu with its bundled oneMKL): batched
complex LU (``torch.linalg.solve``/``inv``) of matrices of size ~200 or more hangs, or prints
``Intel oneMKL ERROR: Parameter 6 was incorrect on entry to ZLASWP``, when torch runs more than
one intra-op thread; with one thread it is correct. Torch also walks a batch of ``eig`` calls
sequentially, so intra-op threads never helped there. hyplex therefore runs torch with one
intra-op thread on CPU and parallelises across the *batch* itself with a thread pool (ATen
releases the GIL), which is both safe and faster for many small matrices.

Set ``HYPLEX_KEEP_TORCH_THREADS=1`` to leave torch's thread count alone.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["use_safe_threading", "default_workers", "map_batch"]

_log = logging.getLogger(__name__)
_pool: ThreadPoolExecutor | None = None
_configured = False


def default_workers() -> int:
    """Worker threads for batch parallelism: ``HYPLEX_WORKERS`` or the usable CPU count."""
    value = os.environ.get("HYPLEX_WORKERS")
    if value:
        return max(1, int(value))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def use_safe_threading() -> None:
    """Run torch CPU ops with one intra-op thread (once per process; see module docstring)."""
    global _configured
    if _configured:
        return
    _configured = True
    if os.environ.get("HYPLEX_KEEP_TORCH_THREADS"):
        return
    if torch.get_num_threads() != 1:
        _log.info(
            "hyplex: torch intra-op threads %d -> 1 (batched MKL LU hangs with more)",
            torch.get_num_threads(),
        )
        torch.set_num_threads(1)


def map_batch(
    fn, tensor: torch.Tensor, workers: int | None = None, min_chunk: int = 2, core_dims: int = 2
):
    """Apply ``fn`` to chunks of ``tensor`` along its flattened batch dims, in parallel threads.

    Parameters
    ----------
    fn : callable taking a tensor ``(b, ...)`` and returning a tensor or a tuple of tensors,
        each with leading dimension ``b``.
    tensor : ``(*batch, *core)`` with ``core_dims`` trailing core dimensions (default a matrix);
        CUDA tensors are passed through in one call.
    workers : number of threads (default :func:`default_workers`).

    Returns
    -------
    The outputs reshaped back to ``(*batch, ...)``.
    """
    global _pool
    workers = default_workers() if workers is None else workers
    batch_shape = tensor.shape[: tensor.ndim - core_dims]
    flat = tensor.reshape(-1, *tensor.shape[tensor.ndim - core_dims :])
    count = flat.shape[0]
    if tensor.device.type != "cpu" or workers <= 1 or count < workers * min_chunk:
        outputs = fn(flat)
    else:
        if _pool is None or _pool._max_workers < workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hyplex-linalg")
        parts = list(_pool.map(fn, flat.tensor_split(workers)))
        if isinstance(parts[0], tuple):
            outputs = tuple(torch.cat(p) for p in zip(*parts, strict=True))
        else:
            outputs = torch.cat(parts)
    if isinstance(outputs, tuple):
        return tuple(o.reshape(*batch_shape, *o.shape[1:]) for o in outputs)
    return outputs.reshape(*batch_shape, *outputs.shape[1:])
