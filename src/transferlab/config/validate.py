"""Pre-flight checks of a composed config: every mistake the config shows fails here, in one line.

Two passes, cheapest first, over every stage of a pipeline before any stage trains (a third,
which builds data, is `runner.build.dry_build_later_stages`):
1. config only (no torch import): interpolations resolve, schema types and ranges
   (`config/schema.py`), `_target_` allowlist, CPU `devices`;
2. target classes (imports them, still no data): unknown keys of `_target_` nodes, pretraining
   task with a `peft` method, `task.monitor` among the metrics the task logs, GPU `devices`;
"""

import inspect
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from transferlab.config.instantiate import (
    CALLBACK_KEYS,
    PEFT_DEFAULT_KEYS,
    TASK_DEFAULT_KEYS,
    check_targets,
    resolve_target,
    task_kind,
)
from transferlab.config.schema import check_schema
from transferlab.config.stages import stages as expand_stages
from transferlab.errors import ConfigError

# keys a group's node may carry besides its target's constructor arguments (read by build.py / optim.py)
EXTRA_KEYS = {
    "data": {"name"},
    "model": {"name"},
    "task": {"name", *CALLBACK_KEYS, *TASK_DEFAULT_KEYS},  # read by the callbacks config / conf/trainer/*.yaml
    "peft": {"name", *PEFT_DEFAULT_KEYS},  # the method's optimizer / trainer / model defaults (read by conf/optimizer, conf/trainer, conf/model)
    "optimizer": {"name", "layer_decay"},
    "scheduler": {"name"},
}
# groups whose node's own `_target_` is instantiated with its keys as arguments
TARGET_GROUPS = ("data", "model", "task", "peft", "optimizer", "scheduler", "trainer")
# arguments build.py passes itself (a config must not set them)
PASSED_BY_BUILD = {
    "model": {"input_shape", "vocab_size", "pad_id"},
    "task": {"backbone", "spec", "optimizer", "scheduler", "run_config", "adaptation"},
    "trainer": {"callbacks", "logger", "default_root_dir"},
    "scheduler": {"optimizer", "total_steps"},
}
FRAMEWORK_MODULES = ("torch", "pytorch_lightning", "lightning", "lightning_fabric", "builtins")


def _in_stage(name: str | None, fn, cfg: DictConfig) -> None:
    try:
        fn(cfg)
    except ConfigError as e:
        if name is None:
            raise
        raise ConfigError(e.key, e.value, f"{e.valid} (in pipeline stage '{name}')") from None


def check_resolves(cfg: DictConfig) -> None:
    """Every interpolation resolves; the error names the key (not a traceback from deep in a build)."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        if type(e).__name__ == "MissingMandatoryValue":
            raise ConfigError(str(key), "???", f"a value: {key} is required (set {key}=...)") from None
        raise ConfigError(str(key), OmegaConf.select(cfg, str(key), throw_on_resolution_failure=False),
                          f"must resolve ({str(e).splitlines()[0]})") from None


def check_cpu_devices(cfg: DictConfig) -> None:
    """`devices` on CPU are processes: more than the machine's cores is a mistake, not a speed-up."""
    t = cfg.get("trainer") or {}
    devices, accelerator = t.get("devices"), t.get("accelerator", "auto")
    if devices in (None, "auto", -1, "-1"):
        return
    count = _device_count(devices)
    if count is None:
        raise ConfigError("trainer.devices", devices, "a positive integer, a list of device ids, 'auto' or -1")
    if accelerator == "cpu":
        cores = os.cpu_count() or 1
        if count > cores:
            raise ConfigError("trainer.devices", devices, f"at most {cores} on accelerator=cpu (this machine's CPU cores)")


def _device_count(devices) -> int | None:
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return devices if devices > 0 else None
    if isinstance(devices, str):
        parts = [p for p in devices.split(",") if p.strip()]
        if all(p.strip().isdigit() for p in parts) and parts:
            return int(parts[0]) if len(parts) == 1 and "," not in devices else len(parts)
        return None
    try:
        ids = list(devices)
    except TypeError:
        return None
    return len(ids) if ids and all(isinstance(i, int) and i >= 0 for i in ids) else None


