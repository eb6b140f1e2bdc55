"""Classification over backbone features: shared by supervised pretraining and fine-tuning."""

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.tasks.base import BaseTask
from transferlab.tasks.metrics import classification_metrics


class ClassifierTask(BaseTask):
    """backbone -> linear head; cross-entropy; `train/ val/ test/` acc, f1, loss (+ ece, nll on test)."""

    def __init__(self, *args, label_smoothing: float = 0.0, head_dropout: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_smoothing = label_smoothing
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(self.backbone.feature_dim, self.spec.num_classes))
        self.train_metrics = classification_metrics(self.spec.num_classes)
        self.val_metrics = classification_metrics(self.spec.num_classes)
        self.test_prefixes = ["test"]
        self.test_metrics = nn.ModuleList([classification_metrics(self.spec.num_classes, calibration=True)])

    def set_test_sets(self, prefixes: list[str]) -> None:
        """One metric set per test dataloader (in-distribution first, then shifted sets)."""
        self.test_prefixes = list(prefixes)
        self.test_metrics = nn.ModuleList(classification_metrics(self.spec.num_classes, calibration=True) for _ in prefixes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def _step(self, batch, metrics: nn.ModuleDict, smoothing: float = 0.0) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        metrics["scores"].update(logits.detach(), y)
        plain = loss.detach() if smoothing == 0 else F.cross_entropy(logits.detach(), y)  # the metric is never smoothed
        metrics["loss"].update(plain, weight=y.numel())
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, self.train_metrics, self.label_smoothing)
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

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
