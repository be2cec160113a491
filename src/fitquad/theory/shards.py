"""Training points split among DDP processes: each process holds one shard, and a statistic of all the points is
its shard's, combined across the processes.

Under DDP (`--trainer.strategy ddp`, torchrun, srun) process `rank` of `count` draws or keeps every count-th
training point, starting at its rank (QuadraticDataModule), so no process ever holds all of them. The float64
passes over the training points (the feature scaling, the closed-form reference, the conditioning, the diagnosis)
then work on their shard and combine: sums are added, the QR factors of the shards are stacked and factored again.
One process is `WHOLE`: every combination is then the value itself, and no process group is needed.

The combining is collective, as DDP's own all-reduce is: every process must make the same calls in the same order,
so code that runs on rank 0 alone (writing files, drawing figures) must gather what it needs before it branches.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Shards:
    """This process's place among the processes that share the training points: shard `rank` of `count`."""

    rank: int = 0
    count: int = 1

    def gather(self, value: T) -> list[T]:
        """Every process's value, in rank order (CPU tensors, numbers, tuples of them).

        torch.distributed.all_gather_object: it works for every backend (gloo, and NCCL, whose tensors it moves to
        the process's GPU itself), and the values here are a few numbers or a p×p matrix, never the points."""
        if self.count == 1:
            return [value]
        values: list[Any] = [None] * self.count
        torch.distributed.all_gather_object(values, value)
        return values

    def sum(self, value: T) -> T:
        """The sum over the processes, added in rank order, so that every process gets the same number."""
        return functools.reduce(operator.add, self.gather(value))

    def max(self, value: float) -> float:
        """The largest over the processes (nan if any is nan, as torch's max)."""
        return value if self.count == 1 else torch.tensor(self.gather(value), dtype=torch.float64).max().item()

    def take(self, points: int) -> slice:
        """This shard's points among `points` in order: every count-th one, starting at the rank."""
        return slice(self.rank, points, self.count)


WHOLE = Shards()  # one process holding all the points
