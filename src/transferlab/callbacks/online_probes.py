"""Online evaluation of a representation while it trains: a linear probe and a weighted k-NN.

Both read detached, pooled backbone features and the data's labels; the objective never sees
the labels. The probe lives in a callback (not in the LightningModule), so its weights are not
in the task's state_dict, not in the task's optimizer, and its loss cannot reach the backbone.
"""

from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from transferlab.distributed.world import world_size


def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(inputs, labels or None) from a tuple/list, a dict (`input_ids`/`x`, `labels`/`y`) or a tensor."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, dict):
        x = batch.get("input_ids", batch.get("x"))
        return x, batch.get("labels", batch.get("y"))
    return batch[0], (batch[1] if len(batch) > 1 else None)


@torch.no_grad()
def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, num_classes: int,
                k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Weighted k-NN (Wu et al. 2018): cosine neighbours vote with weight exp(sim / temperature)."""
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    preds = []
    for q in F.normalize(queries.float(), dim=1).split(chunk):
        sim, idx = (q @ bank.T).topk(k, dim=1)
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, bank_labels[idx], (sim / temperature).exp())
        preds.append(votes.argmax(1))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=queries.device)


@torch.no_grad()
def feature_bank(embed: Callable[[torch.Tensor], torch.Tensor], loader: Iterable, device: Any,
                 limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Pooled features and labels of a loader's batches, the first `limit` at most (None: a batch has no labels)."""
    feats, labels, n = [], [], 0
    for batch in loader:
        x, y = split_batch(batch)
        if y is None:
            return None
        feats.append(embed(x.to(device)))
        labels.append(y.to(device))
        n += y.shape[0]
        if limit and n >= int(limit):
            break
    if not feats:
        return None
    f, y = torch.cat(feats), torch.cat(labels)
    return (f[: int(limit)], y[: int(limit)]) if limit else (f, y)


class OnlineProbes(pl.Callback):
    """Trains a linear head on each training batch's detached features (its own optimizer), and at
    every validation/test epoch end logs `<stage>/linear_acc` and `<stage>/knn_acc` (bank: the
    train split's features, `knn.bank_size` at most). Skipped when batches carry no labels.
    """

    def __init__(self, feature_dim: int, num_classes: int, linear: dict[str, Any] | None = None,
                 knn: dict[str, Any] | None = None):
        super().__init__()
        self.linear_cfg = dict(linear or {})
        self.knn_cfg = dict(knn or {})
        self.num_classes = num_classes
        self.head = nn.Linear(feature_dim, num_classes)
        self.optimizer = torch.optim.AdamW(self.head.parameters(), lr=float(self.linear_cfg.get("lr", 1e-3)),
                                           weight_decay=float(self.linear_cfg.get("weight_decay", 0.0)))
        self._feats: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    @property
    def linear_enabled(self) -> bool:
        return bool(self.linear_cfg.get("enabled", True))

    @property
    def knn_enabled(self) -> bool:
        return bool(self.knn_cfg.get("enabled", True))

    # -- the linear probe's own training ----------------------------------------------------
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """One optimizer step of the probe on `features.detach()`; returns its loss."""
        self.head.to(features.device)
        with torch.enable_grad():
            loss = F.cross_entropy(self.head(features.detach().float()), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.head.to(pl_module.device)
        for state in self.optimizer.state.values():  # restored state follows the head's device
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    state[key] = value.to(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        x, y = split_batch(batch)
        if y is None or not self.linear_enabled:
            return
        feats = outputs.get("features") if isinstance(outputs, dict) else None
        if feats is None:
            feats = _features(pl_module, x)
        if world_size() > 1:  # DDP: every rank's batch, so each rank's head takes a single process's steps
            feats, y = pl_module.all_gather(feats.detach()).flatten(0, 1), pl_module.all_gather(y).flatten(0, 1)
        loss = self.update(feats, y)
        pl_module.log("train/linear_loss", loss, on_step=False, on_epoch=True, batch_size=y.shape[0])

    # -- evaluation ---------------------------------------------------------------------------
    def _start(self, *_: Any) -> None:
        self._feats, self._labels = [], []

    on_validation_epoch_start = _start
    on_test_epoch_start = _start

    def _collect(self, pl_module, batch, dataloader_idx: int) -> None:
        x, y = split_batch(batch)
        if y is None or dataloader_idx != 0:
            return
        self._feats.append(_features(pl_module, x))
        self._labels.append(y)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(pl_module, batch, dataloader_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(pl_module, batch, dataloader_idx)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._finish(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer, pl_module, "test")

    def _finish(self, trainer, pl_module, stage: str) -> None:
        if not self._feats:
            return
        feats, labels = torch.cat(self._feats), torch.cat(self._labels)
        values = {}
        if self.linear_enabled:
            with torch.no_grad():
                self.head.to(feats.device)
                values[f"{stage}/linear_acc"] = accuracy_over_ranks(pl_module, self.head(feats.float()).argmax(1) == labels)
        if self.knn_enabled:
            bank = self.bank(trainer, pl_module)
            if bank is not None:
                pred = knn_predict(*bank, feats, self.num_classes, int(self.knn_cfg.get("k", 20)),
                                   float(self.knn_cfg.get("temperature", 0.07)))
                values[f"{stage}/knn_acc"] = accuracy_over_ranks(pl_module, pred == labels)
        if values:  # the same value on every rank (accuracy_over_ranks counted all of them)
            pl_module.log_dict(values, add_dataloader_idx=False)
        self._start()

    def bank(self, trainer, pl_module) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Features and labels of the training split (un-augmented, eval mode); under DDP all of it on every rank."""
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "train_dataloader"):
            return None
        loader = dm.bank_dataloader() if hasattr(dm, "bank_dataloader") else dm.train_dataloader()
        return feature_bank(lambda x: _features(pl_module, x), loader, pl_module.device, self.knn_cfg.get("bank_size"))

    # -- checkpointed with the run, so a resumed run keeps its probe ----------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.head.load_state_dict(state_dict["head"])
        self.optimizer.load_state_dict(state_dict["optimizer"])


def accuracy_over_ranks(pl_module: pl.LightningModule, hits: torch.Tensor) -> torch.Tensor:
    """Hits / samples summed over every rank: DDP test shards differ in size, so a mean of means is off."""
    counts = torch.stack([hits.sum().float(), torch.tensor(float(hits.numel()), device=hits.device)])
    if world_size() > 1:
        counts = pl_module.all_gather(counts).sum(0)
    return counts[0] / counts[1]


@torch.no_grad()
def _features(pl_module: pl.LightningModule, x: torch.Tensor) -> torch.Tensor:
    """Pooled features of clean inputs, without gradients (the task's `probe_features`)."""
    fn = getattr(pl_module, "probe_features", None) or pl_module.backbone
    return fn(x).detach()
