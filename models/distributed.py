"""Single-process or ``torchrun`` data-parallel training, behind one small context object.

The co-design entry point (:func:`hyplex.models.codesign.train_codesign`) calls
:func:`init_distributed`. Run plainly it is one process on CUDA when present, else CPU. Under
``torchrun --nproc_per_node N`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) it joins the process group (NCCL on CUDA, one GPU per local
rank; gloo on CPU), the model is wrapped in ``DistributedDataParallel`` (gradients averaged by
all-reduce, parameters broadcast from rank 0 at wrap time), and every rank draws a disjoint
slice of each step's batch. Only rank 0 writes checkpoints, bundles and progress bars.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistributedContext",
    "choose_device",
    "init_distributed",
    "wrap_model",
    "average_gradients",
    "broadcast_buffers",
    "barrier",
    "shutdown",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size``, its ``device`` and backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _environment_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def choose_device(
    device: str | None,
    world_size: int = 1,
    local_rank: int = 0,
    cuda_available: bool = False,
    cuda_device_count: int = 0,
) -> torch.device:
    """The device of one process (a pure function of its arguments; no CUDA call).

    Parameters
    ----------
    device : ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or None (CUDA when available).
    world_size, local_rank : as torchrun sets ``WORLD_SIZE`` and ``LOCAL_RANK``.
    cuda_available, cuda_device_count : what ``torch.cuda`` reports on this machine.

    Returns
    -------
    torch.device
        Alone (``world_size == 1``): the device asked for, ``"cuda"`` meaning ``cuda:0``.
        Under torchrun on CUDA: ``cuda:LOCAL_RANK`` whatever index was asked for (one GPU per
        local rank; an index in ``device`` would put every rank on one GPU).
    """
    if device is None:
        device = "cuda" if cuda_available else "cpu"
    target = torch.device(device)
    if target.type != "cuda":
        return target
    if not cuda_available or cuda_device_count < 1:
        raise ValueError(f"device {device!r} asked for, but CUDA is not available")
    if world_size > 1:
        if not 0 <= local_rank < cuda_device_count:
            raise ValueError(
                f"LOCAL_RANK={local_rank} needs cuda:{local_rank}, but this machine has "
                f"{cuda_device_count} CUDA device(s); start at most {cuda_device_count} "
                "processes per node (torchrun --nproc_per_node)"
            )
        return torch.device("cuda", local_rank)
    index = 0 if target.index is None else target.index
    if index >= cuda_device_count:
        raise ValueError(
            f"device {device!r} asked for, but this machine has {cuda_device_count} CUDA "
            f"device(s) (cuda:0..cuda:{cuda_device_count - 1})"
        )
    return torch.device("cuda", index)


def init_distributed(device: str | None = None) -> DistributedContext:
    """The context of this process; joins the process group when ``WORLD_SIZE > 1``.

    Parameters
    ----------
    device : ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or None (CUDA when available). Under
        torchrun on CUDA each process takes ``cuda:LOCAL_RANK`` (:func:`choose_device`).
    """
    world_size = _environment_int("WORLD_SIZE", 1)
    rank, local_rank = _environment_int("RANK", 0), _environment_int("LOCAL_RANK", 0)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} must lie in 0..WORLD_SIZE-1 (WORLD_SIZE={world_size})")
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    target = choose_device(device, world_size, local_rank, available, count)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if world_size == 1:
        return DistributedContext(device=target)
    backend = "nccl" if target.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank, target, backend)


def wrap_model(model: nn.Module, context: DistributedContext) -> nn.Module:
    """``model`` itself (single process) or wrapped in ``DistributedDataParallel``."""
    if not context.distributed:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def average_gradients(parameters, context: DistributedContext) -> None:
    """All-reduce the ``.grad`` of ``parameters`` to their mean over ranks (no-op alone); for
    phases that run the unwrapped module (decoder fine-tuning after hardening)."""
    if not context.distributed:
        return
    for parameter in parameters:
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
            parameter.grad /= context.world_size


def broadcast_buffers(module: nn.Module, context: DistributedContext) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) to every rank, as DDP does
    before each forward; for phases that run the unwrapped module."""
    if not context.distributed:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def barrier(context: DistributedContext) -> None:
    """Wait until every rank gets here (no-op alone)."""
    if context.distributed:
        dist.barrier()


def shutdown(context: DistributedContext) -> None:
    """Leave the process group (if this process joined one)."""
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()