def check_paths(cfg: DictConfig) -> None:
    """Checkpoint paths a single run reads must exist (a pipeline's own hand-offs are made as it runs)."""
    for key in ("task.pretrained", "resume"):
        value = OmegaConf.select(cfg, key, default=None)
        if value and value != "auto" and not Path(str(value)).expanduser().exists():
            raise ConfigError(key, value, "an existing checkpoint file or run folder" + (" (or 'auto')" if key == "resume" else ""))


def check_root_typos(cfg: DictConfig) -> None:
    """A root key that is not a known one but is close to one (`+resume_forse=true`) is a typo, not a new key."""
    import difflib

    from transferlab.config.schema import SCHEMA

    known = {k for k in SCHEMA if "." not in k} | set(TARGET_GROUPS) | {"callbacks", "logger", "paths"}
    # a group key typed at the root (`+max_epochs=3`, `+lr=0.1`) is a new root key no code reads
    leaves: dict[str, list[str]] = {}
    for full in SCHEMA:
        if full.count(".") == 1:
            leaves.setdefault(full.split(".", 1)[1], []).append(full)
    for alias, full in (("epochs", "trainer.max_epochs"), ("learning_rate", "optimizer.lr"), ("random_seed", "seed")):
        leaves.setdefault(alias, []).append(full)
    for key in cfg.keys():
        key = str(key)
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.85)
        if close:
            raise ConfigError(key, cfg.get(key), f"not a config key: did you mean '{close[0]}'?")
        near = difflib.get_close_matches(key, sorted(leaves), n=1, cutoff=0.85)
        if near:
            raise ConfigError(key, cfg.get(key), f"not a root config key (no code reads it): did you mean "
                              f"{' or '.join(repr(k) for k in leaves[near[0]])}?")


def validate_config_only(cfg: DictConfig) -> None:
    """Pass 1: what the config alone shows (imports neither torch nor any target)."""
    check_resolves(cfg)
    check_root_typos(cfg)
    check_schema(cfg)
    check_targets(cfg, tuple(cfg.get("allowed_targets") or ()))
    check_cpu_devices(cfg)


def accepted_keys(cls) -> set[str] | None:
    """Constructor argument names of `cls` (or a factory function's arguments), following `**kwargs` up the
    class hierarchy; None = anything."""
    if not isinstance(cls, type):
        try:
            params = inspect.signature(cls).parameters.values()
        except (TypeError, ValueError):
            return None
        if any(p.kind == p.VAR_KEYWORD for p in params):
            return None
        return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names - {"self"}
        if klass.__module__.split(".")[0] in FRAMEWORK_MODULES:
            return names - {"self"}
    return None


def check_unknown_keys(cfg: DictConfig, group: str) -> None:
    node = cfg.get(group)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    cls = resolve_target(node._target_, tuple(cfg.get("allowed_targets") or ()), f"{group}._target_")
    _check_keys(node, group, cls, EXTRA_KEYS.get(group, set()), PASSED_BY_BUILD.get(group, set()))


# groups whose children are named configs, each with its own `_target_` (or null to switch it off)
NAMED_TARGET_GROUPS = ("callbacks", "logger")


def check_nested_unknown_keys(cfg: DictConfig) -> None:
    """Every `_target_` node below the groups (a callback, a logger, a trainer's strategy) has only keys
    its target accepts; a callbacks/logger entry is a config with a `_target_`, or null."""
    allowed = tuple(cfg.get("allowed_targets") or ())
    for group in NAMED_TARGET_GROUPS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        for name, child in node.items_ex(resolve=False):
            if child is not None and not (isinstance(child, DictConfig) and "_target_" in child):
                raise ConfigError(f"{group}.{name}", OmegaConf.to_container(child) if isinstance(child, DictConfig) else child,
                                  f"a {group} config with a _target_, or null to switch it off")

    def walk(node, where: str, top: bool) -> None:
        if isinstance(node, DictConfig):
            if "_target_" in node and not top:
                cls = resolve_target(node._target_, allowed, f"{where}._target_")
                if not _forwards_kwargs(cls):  # e.g. DDPStrategy passes **kwargs on to DistributedDataParallel
                    _check_keys(node, where, cls, set(), set())
            for key, value in node.items_ex(resolve=False):
                walk(value, f"{where}.{key}", False)

    for group in (*TARGET_GROUPS, *NAMED_TARGET_GROUPS):
        node = cfg.get(group)
        if isinstance(node, DictConfig):
            walk(node, group, group in TARGET_GROUPS)


