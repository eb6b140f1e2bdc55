"""What the self-supervised objectives share: the loss loop, seeded evaluation noise, online probes."""

from typing import Any

import torch
from torchmetrics import MeanMetric

from transferlab.callbacks.online_probes import OnlineProbes, split_batch
from transferlab.tasks.base import BaseTask


def probe_switches(probe: Any) -> tuple[bool, bool]:
    """(linear, knn): which online probes `task.probe` switches on (`probe.enabled: false` turns both off)."""
    probe = probe or {}
    if not probe.get("enabled", True):
        return False, False
    return (bool((probe.get("linear") or {}).get("enabled", True)),
            bool((probe.get("knn") or {}).get("enabled", True)))


class SSLTask(BaseTask):
    """A pretraining objective that never reads labels; `probe` (when the data has labels) adds the
    online linear probe and k-NN evaluation (`val/linear_acc`, `val/knn_acc`, and their `test/` twins).

    Subclasses implement `objective(x, generator) -> (loss, weight, features or None)`; `weight` is the
    number of units the loss averages over (examples, masked patches or tokens), so epoch means are exact.
    Validation and test draw their augmentations/masks from a generator seeded by `eval_seed`, so
    `val/loss` is comparable from epoch to epoch.
    """

    kind = "pretrain"

    def __init__(self, *args: Any, probe: dict[str, Any] | None = None, eval_seed: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.eval_seed = eval_seed
        self.probe_cfg = dict(probe or {})
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self._generator: torch.Generator | None = None
        self._probes = None
        if any(probe_switches(self.probe_cfg)) and self.spec.num_classes:  # no head is built for probes that are off
            self._probes = OnlineProbes(self.backbone.feature_dim, self.spec.num_classes,
                                        self.probe_cfg.get("linear"), self.probe_cfg.get("knn"))

    @property
    def probes_run(self) -> bool:
        """Whether the online probes run: one of them is switched on and the data has labels."""
        return self._probes is not None

    def objective(self, x: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        raise NotImplementedError

    def configure_callbacks(self):
        # the same instance at fit and test, so the probe trained during fit is the one tested
        return [self._probes] if self._probes is not None else []

    def probe_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of clean inputs: what the probes and k-NN see."""
        return self.backbone(x)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, _ = split_batch(batch)
        loss, weight, feats = self.objective(x, None)
        self.train_loss.update(loss.detach(), weight=weight)
        out = {"loss": loss, "loss_step": loss.detach()}  # train/loss_step: BaseTask.on_train_batch_end
        if feats is not None:
            out["features"] = feats.detach()
        return out

    def _eval_generator(self, device: torch.device) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(self.eval_seed)
        return g

    def on_validation_epoch_start(self) -> None:
        self._generator = self._eval_generator(self.device)

    def on_test_epoch_start(self) -> None:
        self._generator = self._eval_generator(self.device)

    def _eval_step(self, batch: Any, metric: MeanMetric) -> None:
        x, _ = split_batch(batch)
        loss, weight, _ = self.objective(x, self._generator)
        metric.update(loss.detach(), weight=weight)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.val_loss)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 0:  # shifted test sets are for classifiers; the objective reads the main one
            self._eval_step(batch, self.test_loss)

    @staticmethod
    def epoch_metrics(prefix: str, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """What each epoch logs from the mean loss; causal LM adds perplexity."""
        return {f"{prefix}/loss": loss}

    @classmethod
    def epoch_metric_names(cls, task_cfg: Any) -> list[str]:
        """`epoch_metrics`' names, and with `task.probe` the online probes' (callbacks/online_probes.py;
        they exist only when the data has labels)."""
        val, train = [*cls.epoch_metrics("val", torch.zeros(()))], ["train/loss"]
        linear, knn = probe_switches(task_cfg.get("probe"))
        if linear:
            val, train = [*val, "val/linear_acc"], [*train, "train/linear_loss"]
        if knn:
            val.append("val/knn_acc")
        return val + train

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.train_loss.compute())
        self.train_loss.reset()

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.epoch_metrics("val", self.val_loss.compute()), prog_bar=True)
        self.val_loss.reset()

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.epoch_metrics("test", self.test_loss.compute()), add_dataloader_idx=False)
        self.test_loss.reset()
