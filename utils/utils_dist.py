"""Distributed helpers for training under ``torchrun`` or SLURM's ``srun`` (NCCL on CUDA, gloo on CPU).

The process group is described by torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) or, without it, by SLURM's (``SLURM_PROCID``, ``SLURM_NTASKS``,
``SLURM_LOCALID``, ``SLURM_JOB_NODELIST``; the master is the first node of the job, port
``MASTER_PORT`` or 29500). Without either, everything runs in one process and these helpers are
no-ops, so the trainer has a single code path.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[03-05,07],cpu1`` -> ``gpu03``; ``n1,n2`` -> ``n1``."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not match:
        raise ValueError(f"cannot read the SLURM node list {nodelist!r}")
    prefix, ranges = match.groups()
    return prefix if ranges is None else prefix + ranges.split(",")[0].split("-")[0]


def torchrun_env_from_slurm(environ: Mapping[str, str]) -> dict[str, str]:
    """torchrun's variables derived from a SLURM task's, or {} when not under a multi-task srun (or under torchrun)."""
    if "WORLD_SIZE" in environ or "SLURM_PROCID" not in environ or int(environ.get("SLURM_NTASKS", "1")) < 2:
        return {}
    return {
        "RANK": environ["SLURM_PROCID"],
        "WORLD_SIZE": environ["SLURM_NTASKS"],
        "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": environ.get("MASTER_ADDR") or first_host(environ.get("SLURM_JOB_NODELIST", "localhost")),
        "MASTER_PORT": environ.get("MASTER_PORT", "29500"),
    }


def init_dist(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group that torchrun or SLURM describes in the environment (or run alone).

    ``timeout_s``: how long a collective (a barrier while rank 0 validates, for instance) may wait.
    """
    os.environ.update(torchrun_env_from_slurm(os.environ))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistInfo(rank, world_size, local_rank, dev)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def reduce_mean(value: float, device: torch.device) -> float:
    """Average a scalar over all ranks (identity without DDP)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; identity without DDP)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_ranks_true(flag: torch.Tensor) -> bool:
    """Whether a boolean tensor is true on every rank (one all-reduce; the host waits for the device here)."""
    value = flag.to(torch.float32).reshape(1)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
