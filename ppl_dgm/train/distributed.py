"""Data-parallel training across processes: torchrun + DistributedDataParallel (gloo on CPU, NCCL on CUDA).

Launch any trainer with ``torchrun --nproc_per_node N -m ppl_dgm.cli train ... --distributed``;
:func:`ppl_dgm.train.fit` then shards each epoch with ``DistributedSampler``, all-reduces gradients
through DDP and lets only rank 0 write checkpoints, metrics and pictures.
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist

from ppl_dgm.train.device import resolve_device

__all__ = ["init_distributed", "rank_and_world_size", "is_main_process", "cleanup_distributed", "all_reduce_mean", "distributed_session"]


def rank_and_world_size() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return rank_and_world_size()[0] == 0


def init_distributed(device: str | torch.device = "auto") -> tuple[int, int, torch.device]:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

    Returns (rank, world size, this process's device): ``cuda:LOCAL_RANK`` with NCCL when CUDA is
    used, the CPU with gloo otherwise.
    """
    missing = [name for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise RuntimeError(f"--distributed needs the torchrun environment; {missing} not set. Launch with "
                           "`torchrun --nproc_per_node N -m ppl_dgm.cli train ... --distributed`")
    device = resolve_device(device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def cleanup_distributed() -> None:
    """Leave the process group once every process is done (tearing down while a peer still talks aborts gloo)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all processes (the tensor itself outside a process group)."""
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / world_size


@contextlib.contextmanager
def distributed_session(enabled: bool, device: str | torch.device = "auto"):
    """Yield the device to train on: inside a torchrun process group when ``enabled`` (left on exit)."""
    if not enabled:
        yield resolve_device(device)
        return
    _, _, device = init_distributed(device)
    try:
        yield device
    finally:
        cleanup_distributed()
