"""Work that one process would do in order (a frozen model's passes over the training examples, a round-start model's
generations), shared by the processes of a fit: each computes its share and every process receives every result, in
the order one process would have produced them.

A share is a contiguous run of whole batches, so that every batch is the one a single process would run (the same
rows, the same padding, the same shared prefix): the results equal a single process's, and greedy generations are
identical. Shares differ by one batch at most, and the only wait is the gather that follows them: no process waits
for work that another does alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Shares:
    """This process's place among the ``world`` processes that share the work (rank 0 of 1: alone)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def of_processes(cls) -> Shares:
        """The processes of torch.distributed's default group, which Lightning's strategies start before the data
        module's ``setup``; one process when there is none."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def part(self, count: int, batch_size: int) -> range:
        """The items (of ``count``, run ``batch_size`` at a time) that this process computes: its contiguous run of
        whole batches."""
        batches = -(-count // batch_size)
        first, last = self.rank * batches // self.world, (self.rank + 1) * batches // self.world
        return range(min(first * batch_size, count), min(last * batch_size, count))

    def gather(self, mine: T) -> list[T]:
        """Every process's ``mine``, by rank (a collective: every process calls it, in the same order)."""
        if self.world == 1:
            return [mine]
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, mine)
        return gathered


ALONE = Shares()  # one process, which does all the work
