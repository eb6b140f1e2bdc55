"""Reading checkpoints as tensors only, and moving backbone weights between tasks."""

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferlab.errors import CheckpointError


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its checkpoints/last.ckpt; a pipeline's pretrain stage)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for candidate in (p / "checkpoints" / "last.ckpt", p / "pretrain" / "checkpoints" / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{p} is a folder without checkpoints/last.ckpt: pass a checkpoint file or a run folder")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    return p


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with weights_only=True: tensors and plain containers, never code."""
    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(_unpickling_message(p, str(e))) from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError) as e:  # what torch.load raises on junk
        reason = "the file is empty" if p.stat().st_size == 0 else f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        raise CheckpointError(f"{p} is not a readable checkpoint ({reason})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{p} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def _unpickling_message(p: Path, error: str) -> str:
    """torch's weights-only refusal, in one line: which global it would have imported, or that it is not a checkpoint."""
    found = re.search(r"GLOBAL ([\w.]+)", error)
    if found:
        return (f"{p} was refused: loading it would import {found.group(1)} (weights-only loading reads tensors and "
                "plain containers, never code; re-save the checkpoint's tensors only)")
    detail = next((line.strip() for line in error.splitlines() if line.strip().startswith("Unsupported")), "unknown format")
    return f"{p} is not a readable checkpoint (not a torch checkpoint, corrupt, or pickled objects beyond tensors: {detail})"


def backbone_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The `backbone.*` weights of a task checkpoint, or a bare backbone state dict."""
    state = ckpt.get("state_dict", ckpt)
    sub = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if sub:
        return sub
    if state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return dict(state)
    return {}


def load_backbone(backbone: nn.Module, path: str | Path) -> Path:
    """Load pretrained backbone weights; a mismatch names the keys at fault."""
    p = resolve_checkpoint(path)
    state = backbone_state(load_checkpoint(p))
    if not state:
        raise CheckpointError(f"{p} holds no backbone weights (no 'backbone.*' keys in its state_dict)")
    own = backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        if shapes:
            parts.append("shape mismatch " + _few([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shapes]))
        raise CheckpointError(f"{p} does not match model backbone: " + "; ".join(parts)
                              + " (is `model=` the same as when it was pretrained?)")
    backbone.load_state_dict(state)
    return p


def _few(keys: list[str], n: int = 4) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def stored_config(ckpt: dict[str, Any], ckpt_file: Path, needs: tuple[str, ...] = ("model",)) -> dict[str, Any]:
    """The run config a transferlab checkpoint carries (plain containers), with the sections `needs`."""
    stored = (ckpt.get("hyper_parameters") or {}).get("config")
    if not stored or any(key not in stored for key in needs):
        raise CheckpointError(f"{ckpt_file} carries no transferlab run config (hyper_parameters.config): "
                              "was it written by transferlab.train?")
    return stored


def restore_datamodule_state(datamodule: Any, ckpt: dict[str, Any]) -> None:
    """Give a datamodule the state its class saved in the checkpoint (the training run's normalization)."""
    saved = ckpt.get(type(datamodule).__qualname__)
    if isinstance(saved, dict) and hasattr(datamodule, "load_state_dict"):
        datamodule.load_state_dict(saved)
