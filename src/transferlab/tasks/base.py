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

    @classmethod
    def epoch_metric_names(cls, task_cfg: Any) -> list[str] | None:
        """The epoch metrics fit logs for this task config (validation first): what `task.monitor` may name
        (config/validate.py). None: not known here (a user's task may log anything)."""
        return None

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_before_batch = self.global_step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Log `train/loss_step` on the steps Lightning writes to the loggers, and only there.

        Lightning writes step values after a batch that stepped the optimizer (not inside an
        `accumulate_grad_batches` window), every `trainer.log_every_n_steps` optimizer steps, when the
        run stops, and on every step under `fast_dev_run`; a value logged on any other batch is dropped
        unwritten, yet each `self.log` call costs ~0.75 ms (Lightning's `_ResultMetric.to`), 2 % of a
        small model's step (experiments/benchmarks/RESULTS.md). After the optimizer step, `global_step`
        is the step number Lightning's logger connector tests; tests/test_conventions.py checks that
        the CSV log equals the one logging every batch. `outputs["loss_step"]` is the loss
        `training_step` returned (Lightning's `outputs["loss"]` is divided by `accumulate_grad_batches`);
        the progress bar reads it too (callbacks/progress.py).
        """
        trainer, every = self.trainer, self.trainer.log_every_n_steps
        stepped = self.global_step > self._step_before_batch
        due = trainer.fast_dev_run or trainer.should_stop or (every > 0 and self.global_step % every == 0)
        if stepped and due and isinstance(outputs, dict) and "loss_step" in outputs:
            self.log("train/loss_step", outputs["loss_step"], on_step=True, on_epoch=False)

    def configure_optimizers(self):
        optimizer = build_optimizer(self, self.optimizer_cfg)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": build_scheduler(optimizer, self.scheduler_cfg, total)}

    def param_counts(self) -> dict[str, float]:
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"params/total": total, "params/trainable": trainable,
                "params/trainable_pct": 100.0 * trainable / max(1, total)}
