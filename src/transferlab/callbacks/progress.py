"""The progress bar shows what a user watches: the training loss and the monitored metric (`task.monitor`).

Lightning's bar lists every metric logged with `prog_bar=True` (all of val/*) plus `v_num`, which wraps
to four lines in a terminal; this one keeps two numbers.
"""

from typing import Any

from pytorch_lightning.callbacks import RichProgressBar

TRAIN_LOSS = "train/loss_step"


class ProgressBar(RichProgressBar):
    def __init__(self, monitor: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.monitor = monitor

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        shown = super().get_metrics(trainer, pl_module)
        return {key.replace("_step", ""): value for key, value in shown.items() if key in (TRAIN_LOSS, self.monitor)}
