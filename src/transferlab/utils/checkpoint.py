"""Reading checkpoints as tensors only, and moving backbone weights between tasks."""

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferlab.errors import CheckpointError
from transferlab.utils.file_kind import describe


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its checkpoints/last.ckpt; a pipeline's pretrain stage)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for candidate in (p / "checkpoints" / "last.ckpt", p / "pretrain" / "checkpoints" / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{p} is a folder without checkpoints/last.ckpt: pass a checkpoint file or a run folder")
    if not p.is_file():  # never opened: a symlink to /dev/zero would be read until memory runs out
        what = describe(p)
        raise CheckpointError(f"checkpoint {p} does not exist" if what is None else
                              f"checkpoint {p} is not a regular file but {what}: pass a checkpoint file or a run folder")
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


def check_state_matches(own: dict[str, Any], state: dict[str, Any], source: Path | str, what: str,
                        hint: str = "", strict: bool = True, required: set[str] | None = None) -> None:
    """The one mismatch message: which keys are missing, unexpected, of another shape or dtype kind, or not
    finite (first few of each).

    `strict=False` checks only the keys the file has, plus `required` (an adapter file holds the trainable
    tensors only, and every one of them).
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} does not match {what}: its weights are a {type(state).__name__}, not a dict of tensors")
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"{source} does not match {what}: not tensors {_few(not_tensors)}")
    missing = sorted((set(own) if strict else set(required or ())) - set(state))
    unexpected = sorted(set(state) - set(own))
    common = sorted(set(own) & set(state))
    shapes = [k for k in common if tuple(own[k].shape) != tuple(state[k].shape)]
    # a float weight stored as integers (or complex) would be cast silently by load_state_dict
    kinds = [k for k in common if k not in shapes and _kind(own[k]) != _kind(state[k])]
    # a NaN/inf weight: every prediction through it is NaN (training stops on a non-finite loss before saving one)
    bad = [k for k in common if k not in shapes and state[k].is_floating_point() and not bool(torch.isfinite(state[k]).all())]
    if not (missing or unexpected or shapes or kinds or bad):
        return
    parts = []
    if missing:
        parts.append(f"missing {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected {_few(unexpected)}")
    if shapes:
        parts.append("shape mismatch " + _few([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shapes]))
    if kinds:
        parts.append("dtype mismatch " + _few([f"{k} {state[k].dtype} vs {own[k].dtype}" for k in kinds]))
    if bad:
        parts.append(f"not finite (NaN/inf) {_few(bad)}")
    raise CheckpointError(f"{source} does not match {what}: " + "; ".join(parts) + (f" ({hint})" if hint else ""))


def _kind(t: torch.Tensor) -> str:
    return "complex" if t.is_complex() else "float" if t.is_floating_point() else "bool" if t.dtype == torch.bool else "int"


def load_backbone(backbone: nn.Module, path: str | Path, ckpt: dict[str, Any] | None = None) -> Path:
    """Load pretrained backbone weights (the fine-tuning hand-off); a mismatch names the keys at fault.
    `ckpt`: the file's content, where the caller has read it already."""
    p = resolve_checkpoint(path)
    state = backbone_state(load_checkpoint(p) if ckpt is None else ckpt)
    if not state:
        raise CheckpointError(f"{p} holds no backbone weights (no 'backbone.*' keys in its state_dict)")
    check_state_matches(backbone.state_dict(), state, p, "model backbone",
                        "is `model=` the same as when it was pretrained?")
    backbone.load_state_dict(state)
    return p


def _few(keys: list[str], n: int = 4) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
