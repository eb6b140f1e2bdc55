"""Optimizer (+ layer-wise LR decay, no decay on biases/norms) and LR schedule from config."""

import inspect
import math
from typing import Any

import torch
from hydra.utils import get_class, get_object
from torch import nn

from transferlab.errors import ConfigError

NO_DECAY_SUFFIXES = ("bias", "cls_token", "pos_embed")


def param_groups(module: nn.Module, weight_decay: float, layer_decay: float | None) -> list[dict[str, Any]]:
    """Trainable params grouped by (lr scale, weight decay).

    With `layer_decay`, a backbone parameter at depth i of n gets lr * layer_decay**(n - i),
    so the stem learns slowest and heads (everything outside `module.backbone`) at full lr.
    """
    backbone = getattr(module, "backbone", None)
    depth = getattr(backbone, "num_layers", None) if layer_decay else None
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        wd = 0.0 if p.ndim <= 1 or name.endswith(NO_DECAY_SUFFIXES) else weight_decay
        scale = 1.0
        if depth and name.startswith("backbone."):
            inner = name[len("backbone."):]
            scale = layer_decay ** (depth - backbone.block_of(_base_name(inner)))
        groups.setdefault((scale, wd), []).append(p)
    return [{"params": ps, "lr_scale": s, "weight_decay": wd} for (s, wd), ps in groups.items()]


def _base_name(name: str) -> str:
    """Strip wrapper prefixes that peft adds (base_model.model.) so depth lookup sees backbone names."""
    for prefix in ("base_model.model.",):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def build_optimizer(module: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """The `optimizer` node's `_target_` (checked against `allowed_targets` by the run) over `param_groups`."""
    cfg = dict(cfg)
    target = cfg.pop("_target_")
    layer_decay = cfg.pop("layer_decay", None)
    cfg.pop("name", None)
    lr = cfg["lr"]
    groups = param_groups(module, cfg.pop("weight_decay", 0.0), layer_decay)
    if not groups:
        raise ConfigError("peft", "(no trainable parameters)", "a method that leaves at least one parameter trainable")
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return get_class(target)(groups, **cfg)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: dict[str, Any], total_steps: int) -> dict[str, Any]:
    """The `scheduler` node: a `_partial_` torch LR scheduler (or factory) called with the optimizer, and
    with `total_steps` when its signature takes it; stepped every optimizer step."""
    cfg = {k: v for k, v in cfg.items() if k != "name"}
    factory = get_object(cfg.pop("_target_"))
    cfg.pop("_partial_", None)
    if "total_steps" in inspect.signature(factory).parameters:
        cfg["total_steps"] = total_steps
    return {"scheduler": factory(optimizer, **cfg), "interval": "step"}


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int | None = None,
                  warmup_fraction: float = 0.0, min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up, then cosine decay to `min_lr_ratio` x each group's lr (torch's LinearLR + LambdaLR).

    torch's CosineAnnealingLR takes one absolute `eta_min` for every group; with layer-wise lr decay the
    floor must be relative to each group's own lr, hence the LambdaLR.
    """
    warmup = warmup_steps_of(total_steps, warmup_steps, warmup_fraction)
    span = max(1, total_steps - warmup)

    def cosine(step: int) -> float:
        progress = min(1.0, step / span)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    return _with_warmup(optimizer, decay, warmup)


def warmup_constant(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int | None = None,
                    warmup_fraction: float = 0.0) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up, then each group's lr unchanged."""
    warmup = warmup_steps_of(total_steps, warmup_steps, warmup_fraction)
    return _with_warmup(optimizer, torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0), warmup)


def warmup_steps_of(total_steps: int, warmup_steps: int | None, warmup_fraction: float) -> int:
    """`warmup_steps` when set (0 = no warm-up), else `warmup_fraction` of the run's steps."""
    return int(warmup_fraction * total_steps) if warmup_steps is None else int(warmup_steps)


def _with_warmup(optimizer, after, warmup: int):
    if warmup <= 0:
        return after
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup - 1)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, after], milestones=[warmup])
