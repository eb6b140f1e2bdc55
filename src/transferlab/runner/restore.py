"""The one way back from a file to a model: eval, knn, generate, export, predict and serve rebuild through here.

A checkpoint (or adapter file) is read as tensors and plain containers only (weights-only
`torch.load`); the model is rebuilt from the run config stored in it, and only `_target_`s that
*this* run's `allowed_targets` allow are instantiated — a file can never widen them. The stored
config must fit a known-safe schema (`check_stored_config`): only the sections a model needs, each
a plain dict whose one `_target_` (at its top, no nested ones, no `_args_`, no `${...}`) resolves
to the kind of object that section builds (a Backbone, a task, an Adaptation, an optimizer, ...), and
take only the keys that object takes (the check typed configs pass). The model is built on PyTorch's
meta device first and checked against the file's tensors, so sizes the weights do not have are refused
before anything is allocated. One mismatch message (`utils.checkpoint.check_state_matches`).
"""

import contextlib
from collections.abc import Iterator
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
    hparams = ckpt.get("hyper_parameters")
    stored = ckpt.get("config") if is_adapter_file(ckpt) else hparams.get("config") if isinstance(hparams, dict) else None
    if not isinstance(stored, dict) or any(not isinstance(stored.get(key), dict) for key in needs):
        raise CheckpointError(f"{file} carries no transferlab run config with {list(needs)} "
                              "(hyper_parameters.config): was it written by transferlab.train?")
    return file, ckpt, stored


# what the top `_target_` of each stored section must resolve to (checked after the allowed_targets gate)
SECTION_KINDS = {
    "model": ("transferlab.backbones.base", "Backbone"),
    "task": ("pytorch_lightning", "LightningModule"),
    "peft": ("transferlab.adaptation.base", "Adaptation"),
    "optimizer": ("torch.optim", "Optimizer"),
    "scheduler": ("torch.optim.lr_scheduler", "LRScheduler"),  # or a function (a `_partial_` factory)
    "data": ("pytorch_lightning", "LightningDataModule"),
}
SECTION_META = {"_target_", "_partial_"}
# keys that make a library run code or unpickle (Hugging Face's from_pretrained: a model folder's own Python,
# pickled weights): a file may not switch them on, at any depth; the weights come from the file's tensors
RUNS_CODE = ("trust_remote_code", "weights_only", "code_revision")
PLAIN = (str, int, float, bool, type(None))


def _plain_values(node: Any, where: str, file: Path) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str) or key.startswith("_"):
                raise CheckpointError(f"{file}: stored config key {where}.{key} is refused (a file's config may carry "
                                      "no _target_, _args_ or other instantiation keys below a section's top)")
            if key in RUNS_CODE:
                raise CheckpointError(f"{file}: stored config key {where}.{key} is refused (a file may not switch on "
                                      f"loading code or pickles: {', '.join(RUNS_CODE)}); the weights come from its tensors")
            _plain_values(value, f"{where}.{key}", file)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _plain_values(value, f"{where}[{i}]", file)
    elif not isinstance(node, PLAIN):
        raise CheckpointError(f"{file}: stored config {where} holds a {type(node).__name__}, not a plain value")
    elif isinstance(node, str) and "${" in node:
        raise CheckpointError(f"{file}: stored config {where}={node!r} is refused (no interpolation from a file)")


def check_stored_config(stored: dict[str, Any], sections: tuple[str, ...], allowed: tuple[str, ...], file: Path) -> None:
    """A file's config fits the known-safe schema before anything in it is imported or instantiated."""
    import importlib

    from transferlab.config.instantiate import resolve_target
    from transferlab.errors import ConfigError

    for section in sections:
        node = stored.get(section)
        if node is None and section not in ("model", "task"):
            continue
        if not isinstance(node, dict):
            raise CheckpointError(f"{file}: stored config section '{section}' is not a config (a {type(node).__name__})")
        for key, value in node.items():
            if key.startswith("_") and key not in SECTION_META or key == "_partial_" and section != "scheduler":
                raise CheckpointError(f"{file}: stored config key {section}.{key} is refused (only _target_, and "
                                      "_partial_ in the scheduler)")
            if key not in SECTION_META:
                _plain_values({key: value}, section, file)
        if "_target_" not in node and section not in ("model", "task", "data"):
            continue  # plain settings (an older layout's scheduler): nothing is instantiated from them
        if not isinstance(node.get("_target_"), str):
            raise CheckpointError(f"{file}: stored config section '{section}' has no _target_ string")
        try:
            obj = resolve_target(node["_target_"], allowed, f"{section}._target_")
        except ConfigError as e:
            raise CheckpointError(f"{file}: stored config {e} (a checkpoint never widens allowed_targets)") from None
        module, name = SECTION_KINDS[section]
        kind = getattr(importlib.import_module(module), name)
        fits = isinstance(obj, type) and issubclass(obj, kind)
        if section == "scheduler" and not isinstance(obj, type):
            fits = callable(obj)
        if not fits:
            raise CheckpointError(f"{file}: stored config {section}._target_={node['_target_']!r} is refused: "
                                  f"it is not a {module}.{name}")
        if section != "data":  # a caller's `data` may replace it; the datamodules refuse unknown keys themselves
            _check_stored_keys(node, section, allowed, file)


