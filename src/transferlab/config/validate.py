"""Checks a composed config before any heavy import or data loading; errors name key and valid values."""

from omegaconf import DictConfig, OmegaConf

from transferlab.errors import ConfigError

PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true")


def _positive(cfg: DictConfig, key: str, allow_none: bool = False, integer: bool = False) -> None:
    node, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, node) if node else cfg
    if parent is None or leaf not in parent:
        return
    value = parent[leaf]
    if value is None and allow_none:
        return
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise ConfigError(key, value, f"a positive {'integer' if integer else 'number'}")


def validate_stage(cfg: DictConfig) -> None:
    if not isinstance(cfg.get("seed"), int) or isinstance(cfg.get("seed"), bool):
        raise ConfigError("seed", cfg.get("seed"), "an integer")
    _positive(cfg, "optimizer.lr")
    _positive(cfg, "data.batch_size", integer=True)
    _positive(cfg, "data.labels_per_class", allow_none=True, integer=True)
    frac = cfg.data.get("fraction")
    if frac is not None and not (isinstance(frac, (int, float)) and 0 < frac <= 1):
        raise ConfigError("data.fraction", frac, "a number in (0, 1], or null")
    precision = str(cfg.trainer.get("precision"))
    if precision not in PRECISIONS:
        raise ConfigError("trainer.precision", precision, f"one of {list(PRECISIONS)}")
    if "_target_" in cfg.task and "stages" not in cfg.task:
        from hydra.utils import get_class

        task_cls = get_class(cfg.task._target_)
        kind = getattr(task_cls, "kind", "pretrain")
        if hasattr(task_cls, "validate_config"):  # a task's own pre-flight checks (e.g. masked needs a transformer)
            task_cls.validate_config(cfg)
        if kind != "finetune" and cfg.peft.get("name") not in (None, "full"):
            raise ConfigError("peft", cfg.peft.get("name"),
                              f"task={cfg.task.name} is a pretraining task that trains the whole backbone: use peft=full, or task=finetune")
    if cfg.get("test_ckpt", "last") not in ("last", "best"):
        raise ConfigError("test_ckpt", cfg.get("test_ckpt"), "'last' or 'best'")


def validate(cfg: DictConfig) -> None:
    """Validate a single-stage config, or every stage of a pipeline."""
    if "stages" in cfg.task:
        from pathlib import Path

        from transferlab.pipeline import stage_config

        for name in cfg.task.stages:
            validate_stage(stage_config(cfg, name, Path(str(cfg.paths.output_dir))))
    else:
        validate_stage(cfg)
