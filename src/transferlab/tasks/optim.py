"""Optimizer (+ layer-wise LR decay, no decay on biases/norms) and LR schedule from config."""

import math
from typing import Any

import torch
from hydra.utils import get_class
from torch import nn

from transferlab.config.instantiate import DEFAULT_ALLOWED
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
    cfg = dict(cfg)
    target = cfg.pop("_target_")
    if not str(target).startswith(DEFAULT_ALLOWED):
        raise ConfigError("optimizer._target_", target, "a torch.optim optimizer class")
    layer_decay = cfg.pop("layer_decay", None)
    cfg.pop("name", None)
    lr = cfg["lr"]
    groups = param_groups(module, cfg.pop("weight_decay", 0.0), layer_decay)
    if not groups:
        raise ConfigError("peft", "(no trainable parameters)", "a method that leaves at least one parameter trainable")
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return get_class(target)(groups, **cfg)


def lr_lambda(name: str, total_steps: int, warmup_steps: int, min_lr_ratio: float):
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if name == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: dict[str, Any], total_steps: int) -> dict[str, Any]:
    name = cfg.get("name", "constant")
    if name not in ("cosine", "constant"):
        raise ConfigError("scheduler.name", name, "'cosine' or 'constant'")
    warmup = cfg.get("warmup_steps", 0) or int(cfg.get("warmup_fraction", 0.0) * total_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(name, total_steps, warmup, cfg.get("min_lr_ratio", 0.0)))
    return {"scheduler": sched, "interval": "step"}