def _check_stored_keys(node: dict[str, Any], section: str, allowed: tuple[str, ...], file: Path) -> None:
    """Only keys the section's target takes, as for a typed config (`config.validate.check_unknown_keys`): a
    backbone's `**_` would otherwise drop a file's `model.hiddn: 64` (or any key it does not read) silently."""
    from transferlab.config.validate import check_unknown_keys
    from transferlab.errors import ConfigError

    try:
        check_unknown_keys(OmegaConf.create({section: node, "allowed_targets": list(allowed)}), section)
    except ConfigError as e:
        raise CheckpointError(f"{file}: stored config {e}") from None


def restore_datamodule_state(datamodule: Any, ckpt: dict[str, Any], file: Path | str = "the checkpoint") -> None:
    """Give a datamodule the state its class saved in the checkpoint (the training run's normalization).

    Non-finite statistics (NaN/inf mean or std) are refused: they turn every input into NaN.
    """
    saved = ckpt.get(type(datamodule).__qualname__)
    if isinstance(saved, dict) and hasattr(datamodule, "load_state_dict"):
        bad = _non_finite(saved)
        if bad:
            raise CheckpointError(f"{file}: the saved data state {type(datamodule).__qualname__}.{bad} is not finite "
                                  "(NaN/inf normalization statistics would make every prediction meaningless)")
        _check_scale(saved, f"the saved data state {type(datamodule).__qualname__}", file)
        datamodule.load_state_dict(saved)


def _check_scale(state: dict[str, Any], what: str, file: Path | str) -> None:
    """`normalization` = (mean, std): a std that is not positive divides every input by zero (or flips its sign)."""
    import torch

    norm = state.get("normalization")
    if not isinstance(norm, (list, tuple)) or len(norm) != 2:
        return
    std = norm[1]
    values = std.flatten().tolist() if isinstance(std, torch.Tensor) else std if isinstance(std, (list, tuple)) else [std]
    if any(isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0 for v in values):
        raise CheckpointError(f"{file}: {what}.normalization's std {std if not isinstance(std, torch.Tensor) else values} "
                              "is not positive (every input would be divided by zero or flipped): not a trained run's")


def _non_finite(node: Any, where: str = "") -> str | None:
    import math

    import torch

    if isinstance(node, dict):
        for k, v in node.items():
            bad = _non_finite(v, f"{where}.{k}" if where else str(k))
            if bad:
                return bad
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            bad = _non_finite(v, f"{where}[{i}]")
            if bad:
                return bad
    elif isinstance(node, torch.Tensor) and node.is_floating_point():
        return None if bool(torch.isfinite(node).all()) else where
    elif isinstance(node, float):
        return None if math.isfinite(node) else where
    return None


def _datamodule(build_cfg: DictConfig, ckpt: dict[str, Any], stage: str, file: Path) -> Any:
    datamodule = build_datamodule(build_cfg)
    restore_datamodule_state(datamodule, ckpt, file)
    datamodule.setup(stage)
    return datamodule


def _build_config(stored: dict[str, Any], allowed_targets: list[str], data: Any, sections: tuple[str, ...]) -> DictConfig:
    node = {k: stored[k] for k in sections if k in stored}
    if isinstance(node.get("model"), dict) and node["model"].get("pretrained"):
        # the file's tensors are the weights: never fetch or unpickle the pretrained ones its run started from
        node["model"] = {**node["model"], "pretrained": False}
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
    # the stored data section is checked even when `data` is given: eval's `+data.key=v` merges into it
    check_stored_config(stored, MODEL_SECTIONS + (("data",) if isinstance(stored.get("data"), dict) else ()),
                        tuple(allowed_targets), file)
    cfg = _build_config(stored, allowed_targets, data, MODEL_SECTIONS)
    datamodule = _datamodule(cfg, ckpt, stage, file)
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
    if preprocessing is None and not isinstance(stored.get("data"), dict):
        raise CheckpointError(f"{file} stores neither its preprocessing nor a data config to rebuild it from")
    check_stored_config(stored, MODEL_SECTIONS + (("data",) if preprocessing is None else ()), tuple(allowed_targets), file)
    cfg = _build_config(stored, allowed_targets, None, MODEL_SECTIONS)
    datamodule = None
    if preprocessing is None:
        datamodule = _datamodule(cfg, ckpt, "fit", file)
        preprocessing = datamodule.preprocessing()
    spec = _stored_spec(preprocessing, file)
    task = _task(cfg, file, ckpt, stored, spec, pretrained)
    return Restored(file, ckpt, stored, datamodule, task=task, backbone=task.backbone, preprocessing=preprocessing)


