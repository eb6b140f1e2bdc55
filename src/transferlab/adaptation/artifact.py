"""The adapter-only file: what fine-tuning changed (trainable tensors + backbone buffers), small.

It is a plain dict of tensors and containers, so `torch.load(weights_only=True)` reads it.
Reloading needs the same pretrained backbone and `peft` config (both recorded in the file).
"""

from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferlab.errors import CheckpointError
from transferlab.utils.checkpoint import check_state_matches, load_checkpoint
from transferlab.utils.io import atomic_open

FORMAT = "transferlab-adapter/1"
FILENAME = "adapter.pt"


def adapter_state(task: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters (adapter, head, and whatever the method unfroze) plus the backbone's
    buffers (e.g. BatchNorm statistics, which move in train mode even when weights are frozen)."""
    state = {n: p.detach().cpu().clone() for n, p in task.named_parameters() if p.requires_grad}
    backbone = task.backbone
    params = {n for n, _ in backbone.named_parameters()}
    for n, t in backbone.state_dict().items():
        if n not in params:
            state[f"backbone.{n}"] = t.detach().cpu().clone()
    return state


def save_adapter(task: nn.Module, path: str | Path) -> Path:
    pretrained = getattr(task, "pretrained", None)
    config = dict(getattr(task, "hparams", {}).get("config", {}) or {})
    payload: dict[str, Any] = {
        "format": FORMAT,
        "state_dict": adapter_state(task),
        "peft": getattr(getattr(task, "adaptation", None), "name", None),
        "pretrained": str(Path(pretrained).resolve()) if pretrained else None,
        "config": config,
    }
    datamodule = getattr(getattr(task, "_trainer", None), "datamodule", None)
    if hasattr(datamodule, "preprocessing"):  # what predict/serve/export need to read new inputs
        payload["preprocessing"] = datamodule.preprocessing()
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)
    return Path(path)


def is_adapter_file(ckpt: dict[str, Any]) -> bool:
    return ckpt.get("format") == FORMAT


def load_adapter(task: nn.Module, path: str | Path) -> nn.Module:
    """Load an adapter file onto a task built with the same pretrained backbone and `peft` method."""
    ckpt = load_checkpoint(path)
    if not is_adapter_file(ckpt):
        raise CheckpointError(f"{path} is not an adapter file (format {ckpt.get('format')!r}, expected {FORMAT!r})")
    state = ckpt.get("state_dict")
    # every trainable tensor (adapter, head, what the method unfroze) must be in the file: one left out would keep
    # its random initialisation silently (load_state_dict(strict=False) loads what is there)
    trainable = {n for n, p in task.named_parameters() if p.requires_grad}
    check_state_matches(task.state_dict(), state, path, f"this model (peft={ckpt.get('peft')!r} in the file)",
                        strict=False, required=trainable)
    task.load_state_dict(state, strict=False)
    return task
