"""A shuffling sampler that resumes in the middle of an epoch and shards global batches across processes.

Each epoch's order is a permutation drawn from ``seed + epoch`` alone (Lightning sets the epoch), so it does not
depend on anything else that used the random number generator. The order is cut into global batches; with several
processes each takes its contiguous share of every global batch, so the union of a step's micro-batches is the
same global batch as in one process. A run restored from a checkpoint skips the batches its epoch had consumed.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DistributedSampler


class ResumableShuffleSampler(DistributedSampler):
    """Subclasses ``DistributedSampler`` so that Lightning uses it as it is instead of wrapping it."""

    def __init__(self, size: int, global_batch: int, seed: int, rank: int = 0, world_size: int = 1, skip_batches: int = 0):
        super().__init__(range(size), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        if global_batch % world_size:
            raise ValueError(f"the batch size {global_batch} must be a multiple of the {world_size} processes")
        last = size % global_batch
        if 0 < last < world_size:
            raise ValueError(
                f"the last batch of each epoch has {last} of {size} examples, fewer than the {world_size} processes: "
                "change the batch size so that every process gets at least one example"
            )
        self.size, self.global_batch, self.skip_batches = size, global_batch, skip_batches

    def batches(self, skip: int = 0) -> list[list[int]]:
        """This process's share of every global batch of the epoch, from batch ``skip`` on."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        shares = []
        for first in range(skip * self.global_batch, self.size, self.global_batch):
            batch = order[first : first + self.global_batch]
            local = -(-len(batch) // self.num_replicas)
            shares.append(batch[self.rank * local : (self.rank + 1) * local])
        return shares

    def __iter__(self) -> Iterator[int]:
        shares = self.batches(self.skip_batches)
        self.skip_batches = 0  # only the resumed epoch starts late
        return iter([index for share in shares for index in share])

    def __len__(self) -> int:
        # The whole epoch, also when resuming: Lightning counts the epoch's batches from it and restores its own
        # progress through the epoch, and the resumed epoch's iterator simply ends early.
        return sum(len(share) for share in self.batches())