def adopt_checkpoint_tokenizer(datamodule: Any, checkpoint: str | Path | None, settings: Any = None) -> None:
    """Text read for a model that has weights already (`checkpoint`: the one a run resumes or tests, else
    `task.pretrained`, a pipeline's hand-off included) goes through that checkpoint's tokenizer, before `setup`:
    training a tokenizer is not deterministic upstream (huggingface/tokenizers#1794), so one trained here on the
    same corpus (another machine, a cleared cache) could give ids other than those the weights learned, silently.

    `settings` (a fine-tune's `data.tokenizer`) that differ from those the checkpoint's tokenizer was trained
    with would do nothing: refused, naming the key."""
    if not checkpoint or not hasattr(datamodule, "use_tokenizer"):
        return
    ckpt = load_checkpoint(checkpoint)
    state = (stored_preprocessing(ckpt) or {}).get("tokenizer")
    if not isinstance(state, dict):
        return
    stored = (((ckpt.get("hyper_parameters") or {}).get("config") or {}).get("data") or {}).get("tokenizer")
    if isinstance(settings, DictConfig):
        settings = OmegaConf.to_container(settings, resolve=True)
    if isinstance(settings, dict) and isinstance(stored, dict):
        for key in sorted(set(settings) & set(stored)):  # a key only one side knows: another version, not a choice
            if settings.get(key) != stored.get(key):
                from transferlab.errors import ConfigError

                raise ConfigError(f"data.tokenizer.{key}", settings.get(key),
                                  f"task.pretrained={checkpoint} brings its own tokenizer (trained with {key}="
                                  f"{stored.get(key)!r}), which this fine-tune reads its data with: drop the key, or "
                                  "pretrain with it")
    datamodule.use_tokenizer(state)


def stored_preprocessing(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The datamodule's `preprocessing` state saved in a checkpoint (under its class name) or file, if any."""
    if isinstance(ckpt.get("preprocessing"), dict):  # adapter and merged files keep it at the top
        return ckpt["preprocessing"]
    for value in ckpt.values():
        if isinstance(value, dict) and isinstance(value.get("preprocessing"), dict):
            return value["preprocessing"]
    return None


def _stored_spec(preprocessing: dict[str, Any], file: Path) -> Any:
    """The DataSpec a file's preprocessing describes; unknown fields or non-finite statistics are refused."""
    from dataclasses import fields

    from transferlab.data.spec import DataSpec

    spec = preprocessing.get("spec")
    known = {f.name for f in fields(DataSpec)}
    if not isinstance(spec, dict) or not set(spec) <= known or not {"modality", "input_shape", "num_classes"} <= set(spec):
        raise CheckpointError(f"{file}: the stored preprocessing.spec is not a data spec (fields: {sorted(known)})")
    bad = _non_finite(preprocessing)
    if bad:
        raise CheckpointError(f"{file}: the stored preprocessing.{bad} is not finite (NaN/inf statistics would make "
                              "every prediction meaningless)")
    _check_scale(preprocessing, "the stored preprocessing", file)
    try:
        return DataSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})
    except TypeError as e:
        raise CheckpointError(f"{file}: the stored preprocessing.spec does not fit ({e})") from None


@contextlib.contextmanager
def _building_from(file: Path) -> Iterator[None]:
    """Building a model from a file's stored config: a value the builders reject (a size that is a string or
    negative, an unknown keyword) is the file's fault: one line naming it, not a traceback."""
    from transferlab.errors import UserError

    try:
        yield
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the builders raise on a file's values
        cause = e.__cause__ or e  # Hydra wraps the constructor's error
        if isinstance(cause, UserError):  # raised inside a constructor (`_shapes_only`'s parameter count)
            raise cause from None
        raise CheckpointError(f"{file}: its stored config does not build a model ({type(cause).__name__}: "
                              f"{(str(cause).splitlines() or [''])[0][:200]})") from None


