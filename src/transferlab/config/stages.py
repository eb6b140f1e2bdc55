"""Stage expansion: a pipeline task (task=transfer) as one config per stage.

Each stage is the root config with the stage's `task` (and `peft`, if given) swapped in and
its other groups (`data`, `trainer`, `optimizer`, ...) merged on top. `init_from: <stage>`
hands that stage's checkpoint to `task.pretrained`: `task.handoff: last` (default) its weights at
the end of training, `best` its best by the stage's `task.monitor`.
"""

from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

REPLACED = ("task", "peft")
STAGE_KEYS = ("init_from", "label", "report")
HANDOFFS = ("last", "best")


def is_pipeline(cfg: DictConfig) -> bool:
    return "stages" in cfg.task


def stage_config(cfg: DictConfig, name: str, out: Path) -> DictConfig:
    stage = OmegaConf.to_container(cfg.task.stages[name], resolve=True)
    root = OmegaConf.to_container(cfg, resolve=False)
    init_from = stage.pop("init_from", None)
    for key in STAGE_KEYS:
        stage.pop(key, None)
    for key in REPLACED:
        if key in stage:
            root[key] = stage.pop(key)
    new = OmegaConf.merge(OmegaConf.create(root), OmegaConf.create(stage))
    new.paths.output_dir = str(out / name)
    if init_from:
        new.task.pretrained = str(out / init_from / "checkpoints" / f"{handoff(cfg)}.ckpt")
    return new


def handoff(cfg: DictConfig) -> str:
    """Which checkpoint of a stage the stages that `init_from` it start from (`task.handoff`)."""
    from transferlab.errors import ConfigError

    value = cfg.task.get("handoff", "last")
    if value not in HANDOFFS:
        raise ConfigError("task.handoff", value, " or ".join(HANDOFFS))
    return value


def stages(cfg: DictConfig) -> Iterator[tuple[str | None, DictConfig]]:
    """(stage name, its config) for each stage of a pipeline; (None, cfg) for a single-stage run."""
    if is_pipeline(cfg):
        for name in cfg.task.stages:
            yield name, stage_config(cfg, name, Path(str(cfg.paths.output_dir)))
    else:
        yield None, cfg
