"""Per-block features of any backbone (cnn, mlp, transformer, hf) through forward hooks.

`block_names()` lists what a backbone is made of in order; the block's representation is its
output (the first tensor of a tuple, as Hugging Face layers return). A block that is a container
the backbone never calls itself (the MLP's `ModuleDict` of fc + norm) is represented by the output
of its last submodule that ran. Names that are bare parameters (a transformer's `cls_token`,
`pos_embed`) have no output of their own and yield no features. A hook added after an adaptation's
own hook (bottleneck adapters run as one) sees the adapted output.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def block_modules(backbone: nn.Module) -> dict[str, nn.Module | None]:
    """{block name: its module, or None when the name is a parameter}, in `block_names()` order."""
    modules = dict(backbone.named_modules())
    return {name: modules.get(name) for name in backbone.block_names()}


def reduce(output: torch.Tensor, tokens_last: bool, max_dim: int) -> torch.Tensor:
    """[B, ...] -> [B, D]: flattened while that stays within `max_dim` values per example, else averaged
    over positions (tokens for sequence models, spatial axes for convnets)."""
    if output.dim() == 2 or output[0].numel() <= max_dim:
        return output.flatten(1)
    return output.mean(1) if tokens_last else output.flatten(2).mean(2)


class BlockOutputs:
    """What one forward left in each block: `take()` gives {block name: [B, D] features} and resets."""

    def __init__(self, tokens_last: bool, max_dim: int):
        self.tokens_last, self.max_dim = tokens_last, max_dim
        self.raw: dict[str, torch.Tensor] = {}

    def take(self) -> dict[str, torch.Tensor]:
        out = {name: reduce(t, self.tokens_last, self.max_dim) for name, t in self.raw.items()}
        self.raw.clear()
        return out


@contextmanager
def capture_blocks(backbone: nn.Module, max_dim: int = 2048) -> Iterator[BlockOutputs]:
    """While open, each forward of `backbone` records every block's output; read it with `take()`."""
    captured = BlockOutputs(hasattr(backbone, "forward_tokens"), max_dim)
    handles = []
    for name, block in block_modules(backbone).items():
        if block is None:
            continue

        def hook(_module, _args, output, name=name):
            # submodules finish first, the block itself last: the last write is the block's own output when it runs
            out = output if torch.is_tensor(output) else next((o for o in output if torch.is_tensor(o)), None)
            if out is not None and out.is_floating_point():
                captured.raw[name] = out.detach()

        handles += [m.register_forward_hook(hook) for m in block.modules()]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def inputs_of(batch) -> torch.Tensor:
    """The input tensor of a datamodule batch ((x, y) or x)."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch
