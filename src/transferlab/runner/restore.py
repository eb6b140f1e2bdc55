"""The one way back from a file to a model: eval, knn, generate and export rebuild through here.

A checkpoint (or adapter file) is read as tensors and plain containers only (weights-only
`torch.load`); the model is rebuilt from the run config stored in it, and only `_target_`s that
*this* run's `allowed_targets` allow are instantiated — a file can never widen them. One config
check (`stored_config`), one mismatch message (`utils.checkpoint.check_state_matches`).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab.errors import CheckpointError
from transferlab.runner.build import build_backbone, build_datamodule, build_task
from transferlab.utils.checkpoint import (
    check_state_matches,
    load_backbone,
    load_checkpoint,
    resolve_checkpoint,
)

# the sections of a stored run config that describe the model (never callbacks, loggers or trainer)
MODEL_SECTIONS = ("model", "task", "peft", "optimizer", "scheduler")


@dataclass
class Restored:
    file: Path
    checkpoint: dict[str, Any]
    config: dict[str, Any]  # the run config stored in the file
    datamodule: Any
    task: Any = None
    backbone: Any = None
    preprocessing: dict[str, Any] | None = None  # how raw inputs become model inputs (data/base.py `preprocessing`)


def open_checkpoint(path: str | Path, needs: tuple[str, ...] = ("model",)) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """(file, checkpoint dict, stored run config): a run folder or file, read as tensors only."""
    from transferlab.adaptation.artifact import is_adapter_file

    file = resolve_checkpoint(path)
    ckpt = load_checkpoint(file)
    stored = ckpt.get("config") if is_adapter_file(ckpt) else (ckpt.get("hyper_parameters") or {}).get("config")
    if not isinstance(stored, dict) or any(not isinstance(stored.get(key), dict) for key in needs):
        raise CheckpointError(f"{file} carries no transferlab run config with {list(needs)} "
                              "(hyper_parameters.config): was it written by transferlab.train?")
    return file, ckpt, stored


def restore_datamodule_state(datamodule: Any, ckpt: dict[str, Any]) -> None:
    """Give a datamodule the state its class saved in the checkpoint (the training run's normalization)."""
    saved = ckpt.get(type(datamodule).__qualname__)
    if isinstance(saved, dict) and hasattr(datamodule, "load_state_dict"):
        datamodule.load_state_dict(saved)


def _datamodule(build_cfg: DictConfig, ckpt: dict[str, Any], stage: str) -> Any:
    datamodule = build_datamodule(build_cfg)
    restore_datamodule_state(datamodule, ckpt)
    datamodule.setup(stage)
    return datamodule


def _build_config(stored: dict[str, Any], allowed_targets: list[str], data: Any, sections: tuple[str, ...]) -> DictConfig:
    node = {k: stored[k] for k in sections if k in stored}
    if isinstance(data, DictConfig):  # resolved here: its interpolations (${seed}) point into the caller's root
        data = OmegaConf.to_container(data, resolve=True)
    return OmegaConf.create({**node, "allowed_targets": list(allowed_targets),
                             "data": data if data is not None else stored.get("data")})


def restore_task(path: str | Path, allowed_targets: list[str], data: Any = None, stage: str = "test",
                 pretrained: str | None = None) -> Restored:
    """The task of a checkpoint or adapter file with its weights, and a datamodule (`data`, else the stored one).

    An adapter file is loaded onto its pretrained backbone (`pretrained`, else the one recorded in it).
    """

    file, ckpt, stored = open_checkpoint(path, needs=("model", "task"))
    if data is None and not isinstance(stored.get("data"), dict):
        raise CheckpointError(f"{file} stores no data config: pass data=<option>")
    cfg = _build_config(stored, allowed_targets, data, MODEL_SECTIONS)
    datamodule = _datamodule(cfg, ckpt, stage)
    task = _task(cfg, file, ckpt, stored, datamodule.spec, pretrained)
    return Restored(file, ckpt, stored, datamodule, task=task, backbone=task.backbone)


def restore_for_inference(path: str | Path, allowed_targets: list[str], pretrained: str | None = None) -> Restored:
    """The task of a checkpoint or adapter file and the preprocessing its run trained with, for new inputs.

    The model's shapes and the preprocessing come from the datamodule state stored in the checkpoint
    (`preprocessing`), so the training data need not be present; a checkpoint written before that
    state existed sets up its stored data config once to recover it.
    """
    file, ckpt, stored = open_checkpoint(path, needs=("model", "task"))
    preprocessing = stored_preprocessing(ckpt)
    cfg = _build_config(stored, allowed_targets, None, MODEL_SECTIONS)
    datamodule = None
    if preprocessing is None:
        if not isinstance(stored.get("data"), dict):
            raise CheckpointError(f"{file} stores neither its preprocessing nor a data config to rebuild it from")
        datamodule = _datamodule(cfg, ckpt, "fit")
        preprocessing = datamodule.preprocessing()
    from transferlab.data.spec import DataSpec

    spec = DataSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in preprocessing["spec"].items()})
    task = _task(cfg, file, ckpt, stored, spec, pretrained)
    return Restored(file, ckpt, stored, datamodule, task=task, backbone=task.backbone, preprocessing=preprocessing)


