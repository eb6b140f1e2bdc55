"""A training DataLoader whose order is a function of (seed, epoch) and that resumes mid-epoch.

Lightning stores a train loader's `state_dict()` in every checkpoint and hands it back through
`load_state_dict()` on resume (its "stateful dataloader" protocol). Here the state is the epoch
and the number of samples already drawn, so a run resumed from a mid-epoch checkpoint sees
exactly the batches an uninterrupted run would have seen next. The shuffle never draws from the
global RNG (its own generator, seeded from `torch.initial_seed()`, i.e. the run's `seed`), so
restoring the global RNG state restores dropout and augmentation noise independently of it.
"""

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class EpochShuffleSampler(DistributedSampler):
    """A permutation per epoch from `seed + epoch`; `set_epoch` is called by Lightning each epoch.

    Under DDP/FSDP (`world` > 1) rank r takes every world-th index of the permutation, padded with
    its first indices to equal lengths as DistributedSampler does, so ranks step in lock-step and a
    checkpoint's position (rank 0's) is every rank's. Being a DistributedSampler, Lightning keeps it
    instead of wrapping it (a wrapper would hide the position from the checkpoint).
    """

    def __init__(self, length: int, seed: int | None = None, rank: int = 0, world: int = 1):
        # not DistributedSampler.__init__: it needs a dataset and reads the process group; the same fields
        self.length, self.rank, self.num_replicas = length, rank, world
        self.num_samples = math.ceil(length / world)
        self.total_size = self.num_samples * world
        self.shuffle, self.drop_last = True, False
        self.seed = int(torch.initial_seed() if seed is None else seed) % (2**63)
        self.epoch = 0
        self.consumed = 0  # samples this rank drew so far in this epoch
        self._skip = 0  # samples to skip at the next iteration (set by load_state_dict)
        self._told, self._iterated = False, False

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._skip = epoch, 0
        self._told = True

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        if self._iterated and not self._told:  # nobody calls set_epoch (a plain loop, not Lightning)
            self.epoch, self._skip = self.epoch + 1, 0
        self._iterated, self._told = True, False
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.length, generator=gen).tolist()
        order = (order * math.ceil(self.total_size / max(1, self.length)))[:self.total_size][self.rank::self.num_replicas]
        start, self._skip = self._skip, 0
        self.consumed = start
        for i in order[start:]:
            self.consumed += 1
            yield i

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.seed = int(state["epoch"]), int(state["seed"])
        self._skip = int(state["consumed"]) % max(1, self.num_samples)


class ResumableDataLoader(DataLoader):
    """A DataLoader that forwards Lightning's checkpoint state to its EpochShuffleSampler."""

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        return sampler.state_dict() if isinstance(sampler, EpochShuffleSampler) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state and isinstance(self.sampler, EpochShuffleSampler):
            self.sampler.load_state_dict(state)


def shuffled_loader(dataset: Dataset, batch_size: int, rank: int = 0, world: int = 1, **kwargs: Any) -> ResumableDataLoader:
    """The training loader: reproducible shuffle, resumable mid-epoch, no global-RNG draws; rank's shard of `world`."""
    sampler = EpochShuffleSampler(len(dataset), rank=rank, world=world)
    generator = torch.Generator().manual_seed(sampler.seed)  # worker seeds: not from the global RNG
    return ResumableDataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator, **kwargs)
