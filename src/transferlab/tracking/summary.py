"""The run summary (what metrics.json holds) into every logger, each in its own place:

- CSV: `csv/hparams.yaml` gets a `summary:` section beside the run config Lightning writes there;
- TensorBoard: HParams (the run's descriptive keys as hparams, its numbers as metrics), so the
  HParams tab compares runs by test accuracy, trainable %, step time and peak memory;
- W&B (or any logger with `log_summary`): the run summary.
"""

import math
from typing import Any


def _numbers(summary: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in summary.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}


def _descriptions(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if isinstance(v, (str, bool))}


def log_summary(loggers: list, summary: dict[str, Any]) -> None:
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    for lg in loggers:
        if hasattr(lg, "log_summary"):
            lg.log_summary(summary)
        elif isinstance(lg, TensorBoardLogger):
            lg.log_hyperparams(_descriptions(summary), metrics=_numbers(summary))
            lg.save()
        elif isinstance(lg, CSVLogger):
            lg.log_hyperparams({"summary": {k: v for k, v in summary.items() if v is not None}})
            lg.save()
