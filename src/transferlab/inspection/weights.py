"""Relative weight change per block: ||W_ft - W_pre|| / ||W_pre|| over the block's parameters.

The fine-tuned backbone is the merged one for LoRA-family methods (their low-rank updates folded
into the weights, `Adaptation.merge`). Parameters the pretrained backbone does not have (bottleneck
adapters, which cannot be merged) count as a change from zero, so an adapter's block shows
||adapter|| / ||W_pre||; that part is also reported alone as `added`.
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
    out: dict[str, dict[str, float | None]] = {}
    for b, s in sums.items():
        base = math.sqrt(s["base"])
        out[b] = {"weight_change": math.sqrt(s["diff"] + s["added"]) / base if base > 0 else None,
                  "added": math.sqrt(s["added"]) / base if base > 0 else None}
    return out
