"""Stage expansion: a pipeline task (task=transfer) as one config per stage.

Each stage is the root config with the stage's `task` (and `peft`, if given) swapped in and
its other groups (`data`, `trainer`, `optimizer`, ...) merged on top.

Command-line overrides and stage keys (one rule, README "Overrides on a pipeline"):
- `trainer.*` / `optimizer.*` given on the command line apply to every stage, unless that
  stage's own key for it is given on the command line too (`task.pretrain_trainer.max_epochs=5`,
  `task.finetune_optimizer.lr=1e-3`, or `task.stages.<stage>.trainer.max_epochs=5`), which wins there;
- `data.*` keys a stage sets itself (the transfer pipeline's classes and labels_per_class) are
  refused in one line naming the stage keys (`task.source.*`, `task.target.*`): one value for both
  sides would make the transfer meaningless. Other `data.*` keys reach every stage.
- a typed key of a task node that the pipeline's own file has a stage read (`task.target_trainer.*`
  for finetune, linear_probe, scratch) reaches that stage even where an experiment gave it a node of
  its own (mnist1d_mae's `linear_probe.trainer: {max_epochs: 200}`), unless the stage's own key
  (`task.stages.linear_probe.trainer.max_epochs`) is typed too. `init_from: <stage>`
hands that stage's checkpoint to `task.pretrained`: `task.handoff: last` (default) its weights at
the end of training, `best` its best by the stage's `task.monitor`.
"""

from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from transferlab.config.instantiate import DEFAULT_ALLOWED, PEFT_DEFAULT_KEYS, task_kind

REPLACED = ("task", "peft")
# groups whose command-line keys reach every stage (data: refused where a stage sets the key)
FOLLOW_COMMAND_LINE = ("trainer", "optimizer", "data")
STAGE_KEYS = ("init_from", "label", "report")
HANDOFFS = ("last", "best")


def is_pipeline(cfg: DictConfig) -> bool:
    return "stages" in cfg.task


def command_line() -> list[str]:
    """The run's command-line overrides (empty when composed in-process without Hydra's run context)."""
    from transferlab.utils.hydra import task_overrides

    return task_overrides()


def debug_keys() -> set[str]:
    """The `trainer.*`/`optimizer.*`/`data.*` keys a `debug=` option sets (lightning-hydra-template's presets):
    forced like typed overrides, so on a pipeline `debug=fast`'s one epoch beats the stages' own epochs, as it
    does on a single stage. Empty outside a Hydra app or without `debug=`."""
    from transferlab.utils.hydra import hydra_config

    hc = hydra_config()
    choice = hc.runtime.choices.get("debug") if hc is not None else None
    if not choice:
        return set()
    from hydra import compose

    node = OmegaConf.to_container(compose(config_name=f"debug/{choice}"), resolve=False)
    return {f"{group}.{key}" for group in FOLLOW_COMMAND_LINE for key in _flat_keys(node.get(group) or {})}