def _forwards_kwargs(cls) -> bool:
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind == p.VAR_KEYWORD for p in params)


def _check_keys(node: DictConfig, where: str, cls, extra: set[str], passed: set[str]) -> None:
    valid = accepted_keys(cls)
    if valid is None:
        return
    valid = (valid | extra) - passed
    for key in node.keys():
        key = str(key)
        if key.startswith("_") or key in valid:
            continue
        import difflib

        close = difflib.get_close_matches(key, sorted(valid), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"{where}.{key}", node.get(key),
                          f"not a key of {getattr(cls, '__name__', cls)}: {hint}valid keys are {sorted(valid)}")


def check_task_peft(cfg: DictConfig) -> None:
    if "_target_" not in cfg.task:
        return
    if task_kind(cfg.task, tuple(cfg.get("allowed_targets") or ())) != "finetune" and cfg.peft.get("name") not in (None, "full"):
        raise ConfigError("peft", cfg.peft.get("name"),
                          f"task={cfg.task.name} is a pretraining task that trains the whole backbone: use peft=full, or task=finetune")


def check_task_own(cfg: DictConfig) -> None:
    """A task class's own pre-flight checks (`validate_config`), e.g. task=masked needs model=transformer."""
    if "_target_" not in cfg.task:
        return
    hook = getattr(resolve_target(cfg.task._target_, tuple(cfg.get("allowed_targets") or ()), "task._target_"),
                   "validate_config", None)
    if hook is not None:
        hook(cfg)


