"""The progress bar shows what a user watches: the training loss and the monitored metric (`task.monitor`).

The loss is the one of the step the bar is drawn at, read from `training_step`'s output (`loss_step`):
the tasks log `train/loss_step` only on the steps the loggers write (tasks/base.py).

Lightning's bar lists every metric logged with `prog_bar=True` (all of val/*) plus `v_num`, which wraps
to four lines in a terminal; this one keeps two numbers. It also updates at most `refresh_rate` times a
second: Lightning's bar updates its count and metrics on every batch (~0.2 ms each, 0.5 % of a small
model's step here) although it redraws only `refresh_rate` times a second.
"""

import time
from typing import Any

from pytorch_lightning.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    def __init__(self, monitor: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.monitor = monitor
        self._last_update = float("-inf")
        self._train_loss: float | None = None

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        shown = {} if self._train_loss is None else {"train/loss": self._train_loss}
        monitored = super().get_metrics(trainer, pl_module).get(self.monitor)
        return shown if monitored is None else {**shown, self.monitor: monitored}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        """Update the bar when it will next be drawn (every 1/refresh_rate s) and on an epoch's last batch."""
        now = time.monotonic()
        last_batch = batch_idx + 1 >= self.total_train_batches
        if self.is_enabled and (last_batch or now - self._last_update >= 1 / self.refresh_rate):
            self._last_update = now
            if isinstance(outputs, dict) and "loss_step" in outputs:
                self._train_loss = float(outputs["loss_step"])
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
