"""What every task shares: the backbone attribute, optimizer/scheduler wiring, run config."""

from typing import Any

import pytorch_lightning as pl
from torch import nn

from transferlab.data.spec import DataSpec
from transferlab.tasks.optim import build_optimizer, build_scheduler


class BaseTask(pl.LightningModule):
    """Owns `self.backbone` (so `backbone.*` weights move between tasks unchanged).

    `run_config` is the run's resolved config as plain containers; it is stored in the
    checkpoint's hyperparameters so a checkpoint can be rebuilt (eval, export) without
    unpickling anything.
    """

    kind = "pretrain"

    def __init__(self, backbone: nn.Module, spec: DataSpec, optimizer: dict[str, Any], scheduler: dict[str, Any],
                 name: str, run_config: dict[str, Any] | None = None):
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.optimizer_cfg = dict(optimizer)
        self.scheduler_cfg = dict(scheduler)
        self.task_name = name
        self.save_hyperparameters({"config": run_config or {}})

    def configure_optimizers(self):
        optimizer = build_optimizer(self, self.optimizer_cfg)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": build_scheduler(optimizer, self.scheduler_cfg, total)}

    def param_counts(self) -> dict[str, float]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"params/total": total, "params/trainable": trainable,
                "params/trainable_pct": 100.0 * trainable / max(1, total)}
