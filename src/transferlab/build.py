"""Turn a composed config into objects: datamodule, backbone, task, trainer. No training here."""

from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from transferlab.config.instantiate import check_targets, instantiate, to_plain
from transferlab.redact import redact

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


def task_kind(task_cfg: DictConfig) -> str:
    return getattr(get_class(task_cfg._target_), "kind", "pretrain")


def build_task(cfg: DictConfig, backbone, spec, config: dict[str, Any] | None = None, pretrained: Any = "config"):
    """The task's LightningModule; fine-tuning tasks also get the `peft` adaptation."""
    allowed = allowed_targets(cfg)
    check_targets(cfg.task, allowed, "task")
    kwargs: dict[str, Any] = dict(backbone=backbone, spec=spec, optimizer=to_plain(cfg.optimizer),
                                  scheduler=to_plain(cfg.scheduler), run_config=config if config is not None else redact(to_plain(cfg)))
    if task_kind(cfg.task) == "finetune":
        kwargs["adaptation"] = instantiate(cfg.peft, allowed)
        if pretrained != "config":
            kwargs["pretrained"] = pretrained
    return instantiate(cfg.task, allowed, _partial_=True)(**kwargs)


def build_callbacks(cfg: DictConfig) -> list:
    """Callbacks from the `callbacks` group; progress bars only when `trainer.enable_progress_bar`."""
    nodes = cfg.get("callbacks") or {}
    show_bar = cfg.trainer.get("enable_progress_bar", True)
    return [instantiate(node, allowed_targets(cfg)) for key, node in nodes.items()
            if node is not None and "_target_" in node and (show_bar or "ProgressBar" not in str(node._target_))]


def build_loggers(cfg: DictConfig) -> list:
    nodes = cfg.get("logger") or {}
    return [instantiate(node, allowed_targets(cfg)) for node in nodes.values() if node is not None and "_target_" in node]


def build_trainer(cfg: DictConfig, output_dir: Path, callbacks: list, loggers: list):
    return instantiate(cfg.trainer, allowed_targets(cfg), callbacks=callbacks, logger=loggers or False,
                       default_root_dir=str(output_dir))
