"""Classification over backbone features: shared by supervised pretraining and fine-tuning."""

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.tasks.base import BaseTask
from transferlab.tasks.metrics import classification_metrics

TRAIN_METRIC_BATCHES = 32  # training batches per torchmetrics update (see ClassifierTask.training_step)


class ClassifierTask(BaseTask):
    """backbone -> linear head; cross-entropy; `train/ val/ test/` acc, f1, loss (+ ece, nll on test)."""

    def __init__(self, *args, label_smoothing: float = 0.0, head_dropout: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_smoothing = label_smoothing
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(self.backbone.feature_dim, self.spec.num_classes))
        self.train_metrics = classification_metrics(self.spec.num_classes)
        self._train_batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.val_metrics = classification_metrics(self.spec.num_classes)
        self.test_prefixes = ["test"]
        self.test_metrics = nn.ModuleList([classification_metrics(self.spec.num_classes, calibration=True)])

    @classmethod
    def epoch_metric_names(cls, task_cfg: Any) -> list[str]:
        names = [*classification_metrics(2)["scores"].keys(), "loss"]
        return [f"{prefix}/{name}" for prefix in ("val", "train") for name in names]

    def set_test_sets(self, prefixes: list[str]) -> None:
        """One metric set per test dataloader (in-distribution first, then shifted sets)."""
        self.test_prefixes = list(prefixes)
        self.test_metrics = nn.ModuleList(classification_metrics(self.spec.num_classes, calibration=True) for _ in prefixes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def _step(self, batch, metrics: nn.ModuleDict) -> None:
        x, y = batch
        logits = self(x)
        metrics["scores"].update(logits, y)
        metrics["loss"].update(F.cross_entropy(logits, y), weight=y.numel())

    def training_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """The train metrics see every batch, updated once every TRAIN_METRIC_BATCHES batches (and at the
        epoch's end) from the kept predicted labels, targets and losses: a torchmetrics update costs about the
        same for 64 examples as for 2,000, and one per batch was 2 % of a small model's step
        (experiments/benchmarks/RESULTS.md). acc and f1 read only the predicted label, so the result is the same."""
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        plain = loss.detach() if self.label_smoothing == 0 else F.cross_entropy(logits.detach(), y)  # never smoothed
        self._train_batches.append((logits.detach().argmax(-1), y, plain))
        if len(self._train_batches) >= TRAIN_METRIC_BATCHES:
            self._update_train_metrics()
        return {"loss": loss, "loss_step": loss.detach()}  # train/loss_step: BaseTask.on_train_batch_end

    def _update_train_metrics(self) -> None:
        if not self._train_batches:
            return
        preds, targets, losses = zip(*self._train_batches)
        self._train_batches.clear()
        sizes = torch.tensor([len(t) for t in targets], dtype=losses[0].dtype, device=losses[0].device)
        self.train_metrics["scores"].update(torch.cat(preds), torch.cat(targets))
        self.train_metrics["loss"].update(torch.stack(losses), weight=sizes)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, self.val_metrics)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step(batch, self.test_metrics[dataloader_idx])

    def _log_epoch(self, prefix: str, metrics: nn.ModuleDict, prog_bar: bool = False) -> dict[str, torch.Tensor]:
        values = {f"{prefix}/{k}": v for k, v in metrics["scores"].compute().items()}
        values[f"{prefix}/loss"] = metrics["loss"].compute()
        if prefix.startswith("test"):
            values[f"{prefix}/nll"] = values[f"{prefix}/loss"]
            with metrics["loss"].sync_context():  # samples seen by all ranks: the test set's size, each once
                values[f"{prefix}/samples"] = metrics["loss"].weight.clone()
        self.log_dict(values, prog_bar=prog_bar, add_dataloader_idx=False)
        metrics["scores"].reset()
        metrics["loss"].reset()
        return values

    def on_train_epoch_end(self) -> None:
        self._update_train_metrics()
        self._log_epoch("train", self.train_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_metrics, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        shifted = []
        for prefix, metrics in zip(self.test_prefixes, self.test_metrics):
            values = self._log_epoch(prefix, metrics)
            if prefix.startswith("test_shift/"):
                shifted.append(values[f"{prefix}/acc"])
        if shifted:
            self.log("test_shift/mean_acc", torch.stack(shifted).mean(), add_dataloader_idx=False)