def stored_preprocessing(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The datamodule's `preprocessing` state saved in a checkpoint (under its class name) or file, if any."""
    if isinstance(ckpt.get("preprocessing"), dict):  # adapter and merged files keep it at the top
        return ckpt["preprocessing"]
    for value in ckpt.values():
        if isinstance(value, dict) and isinstance(value.get("preprocessing"), dict):
            return value["preprocessing"]
    return None


def _task(cfg: DictConfig, file: Path, ckpt: dict[str, Any], stored: dict[str, Any], spec: Any, pretrained: str | None) -> Any:
    """Build the task for `spec` and load the file's weights into it (an adapter file onto its pretrained backbone)."""
    from transferlab.adaptation.artifact import is_adapter_file, load_adapter

    backbone = build_backbone(cfg, spec)
    if is_adapter_file(ckpt):
        base = pretrained or ckpt.get("pretrained")
        task = build_task(cfg, backbone, spec, config=stored, pretrained=base)
        if not base and any(not p.requires_grad for p in task.parameters()):
            raise CheckpointError(f"{file} comes from a run without task.pretrained (a random backbone): "
                                  "its frozen weights are not in the adapter file; use its last.ckpt instead")
        load_adapter(task, file)
    else:
        task = build_task(cfg, backbone, spec, config=stored, pretrained=None)
        state = ckpt.get("state_dict") or {}
        check_state_matches(task.state_dict(), state, file, "the rebuilt model", _head_hint(task, state, spec, cfg))
        task.load_state_dict(state)
    return task


def restore_backbone(path: str | Path, allowed_targets: list[str], data: Any = None, stage: str = "fit") -> Restored:
    """Only the pretrained backbone of a checkpoint (any task), with a datamodule (`data`, else the stored one)."""
    file, ckpt, stored = open_checkpoint(path, needs=("model",))
    if data is None and not isinstance(stored.get("data"), dict):
        raise CheckpointError(f"{file} stores no data config: pass data=<option>")
    cfg = _build_config(stored, allowed_targets, data, ("model",))
    datamodule = _datamodule(cfg, ckpt, stage)
    backbone = build_backbone(cfg, datamodule.spec)
    load_backbone(backbone, file)
    return Restored(file, ckpt, stored, datamodule, backbone=backbone)


def _head_hint(task: Any, state: dict[str, Any], spec: Any, cfg: DictConfig) -> str:
    """Why a classifier head does not fit: the data has another number of classes than the checkpoint."""
    head = [k for k in state if k.startswith("head.") and k.endswith(".weight")]
    if not head or not hasattr(task, "head"):
        return ""
    trained = int(state[head[-1]].shape[0])
    if trained == spec.num_classes:
        return ""
    name = (cfg.data or {}).get("name") if isinstance(cfg.data, DictConfig) else None
    return f"the checkpoint's head has {trained} classes, data={name} has {spec.num_classes}: set data.classes"


def restore_predictor(path: str | Path, allowed_targets: list[str], pretrained: str | None = None, device: str = "cpu",
                      text_column: str | None = None) -> Any:
    """An `inference.Predictor`: a classifier run's model in eval mode with its stored preprocessing (predict, serve)."""
    import torch

    from transferlab.inference.predictor import Predictor
    from transferlab.inference.preprocess import Preprocessor

    restored = restore_for_inference(path, allowed_targets, pretrained)
    require_classifier(restored)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    preprocessor = Preprocessor(restored.preprocessing)
    if text_column:
        preprocessor.text_column = str(text_column)
    return Predictor(restored.task, preprocessor, device)


def require_classifier(restored: Restored) -> None:
    """predict, serve and the portable exports need a classification head (supervised or fine-tuned runs)."""
    if not hasattr(restored.task, "head"):
        name = (restored.config.get("task") or {}).get("name")
        raise CheckpointError(f"{restored.file} is a task={name} run without a classification head: predict, serve "
                              "and export format=onnx|torchscript need a supervised or fine-tuned run "
                              "(of a pipeline, its finetune/ or linear_probe/ stage folder)")
