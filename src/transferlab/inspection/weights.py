"""Relative weight change per block: ||W_ft - W_pre|| / ||W_pre|| over the block's parameters.

The fine-tuned backbone is the merged one for LoRA-family methods (their low-rank updates folded
into the weights, `Adaptation.merge`). Parameters the pretrained backbone does not have (bottleneck
adapters, which are nonlinear and cannot be merged) are reported apart as `added` = ||new|| / ||W_pre||:
their norm says nothing about how far the function moved (an adapter's random down-projection is
large while its zero up-projection leaves the block unchanged), so they are not mixed into
`weight_change`; CKA is what shows an adapter's effect. Floating buffers (BatchNorm's running mean
and variance) are not weights but move whenever the backbone trains in train mode, even with every
weight frozen; their relative change is reported as `buffer_change`.
"""

import math

import torch
from torch import nn


def owner_block(param: str, blocks: list[str]) -> str | None:
    """The longest block name that `param` sits under (None: outside every named block)."""
    best = None
    for name in blocks:
        if (param == name or param.startswith(name + ".")) and (best is None or len(name) > len(best)):
            best = name
    return best


@torch.no_grad()
def weight_change(finetuned: nn.Module, pretrained: nn.Module) -> dict[str, dict[str, float | None]]:
    """{block: {"weight_change", "added"}} for every name in `pretrained.block_names()`."""
    blocks = list(pretrained.block_names())
    before = dict(pretrained.named_parameters())
    sums = {b: {"diff": 0.0, "base": 0.0, "added": 0.0} for b in blocks}
    for name, p in finetuned.named_parameters():
        block = owner_block(name, blocks)
        if block is None:
            continue
        p = p.detach().double().cpu()
        if name in before and before[name].shape == p.shape:
            sums[block]["diff"] += float((p - before[name].detach().double().cpu()).pow(2).sum())
        else:
            sums[block]["added"] += float(p.pow(2).sum())
    for name, p in before.items():
        block = owner_block(name, blocks)
        if block is not None:
            sums[block]["base"] += float(p.detach().double().pow(2).sum())
    buffers = _buffer_change(finetuned, pretrained, blocks)
    return {b: {"weight_change": _relative(s["diff"], s["base"]), "added": _relative(s["added"], s["base"]),
                "buffer_change": buffers.get(b)} for b, s in sums.items()}


def _buffer_change(finetuned: nn.Module, pretrained: nn.Module, blocks: list[str]) -> dict[str, float | None]:
    """{block: ||buffers_ft - buffers_pre|| / ||buffers_pre||} over floating buffers (blocks without any: absent)."""
    before = {n: b for n, b in pretrained.named_buffers() if b.is_floating_point()}
    sums: dict[str, list[float]] = {}
    for name, buf in finetuned.named_buffers():
        block = owner_block(name, blocks)
        if block is None or name not in before or before[name].shape != buf.shape:
            continue
        pre = before[name].detach().double().cpu()
        acc = sums.setdefault(block, [0.0, 0.0])
        acc[0] += float((buf.detach().double().cpu() - pre).pow(2).sum())
        acc[1] += float(pre.pow(2).sum())
    return {b: _relative(diff, base) for b, (diff, base) in sums.items()}


def _relative(squared: float, base_squared: float) -> float | None:
    """sqrt(squared / base_squared); 0 when nothing moved, None when a zero weight (cls_token at init) moved."""
    if squared == 0:
        return 0.0
    return math.sqrt(squared / base_squared) if base_squared > 0 else None
