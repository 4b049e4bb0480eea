"""Multi-process data parallelism through torch.distributed, launched by ``torchrun``.

``torchrun --nproc-per-node 2 -m rankrm train ...`` sets ``WORLD_SIZE``/``RANK``; a plain
``rankrm train`` runs as a world of one. CPU processes talk over gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, metrics and the plot."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (no-op in a world of one)."""
        if self.size > 1:
            dist.barrier()

    def mean(self, value: float) -> float:
        """Average a scalar over the processes (for logging)."""
        if self.size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.size


def init_world() -> World:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def close_world(world: World) -> None:
    """Leave the process group."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
