"""torchrun's process layout (RANK, WORLD_SIZE, LOCAL_RANK) and the few collective steps sipvis needs.

Used by training (data-parallel, one process per device) and by the split run of `sipvis eval
--dataset` (every rank tracks its share of the videos, the first one gathers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from sipvis.errors import SipvisError


@dataclass
class DistInfo:
    """This process's place under torchrun ((0, 1, 0) when started alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "DistInfo":
        """Read torchrun's RANK, WORLD_SIZE and LOCAL_RANK environment variables."""
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                   int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_spec: str) -> tuple[DistInfo, torch.device]:
    """Read torchrun's environment; start the process group (NCCL on CUDA, gloo on CPU)."""
    from sipvis.engine.inference import resolve_device

    info = DistInfo.from_env()
    device = resolve_device(device_spec)
    if device.type == "cuda" and info.enabled:
        if info.local_rank >= torch.cuda.device_count():
            raise SipvisError(f"LOCAL_RANK {info.local_rank} but only {torch.cuda.device_count()} CUDA device(s)")
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if info.enabled and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def rank_device(device_spec: str, info: DistInfo) -> str:
    """The device a rank runs inference on: "auto" under torchrun with CUDA means cuda:LOCAL_RANK."""
    if info.enabled and device_spec == "auto" and torch.cuda.is_available():
        return f"cuda:{info.local_rank}"
    return device_spec


def barrier() -> None:
    """Wait for every rank; starts a gloo group when none is running (only a rendezvous, no tensors)."""
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()


def all_reduce_mean(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """The mean of each value over all ranks (the values themselves when alone)."""
    if not info.enabled:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist())}