def check_monitor(cfg: DictConfig, probes_run: bool = True) -> None:
    """`task.monitor` names a metric the task logs: checkpointing and early stopping would otherwise fail
    after the first epoch, with Lightning's long error. Skipped when a callback of the user's own (outside
    transferlab and Lightning) is configured, since it may log the metric itself. `probes_run=False`
    (runner/stage.py, once the data is known): an SSL task's online probes do not run, as the data has no labels."""
    monitor = cfg.task.get("monitor")
    if monitor is None or "_target_" not in cfg.task:
        return
    callbacks = cfg.get("callbacks") or {}
    targets = [str(c.get("_target_")) for c in callbacks.values() if isinstance(c, DictConfig)]
    if any(not t.startswith(("transferlab.", "pytorch_lightning.", "lightning.")) for t in targets):
        return
    allowed = tuple(cfg.get("allowed_targets") or ())
    task_cls = resolve_target(cfg.task._target_, allowed, "task._target_")
    if not task_cls.__module__.startswith("transferlab."):  # a user's task (or subclass of ours) may log more
        return
    names = getattr(task_cls, "epoch_metric_names", None)
    task_cfg = cfg.task if probes_run else OmegaConf.merge(cfg.task, {"probe": {"enabled": False}})
    metrics = names(task_cfg) if names else None  # tasks/base.py: None where the task does not know
    if metrics is None or monitor in metrics:
        return
    import difflib

    close = difflib.get_close_matches(str(monitor), metrics, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    why = "" if probes_run else " (the data has no labels, so the online probes do not run)"
    raise ConfigError("task.monitor", monitor, f"a metric task={cfg.task.get('name')} logs each epoch{why}: {hint}"
                      f"one of {', '.join(metrics)}")


def check_model_fits_data(cfg: DictConfig) -> None:
    """Model follows data: token ids need a model with an embedding, tables a model for flat features."""
    from hydra.utils import get_class

    if "_target_" not in cfg.data or "_target_" not in cfg.model:
        return
    data_cls, model_cls = get_class(str(cfg.data._target_)), get_class(str(cfg.model._target_))
    reader = getattr(data_cls, "configured_modality", None)
    modality = reader(cfg.data) if reader is not None else getattr(data_cls, "modality", None)
    fits = getattr(model_cls, "modalities", None)
    if not isinstance(modality, str) or fits is None or modality in fits:
        return
    models = sorted(name for name, cls in _model_options().items() if modality in getattr(cls, "modalities", ()))
    raise ConfigError("model", cfg.model.get("name"), f"data={cfg.data.get('name')} is {modality} data, which "
                      f"model={cfg.model.get('name')} cannot read: use model={' or model='.join(models)}")


def _model_options() -> dict[str, type]:
    """The `model` group's options and their backbone classes, from Hydra's config sources (wherever conf/ is)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import get_class

    hydra = GlobalHydra.instance()
    if not hydra.is_initialized():  # composed in-process and closed: the package's own backbones (one file per option)
        import importlib
        import pkgutil

        import transferlab.backbones as package

        names = [m.name for m in pkgutil.iter_modules(package.__path__) if m.name != "base"]
        return {n: c for n in names for c in vars(importlib.import_module(f"{package.__name__}.{n}")).values()
                if isinstance(c, type) and getattr(c, "modalities", None) is not None and c.__module__.endswith(f".{n}")
                and c.__name__ != "Backbone"}
    loader = hydra.config_loader()
    out = {}
    for name in loader.get_group_options("model"):
        for source in loader.get_sources():
            if not source.is_config(f"model/{name}"):
                continue
            target = source.load_config(f"model/{name}").config.get("_target_")
            try:
                out[name] = get_class(str(target))
            except (ImportError, AttributeError, ValueError):
                pass
            break
    return out


def check_gpu_devices(cfg: DictConfig) -> None:
    t = cfg.trainer
    strategy = t.get("strategy")
    fsdp = "FSDP" in str(strategy.get("_target_", "") if isinstance(strategy, DictConfig) else strategy).upper()
    if fsdp and t.get("accelerator") not in ("gpu", "cuda", "auto"):
        raise ConfigError("trainer.accelerator", t.get("accelerator"),
                          "'gpu' for trainer=fsdp (Lightning's FSDP runs on CUDA GPUs only); on CPU use trainer=ddp_cpu")
    if t.get("accelerator") not in ("gpu", "cuda"):
        return
    import torch

    if torch.backends.mps.is_available():  # Apple GPUs: Lightning's "gpu" means MPS there
        return
    available = torch.cuda.device_count()
    count = _device_count(t.get("devices")) if t.get("devices") not in (None, "auto", -1, "-1") else 1
    if available == 0:
        raise ConfigError("trainer.accelerator", t.get("accelerator"), "'cpu' on this machine (no CUDA GPU is visible)")
    if count and count > available:
        raise ConfigError("trainer.devices", t.get("devices"), f"at most {available} (CUDA GPUs visible on this machine)")


def validate_targets(cfg: DictConfig, pipeline_stage: bool = False) -> None:
    """Pass 2: imports the target classes (torch), loads no data.

    A pipeline's pretraining stage inherits the root `peft` (meant for its fine-tuning stages)
    and ignores it, so the task/peft combination is checked for single runs only.
    """
    check_targets(cfg, tuple(cfg.get("allowed_targets") or ()), resolve=True)
    for group in TARGET_GROUPS:
        check_unknown_keys(cfg, group)
    check_nested_unknown_keys(cfg)
    if not pipeline_stage:
        check_task_peft(cfg)
    check_model_fits_data(cfg)
    check_task_own(cfg)
    check_monitor(cfg)
    check_gpu_devices(cfg)


def check_pipeline_root(cfg: DictConfig, overrides: list[str] | None = None) -> None:
    """What a pipeline would drop: a new root `task.KEY` (each stage's own `task` replaces the root's) and a
    checkpoint file to resume (every stage would load it: only `resume=auto`, per stage, fits a pipeline)."""
    from transferlab.config.stages import command_line, is_pipeline

    if not is_pipeline(cfg):
        return
    for key in ("resume", "ckpt_path"):
        value = cfg.get(key)
        if value not in (None, "auto") and not (key == "resume" and value == ""):
            raise ConfigError(key, value, f"auto or null for the pipeline task={cfg.task.name} (every stage would load "
                              "that one checkpoint); to test a stage's checkpoint use python -m transferlab.eval")
    handed = [str(n) for n in cfg.task.stages if OmegaConf.select(cfg.task.stages[n], "init_from", default=None)]
    if handed and not (cfg.get("callbacks") or {}).get("model_checkpoint"):
        raise ConfigError("callbacks", "none",
                          f"a model_checkpoint for the pipeline task={cfg.task.name}: stages {', '.join(handed)} start from "
                          "another stage's checkpoints/last.ckpt (callbacks=none writes none); keep callbacks=default")
    for override in command_line() if overrides is None else overrides:
        key = override.split("=", 1)[0]
        if key.startswith("+task.") and "." not in key[len("+task."):]:
            name = key[len("+task."):]
            stages = ", ".join(str(s) for s in cfg.task.stages)
            raise ConfigError(f"task.{name}", cfg.task.get(name), f"a key of one stage: task={cfg.task.name} is a "
                              f"pipeline whose stages each have their own task, so a root task.{name} reaches none; "
                              f"set task.stages.<stage>.task.{name}=... (stages: {stages})")


def check_method_defaults_read(cfg: DictConfig, overrides: list[str] | None = None) -> None:
    """A typed `peft.optimizer.*` / `peft.trainer.*` / `peft.model.*` key is a fine-tuning method's default, and a typed
    `task.trainer.*` key a task's, which other groups read through `${oc.select:peft.optimizer.lr,...}`
    (conf/optimizer/adamw.yaml, conf/trainer/*.yaml, conf/model/{transformer,hf}.yaml, a pipeline's stage keys). Where
    nothing in this config reads it (`optimizer=sgd` sets its own lr, `model=cnn` has no pool, `trainer.max_epochs`
    typed beside it replaces the reference), it would do nothing."""
    import re

    from transferlab.config.stages import command_line, given_keys

    typed = given_keys(command_line() if overrides is None else overrides)
    prefixes = (*(f"peft.{section}." for section in PEFT_DEFAULT_KEYS), *(f"task.{section}." for section in TASK_DEFAULT_KEYS))
    keys = sorted(k for k in typed if k.startswith(prefixes))
    if not keys:
        return
    texts: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)
        elif isinstance(node, str):
            texts.append(node)

    collect(OmegaConf.to_container(cfg, resolve=False))
    for key in keys:
        if not any(re.search(re.escape(key) + r"(?![\w.])", text) for text in texts):
            owner, setting = key.split(".", 1)
            whose = "a method's" if owner == "peft" else "a task's"
            raise ConfigError(key, OmegaConf.select(cfg, key), f"read by nothing here: {whose} default that the "
                              f"chosen {setting.split('.')[0]} config does not read (only ${{oc.select:{key},...}} "
                              f"references do); set {setting}=... instead")


def validate(cfg: DictConfig) -> None:
    """Validate a single-stage config, or every stage of a pipeline, each pass over all stages."""
    check_pipeline_root(cfg)
    check_method_defaults_read(cfg)
    try:
        stages = list(expand_stages(cfg))
    except OmegaConfBaseException as e:
        raise ConfigError(str(getattr(e, "full_key", None) or "task.stages"), None,
                          f"must resolve ({str(e).splitlines()[0]})") from None
    for name, stage in stages:
        _in_stage(name, validate_config_only, stage)
    if len(stages) == 1 and stages[0][0] is None:
        check_paths(cfg)
    for name, stage in stages:
        _in_stage(name, lambda c: validate_targets(c, pipeline_stage=name is not None), stage)
