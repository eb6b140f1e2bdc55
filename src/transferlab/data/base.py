"""In-memory classification datamodule shared by every array dataset (signals, images, tables).

Subclasses only say where the arrays come from (`load_arrays`); class subsets, the validation
split, k-shot / fraction subsets and normalization are decided here, once, for all of them.
"""

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from transferlab.data.resumable import shuffled_loader
from transferlab.data.spec import DataSpec
from transferlab.data.splits import (
    fraction_subset,
    k_shot,
    select_classes,
    stratified_split,
)
from transferlab.data.tensor_batches import batched_view
from transferlab.errors import ConfigError


class ArrayDataModule(pl.LightningDataModule):
    """Train/val/test tensors held in memory; deterministic per `split_seed`."""

    modality = "image"

    @classmethod
    def configured_modality(cls, node: Any) -> str:
        """The modality a data config will have, read from the config alone (pre-flight: no data built)."""
        return cls.modality

    def __init__(
        self,
        classes: Sequence[int] | None = None,
        labels_per_class: int | None = None,
        fraction: float | None = None,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        normalize: bool = True,
        corruptions: Sequence[str] | None = None,
        severities: Sequence[int] = (1, 2, 3, 4, 5),
        shift_seed: int = 0,
    ):
        super().__init__()
        self.classes = list(classes) if classes is not None else None
        self.labels_per_class = labels_per_class
        self.fraction = fraction
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or max(batch_size, 256)
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.normalize = normalize
        self.corruptions = list(corruptions or [])
        self.severities = [int(s) for s in severities]
        self.shift_seed = shift_seed
        self.normalization: tuple[float, float] | None = None  # (mean, std); set before setup to reuse a run's
        self._ready = False

    # -- what subclasses provide ------------------------------------------------------------
    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Source arrays (x_train, y_train, x_test, y_test), x already shaped (N, *input_shape)."""
        raise NotImplementedError

    def all_class_names(self) -> list[str]:
        raise NotImplementedError

    def extra_test_sets(self, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Additional (distribution-shifted) test sets, keyed by name: `data.corruptions` x `data.severities`."""
        if not self.corruptions:
            return {}
        from transferlab.data.shifts import corrupted_test_sets

        return corrupted_test_sets(x_test, y_test, self.corruptions, self.severities, self.shift_seed)

    # -- splits -------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        x, y, x_test, y_test = self.load_arrays()
        names = self.all_class_names()
        if self.classes is not None:
            bad = [c for c in self.classes if not 0 <= c < len(names)]
            if bad:
                raise ConfigError("data.classes", self.classes, f"class ids in 0..{len(names) - 1}")
            names = [names[c] for c in self.classes]
        x, y = select_classes(x, y, self.classes)
        x_test, y_test = select_classes(x_test, y_test, self.classes)
        keep, val = stratified_split(y, self.val_fraction, self.split_seed)
        x_val, y_val, x, y = x[val], y[val], x[keep], y[keep]
        if self.labels_per_class is not None:
            smallest = int(np.bincount(y).min())
            if self.labels_per_class > smallest:
                raise ConfigError("data.labels_per_class", self.labels_per_class,
                                  f"at most {smallest} (the smallest class's training examples)")
            idx = k_shot(y, self.labels_per_class, self.split_seed)
            x, y = x[idx], y[idx]
        elif self.fraction is not None:
            idx = fraction_subset(y, self.fraction, self.split_seed)
            x, y = x[idx], y[idx]
        extra = self.extra_test_sets(x_test, y_test)
        if self.normalize:
            if self.normalization is None:
                self.normalization = (float(x.mean()), float(x.std()) + 1e-8)
            mean, std = self.normalization
            x, x_val, x_test = ((a - mean) / std for a in (x, x_val, x_test))
            extra = {k: ((a - mean) / std, b) for k, (a, b) in extra.items()}
        self.class_names = tuple(names)
        self.train_set = _tensors(x, y)
        self.val_set = _tensors(x_val, y_val)
        self.test_set = _tensors(x_test, y_test)
        self.extra_test = {k: _tensors(a, b) for k, (a, b) in extra.items()}
        self._ready = True

    def state_dict(self) -> dict:
        """Saved in every checkpoint, so eval normalizes exactly as training did, and `predict`/`serve`/
        `export` apply the model to new inputs without the training data (`preprocessing`)."""
        state: dict = {"normalization": list(self.normalization) if self.normalization else None}
        if self._ready:
            state["preprocessing"] = self.preprocessing()
        return state

    def preprocessing(self) -> dict:
        """Plain containers describing how raw inputs become model inputs: the data spec (shape, label
        names, special ids) and the normalization; subclasses add what their inputs need."""
        spec = dataclasses.asdict(self.spec)
        spec = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()}
        return {"version": 1, "spec": spec, "normalization": list(self.normalization) if self.normalization else None}

    def load_state_dict(self, state: dict) -> None:
        if state.get("normalization") and not self._ready:
            self.normalization = tuple(state["normalization"])

    @property
    def spec(self) -> DataSpec:
        self.setup()
        return DataSpec(self.modality, tuple(self.train_set.tensors[0].shape[1:]), len(self.class_names), self.class_names)

    # -- loaders ------------------------------------------------------------------------------
    def _loader(self, dataset: TensorDataset, shuffle: bool, batch_size: int, rank: int = 0, world: int = 1) -> DataLoader:
        kwargs = dict(num_workers=self.num_workers, pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0)
        dataset, collate = batched_view(dataset)  # one index op per tensor per batch (data/tensor_batches.py)
        kwargs.update(collate)
        if shuffle:  # order from (seed, epoch), resumable mid-epoch, rank's shard of world (data/resumable.py)
            return shuffled_loader(dataset, batch_size, rank=rank, world=world, **kwargs)
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, **kwargs)

    def train_dataloader(self) -> DataLoader:
        """This rank's shard of the training split (all of it in a single process)."""
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return self._loader(self.train_set, True, self.batch_size, rank, world)

    def bank_dataloader(self) -> DataLoader:
        """The whole training split on every rank, in epoch 0's shuffled order: the k-NN monitor's bank."""
        return self._loader(self.train_set, True, self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False, self.eval_batch_size)

    def test_dataloader(self):
        main = self._test_loader(self.test_set)
        if not self.extra_test:
            return main
        return [main] + [self._test_loader(d) for d in self.extra_test.values()]

    def _test_loader(self, dataset: TensorDataset) -> DataLoader:
        """Under DDP each rank tests a disjoint share, so every test sample counts exactly once.

        Lightning's default DistributedSampler pads ranks with repeated samples. Sharded models
        (FSDP) keep that default: their forward is collective, so ranks need equal batch counts.
        """
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1 or "DDP" not in type(trainer.strategy).__name__:
            return self._loader(dataset, False, self.eval_batch_size)
        from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

        sampler = UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False)
        dataset, collate = batched_view(dataset)
        return DataLoader(dataset, batch_size=self.eval_batch_size, sampler=sampler, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0, **collate)

    @property
    def test_set_names(self) -> list[str]:
        return ["test"] + [f"test_shift/{k}" for k in self.extra_test]


def _tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
    """Float inputs become float32; integer inputs (token ids) stay int64."""
    dtype = torch.long if np.issubdtype(x.dtype, np.integer) else torch.float32
    return TensorDataset(torch.as_tensor(np.ascontiguousarray(x), dtype=dtype), torch.as_tensor(y, dtype=torch.long))
