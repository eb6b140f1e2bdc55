"""Root `tags` on every logger: each has them in its hyperparameters (the run config); MLflow also as run tags.

W&B reads them from its preset (`logger.wandb.tags: ${tags}`); the other loggers have no list-of-tags
notion that Lightning exposes, so the logged config is where they find them.
"""

from collections.abc import Sequence
from typing import Any


def tag_loggers(loggers: Sequence[Any], tags: Sequence[str]) -> None:
    for lg in loggers:
        if type(lg).__name__ == "MLFlowLogger":
            for tag in tags:
                lg.experiment.set_tag(lg.run_id, str(tag), "true")
