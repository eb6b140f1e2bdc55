"""Loggers whose package (or service) transferlab does not install: a missing one is one line, before any work.

`check_logger_packages(cfg)` runs in the pre-flight; `aim_logger` and `neptune_logger` are the presets'
targets (their classes live in the tools' own packages, outside `allowed_targets`, and Lightning 2.6
dropped its NeptuneLogger), imported only when used; `mlflow_logger` allows MLflow's local file store.
"""

import importlib
import importlib.util
import os
from typing import Any

from omegaconf import DictConfig

from transferlab.errors import ConfigError

# a logger `_target_` -> (the module it needs, what to pip install)
REQUIRES = {
    "transferlab.tracking.external_loggers.mlflow_logger": ("mlflow", "mlflow-skinny"),
    "pytorch_lightning.loggers.MLFlowLogger": ("mlflow", "mlflow-skinny"),
    "pytorch_lightning.loggers.CometLogger": ("comet_ml", "comet-ml"),
    "pytorch_lightning.loggers.TensorBoardLogger": ("tensorboard", "tensorboard"),
    "transferlab.tracking.wandb_logger.WandbLogger": ("wandb", "wandb"),
    "transferlab.tracking.external_loggers.aim_logger": ("aim", "aim"),
    "transferlab.tracking.external_loggers.neptune_logger": ("neptune", "neptune"),
}


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ValueError:  # a module imported without a spec (test doubles)
        return False


def check_logger_packages(cfg: DictConfig) -> None:
    """Every configured logger's package is importable, else one line naming the preset and the pip command."""
    for key, node in (cfg.get("logger") or {}).items():
        if node is None or "_target_" not in node:
            continue
        module, pip_name = REQUIRES.get(str(node._target_), (None, None))
        if module and _missing(module):
            raise ConfigError(f"logger.{key}", str(node._target_),
                              f"needs the '{module}' package (pip install {pip_name}), or choose another logger")


def _import(module: str, pip_name: str, preset: str, needs: str | None = None):
    """`module`, once `needs` (default: its top package) is importable; else one line naming the pip command."""
    needs = needs or module.split(".")[0]
    if _missing(needs):
        raise ConfigError("logger", preset, f"needs the '{needs}' package (pip install {pip_name})")
    return importlib.import_module(module)


def aim_logger(**kwargs: Any):
    """Aim's own Lightning logger (`aim.pytorch_lightning.AimLogger`)."""
    return _import("aim.pytorch_lightning", "aim", "aim").AimLogger(**kwargs)


def neptune_logger(**kwargs: Any):
    """Neptune's own Lightning integration (`neptune.integrations.pytorch_lightning.NeptuneLogger`)."""
    return _import("neptune.integrations.pytorch_lightning", "neptune", "neptune").NeptuneLogger(**kwargs)


def mlflow_logger(**kwargs: Any):
    """Lightning's MLFlowLogger. A `file:` tracking URI (the preset's offline default) is a choice the user made:
    MLflow 3 refuses its file store unless MLFLOW_ALLOW_FILE_STORE=true, so this sets it (unless already set)."""
    if str(kwargs.get("tracking_uri") or "").startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    loggers = _import("pytorch_lightning.loggers", "mlflow-skinny", "mlflow", needs="mlflow")
    from mlflow.tracking import MlflowClient

    # a fresh store has no experiment yet; creating it here spares every run Lightning's "not found" warning
    client, name = MlflowClient(tracking_uri=kwargs.get("tracking_uri")), kwargs.get("experiment_name", "lightning_logs")
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name, artifact_location=kwargs.get("artifact_location"))
    return loggers.MLFlowLogger(**kwargs)
