"""Turn a composed config into objects: datamodule, backbone, task, trainer. No training here."""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab.config.instantiate import (
    CALLBACK_KEYS,
    PEFT_DEFAULT_KEYS,
    TASK_DEFAULT_KEYS,
    check_targets,
    instantiate,
    task_kind,
    to_plain,
)
from transferlab.config.stages import stages
from transferlab.tracking.redact import redact, redact_text

META_KEYS = ("name",)


def allowed_targets(cfg: DictConfig) -> tuple[str, ...]:
    return tuple(cfg.get("allowed_targets") or ())


def _without_meta(node: DictConfig) -> DictConfig:
    node = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    for key in META_KEYS:
        node.pop(key, None)
    return node


def build_datamodule(cfg: DictConfig):
    return instantiate(_without_meta(cfg.data), allowed_targets(cfg))


def build_backbone(cfg: DictConfig, spec):
    return instantiate(_without_meta(cfg.model), allowed_targets(cfg), input_shape=list(spec.input_shape),
                       vocab_size=spec.vocab_size, pad_id=spec.pad_id)


def build_adaptation(peft: DictConfig, allowed: tuple[str, ...]):
    """The `peft` method; its `optimizer` and `trainer` keys hold the method's optimizer and trainer
    defaults (read by those groups' interpolations, see conf/optimizer/adamw.yaml and
    conf/trainer/default.yaml), not constructor arguments."""
    node = OmegaConf.create(OmegaConf.to_container(peft, resolve=True))
    for key in PEFT_DEFAULT_KEYS:
        node.pop(key, None)
    return instantiate(node, allowed)


def build_task(cfg: DictConfig, backbone, spec, config: dict[str, Any] | None = None, pretrained: Any = "config"):
    """The task's LightningModule; fine-tuning tasks also get the `peft` adaptation."""
    allowed = allowed_targets(cfg)
    check_targets(cfg.task, allowed, "task", resolve=True)
    check_targets(cfg.optimizer, allowed, "optimizer", resolve=True)
    check_targets(cfg.scheduler, allowed, "scheduler", resolve=True)
    kwargs: dict[str, Any] = dict(backbone=backbone, spec=spec, optimizer=to_plain(cfg.optimizer),
                                  scheduler=to_plain(cfg.scheduler), run_config=config if config is not None else redact(to_plain(cfg)))
    if task_kind(cfg.task, allowed) == "finetune":
        kwargs["adaptation"] = build_adaptation(cfg.peft, allowed)
        if pretrained != "config":
            kwargs["pretrained"] = pretrained
    task_node = OmegaConf.create(OmegaConf.to_container(cfg.task, resolve=True))
    for key in (*CALLBACK_KEYS, *TASK_DEFAULT_KEYS):
        task_node.pop(key, None)
    return instantiate(task_node, allowed, _partial_=True)(**kwargs)


def build_callbacks(cfg: DictConfig) -> list:
    """Callbacks from the `callbacks` group; progress bars only when `trainer.enable_progress_bar`."""
    nodes = cfg.get("callbacks") or {}
    show_bar = cfg.trainer.get("enable_progress_bar", True)
    return [instantiate(node, allowed_targets(cfg)) for key, node in nodes.items()
            if node is not None and "_target_" in node and (show_bar or "ProgressBar" not in str(node._target_))]


def build_loggers(cfg: DictConfig) -> list:
    """Loggers from the `logger` group, with the root `tags` on each (tracking/tags.py)."""
    from transferlab.tracking.tags import tag_loggers

    nodes = cfg.get("logger") or {}
    loggers = [instantiate(node, allowed_targets(cfg)) for node in nodes.values() if node is not None and "_target_" in node]
    tag_loggers(loggers, [redact_text(str(t)) for t in cfg.get("tags") or []])
    return loggers


def build_trainer(cfg: DictConfig, output_dir: Path, callbacks: list, loggers: list):
    return instantiate(cfg.trainer, allowed_targets(cfg), callbacks=callbacks, logger=loggers or False,
                       default_root_dir=str(output_dir))


def compile_backbone(backbone: Any, enabled: bool) -> Any:
    """`compile: true`: torch.compile the backbone in place (state-dict keys unchanged, so checkpoints hand off)."""
    if enabled:
        backbone.compile()
    return backbone


def dry_build_later_stages(cfg: DictConfig) -> None:
    """Pre-flight for later pipeline stages whose mistakes only data shows (`labels_per_class`,
    `peft.target_modules`): set up their data and build and adapt their backbone, so the error comes
    before the first stage trains rather than after it."""
    from transferlab.errors import ConfigError

    for name, stage in list(stages(cfg))[1:]:
        peft_targets = stage.get("peft") is not None and stage.peft.get("target_modules") is not None
        if stage.data.get("labels_per_class") is None and not peft_targets:
            continue
        try:
            datamodule = build_datamodule(stage)
            datamodule.setup("fit")
            if "_target_" in stage.task and task_kind(stage.task, allowed_targets(stage)) == "finetune" and peft_targets:
                build_adaptation(stage.peft, allowed_targets(stage)).attach(build_backbone(stage, datamodule.spec))
        except ConfigError as e:
            raise ConfigError(e.key, e.value, f"{e.valid} (in pipeline stage '{name}')") from None