def _flat_keys(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        keys += _flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return keys


def given_keys(overrides: list[str]) -> set[str]:
    """The keys typed overrides set (`+` dropped; `~key` deletions left out)."""
    keys = set()
    for line in overrides:
        key, sep, _ = str(line).partition("=")
        if sep and not key.startswith("~"):
            keys.add(key.lstrip("+"))
    return keys


def _interpolated(raw) -> str | None:
    """`task.target_trainer` for a stage node written `${task.target_trainer}`, else None."""
    return raw[2:-1] if isinstance(raw, str) and raw.startswith("${") and raw.endswith("}") else None


def written_sources(cfg: DictConfig, name: str) -> dict[str, str]:
    """{group: task node} that the pipeline option's own file has stage `name` read (`trainer:
    ${task.target_trainer}`), where this config gives the stage a node of its own instead
    (experiment=mnist1d_mae's `linear_probe.trainer: {max_epochs: 200, ...}` replaces the interpolation,
    so the stage no longer reads `task.target_trainer`). Empty without Hydra's config search path
    (composed in-process and closed): the option's file is unknown."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from transferlab.utils.hydra import hydra_config

    if not GlobalHydra.instance().is_initialized():
        return {}
    hc = hydra_config()
    option = hc.runtime.choices.get("task") if hc is not None else cfg.task.get("name")
    try:
        written = OmegaConf.to_container(compose(config_name=f"task/{option}"), resolve=False)
    except HydraException:  # a pipeline defined in an experiment file, not a task option
        return {}
    written = written.get("task", written).get("stages", {}).get(name) or {}
    current = OmegaConf.to_container(cfg.task.stages[name], resolve=False)
    return {group: source for group in FOLLOW_COMMAND_LINE if (source := _interpolated(written.get(group)))
            and isinstance(current.get(group), dict)}


def _stage_keys(cfg: DictConfig, stage: str, group: str, rest: str,
                sources: dict[str, str] | None = None) -> list[str]:
    """Where a stage's value for `<group>.<rest>` is set: its own node, and the task key it reads (interpolates,
    or would interpolate but for an experiment's node of its own: `sources`, see `written_sources`)."""
    source = _interpolated(OmegaConf.to_container(cfg.task.stages[stage], resolve=False).get(group))
    source = source or (sources or {}).get(group)
    return [f"task.stages.{stage}.{group}.{rest}", *([f"{source}.{rest}"] if source else [])]


def apply_command_line(cfg: DictConfig, name: str, new: DictConfig, stage: dict, given: set[str],
                       sources: dict[str, str] | None = None) -> None:
    """The module docstring's rule, for one stage: command-line `trainer.*`/`optimizer.*` keys win over the
    stage's own values unless its stage key is given too; `data.*` keys a stage sets are refused. A typed key of
    a task node the stage reads as written by its pipeline (`sources`) wins over the stage's node of its own."""
    from transferlab.errors import ConfigError

    for key in sorted(given):
        group, _, rest = key.partition(".")
        if group not in FOLLOW_COMMAND_LINE or not rest or not isinstance(stage.get(group), dict):
            continue
        if OmegaConf.select(OmegaConf.create(stage[group]), rest, default="__unset__") == "__unset__":
            continue  # this stage does not set the key: the command-line value reaches it through the root
        if any(k in given for k in _stage_keys(cfg, name, group, rest, sources)):
            continue  # the stage key given on the command line wins for this stage
        if group == "data":
            options = sorted({_stage_keys(cfg, n, group, rest)[-1] for n in cfg.task.stages
                              if isinstance(cfg.task.stages[n].get(group), DictConfig) and rest in cfg.task.stages[n][group]})
            raise ConfigError(key, OmegaConf.select(cfg, key), f"the pipeline task={cfg.task.name} sets it per stage: "
                              f"set {' / '.join(f'{k}=...' for k in options)} instead")
        OmegaConf.update(new, key, OmegaConf.select(cfg, key), merge=True)
    for group, source in (sources or {}).items():
        for key in sorted(k for k in given if k.startswith(f"{source}.")):
            rest = key[len(source) + 1:]
            if f"task.stages.{name}.{group}.{rest}" not in given:  # the stage's own key, typed too, wins
                OmegaConf.update(new, f"{group}.{rest}", OmegaConf.select(cfg, key), merge=True)


def stage_config(cfg: DictConfig, name: str, out: Path, overrides: list[str] | None = None) -> DictConfig:
    """`overrides`: the command line (default: Hydra's, when running under Hydra)."""
    root = OmegaConf.to_container(cfg, resolve=False)
    raw = root["task"]["stages"][name]
    if "peft" in raw:  # the stage's interpolations (`${oc.select:peft.trainer.max_epochs,60}`) see its own method
        root["peft"] = raw["peft"]
    allowed = tuple(root.get("allowed_targets") or DEFAULT_ALLOWED)
    stage_task = raw.get("task", {})
    if "_target_" in stage_task and task_kind(OmegaConf.create(stage_task), allowed) != "finetune":
        # a pretraining stage adapts nothing: the fine-tuning method's optimizer and trainer defaults are not its own
        for key in PEFT_DEFAULT_KEYS:
            (root.get("peft") or {}).pop(key, None)
    stage = OmegaConf.to_container(OmegaConf.create(root).task.stages[name], resolve=True)
    init_from = stage.pop("init_from", None)
    for key in STAGE_KEYS:
        stage.pop(key, None)
    for key in REPLACED:
        if key in stage:
            root[key] = stage.pop(key)
    new = OmegaConf.merge(OmegaConf.create(root), OmegaConf.create(stage))
    given = given_keys(command_line()) | debug_keys() if overrides is None else given_keys(overrides)
    typed_task_node = any(k.startswith("task.") and not k.startswith("task.stages.") for k in given)
    apply_command_line(cfg, name, new, stage, given, written_sources(cfg, name) if typed_task_node else None)
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