@contextlib.contextmanager
def _shapes_only(file: Path, tensors: int) -> Iterator[None]:
    """Build on PyTorch's meta device: parameters and buffers get shapes and dtypes but no memory, so every check
    of a real build runs before one is allocated (a file whose config says `model.hidden: 1500000` over small
    weights took 39 s and 7.7 GB to refuse). Loading tensors into a meta model is a no-op torch warns about.

    A stored config can also ask for many layers (`model.depth: 1000000`): even without memory, building them took
    minutes. Every parameter of a model is a tensor of its file(s) (`tensors`: the checkpoint's, or an adapter
    file's plus its base's), so a build that registers more than twice that many (slack for wrappers that register
    a weight again) is refused as it happens, through torch's public registration hook."""
    import warnings

    import torch
    from torch.nn.modules.module import register_module_parameter_registration_hook

    limit, count = 2 * tensors + 64, [0]

    def counted(module, name, param):
        count[0] += 1
        if count[0] > limit:
            raise CheckpointError(f"{file}: its stored config builds more than {limit} parameters, but the file holds "
                                  f"{tensors} tensors (a size or depth its weights do not have)")

    handle = register_module_parameter_registration_hook(counted)
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter", category=UserWarning)
            yield
    finally:
        handle.remove()


def _tensors_in(ckpt: dict[str, Any], base: str | None = None) -> int:
    """Tensors a checkpoint (its state_dict) or an adapter file holds, plus those of the base it adapts."""

    def count(node: Any) -> int:
        if isinstance(node, dict):
            return sum(count(v) for v in node.values())
        if isinstance(node, (list, tuple)):
            return sum(count(v) for v in node)
        return int(hasattr(node, "shape") and hasattr(node, "dtype"))

    own = count(ckpt.get("state_dict") if isinstance(ckpt.get("state_dict"), dict) else ckpt)
    return own + (count(load_checkpoint(base).get("state_dict") or {}) if base else 0)


def _task(cfg: DictConfig, file: Path, ckpt: dict[str, Any], stored: dict[str, Any], spec: Any, pretrained: str | None) -> Any:
    """Build the task for `spec` and load the file's weights into it (an adapter file onto its pretrained backbone)."""
    from transferlab.adaptation.artifact import is_adapter_file

    base = (pretrained or ckpt.get("pretrained")) if is_adapter_file(ckpt) else None
    with _building_from(file):
        with _shapes_only(file, _tensors_in(ckpt, base)):  # a shape or depth the file's tensors do not have is refused
            _built_task(cfg, file, ckpt, stored, spec, pretrained)
        return _built_task(cfg, file, ckpt, stored, spec, pretrained)


def _built_task(cfg: DictConfig, file: Path, ckpt: dict[str, Any], stored: dict[str, Any], spec: Any,
                pretrained: str | None) -> Any:
    from transferlab.adaptation.artifact import is_adapter_file, load_adapter

    backbone = build_backbone(cfg, spec)
    _pin_peft_targets(cfg, ckpt)
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


# the attribute names peft's tuner layers keep their weights under (LoRA/DoRA, IA3, LoHa, LoKr) and the wrapped layer
PEFT_LAYER_ATTRS = ("base_layer", "lora_", "ia3_", "hada_", "lokr_")


def _pin_peft_targets(cfg: DictConfig, ckpt: dict[str, Any]) -> None:
    """`peft.target_modules: null` means the backbone's *current* default targets, which may have changed since
    the file was written (issue 21 added the transformer's patch_embed): rebuild on the layers the file's own
    weights wrap. Names are read from tensor keys only; they still pass `resolve_targets`' check."""
    peft = cfg.get("peft")
    if not isinstance(peft, DictConfig) or "target_modules" not in peft or peft.target_modules is not None:
        return
    state = ckpt.get("state_dict") or {}  # a checkpoint's or an adapter file's tensors
    targets = set()
    for key in state:
        parts = str(key).split(".")
        for i, part in enumerate(parts[1:], start=1):
            if part.startswith(PEFT_LAYER_ATTRS):
                targets.add(parts[i - 1])
                break
    if targets:
        peft.target_modules = sorted(targets)


def restore_backbone(path: str | Path, allowed_targets: list[str], data: Any = None, stage: str = "fit") -> Restored:
    """Only the pretrained backbone of a checkpoint (any task), with a datamodule (`data`, else the stored one)."""
    file, ckpt, stored = open_checkpoint(path, needs=("model",))
    if data is None and not isinstance(stored.get("data"), dict):
        raise CheckpointError(f"{file} stores no data config: pass data=<option>")
    check_stored_config(stored, ("model",) + (("data",) if isinstance(stored.get("data"), dict) else ()), tuple(allowed_targets), file)
    cfg = _build_config(stored, allowed_targets, data, ("model",))
    datamodule = _datamodule(cfg, ckpt, stage, file)
    with _building_from(file):
        with _shapes_only(file, _tensors_in(ckpt)):  # as in `_task`: checked against a backbone without memory first
            load_backbone(build_backbone(cfg, datamodule.spec), file, ckpt)
        backbone = build_backbone(cfg, datamodule.spec)
    load_backbone(backbone, file, ckpt)
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
