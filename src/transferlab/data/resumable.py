"""A training DataLoader whose order is a function of (seed, epoch) and that resumes mid-epoch.

Lightning stores a train loader's `state_dict()` in every checkpoint and hands it back through
`load_state_dict()` on resume (its "stateful dataloader" protocol). Here the state is the epoch
and the number of samples already drawn, so a run resumed from a mid-epoch checkpoint sees
exactly the batches an uninterrupted run would have seen next. The shuffle never draws from the
global RNG (its own generator, seeded from `torch.initial_seed()`, i.e. the run's `seed`), so
restoring the global RNG state restores dropout and augmentation noise independently of it.
"""

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochShuffleSampler(Sampler[int]):
    """A permutation per epoch from `seed + epoch`; `set_epoch` is called by Lightning each epoch."""

    def __init__(self, length: int, seed: int | None = None):
        self.length = length
        self.seed = int(torch.initial_seed() if seed is None else seed) % (2**63)
        self.epoch = 0
        self.consumed = 0  # samples drawn so far in this epoch
        self._skip = 0  # samples to skip at the next iteration (set by load_state_dict)
        self._told, self._iterated = False, False

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._skip = epoch, 0
        self._told = True

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        if self._iterated and not self._told:  # nobody calls set_epoch (e.g. inside a distributed wrapper)
            self.epoch, self._skip = self.epoch + 1, 0
        self._iterated, self._told = True, False
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.length, generator=gen).tolist()
        start, self._skip = self._skip, 0
        self.consumed = start
        for i in order[start:]:
            self.consumed += 1
            yield i

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.seed = int(state["epoch"]), int(state["seed"])
        self._skip = int(state["consumed"]) % max(1, self.length)


class ResumableDataLoader(DataLoader):
    """A DataLoader that forwards Lightning's checkpoint state to its EpochShuffleSampler."""

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        return sampler.state_dict() if isinstance(sampler, EpochShuffleSampler) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state and isinstance(self.sampler, EpochShuffleSampler):
            self.sampler.load_state_dict(state)


def shuffled_loader(dataset: Dataset, batch_size: int, **kwargs: Any) -> ResumableDataLoader:
    """The training loader: reproducible shuffle, resumable mid-epoch, no global-RNG draws."""
    sampler = EpochShuffleSampler(len(dataset))
    generator = torch.Generator().manual_seed(sampler.seed)  # worker seeds: not from the global RNG
    return ResumableDataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator, **kwargs)
