"""Bottleneck adapters (Houlsby et al., 2019): a small residual MLP after each backbone block.

Written here because `peft` has no bottleneck adapter it can attach to arbitrary torch modules
(its adapter-like methods are weight reparametrisations, prompt methods, or Llama-only
`adaption_prompt`; AdapterHub's `adapters` package only wraps Hugging Face transformers).
One adapter per block, after the block's output (the placement Pfeiffer et al. found as good
as Houlsby's two); the up-projection starts at zero, so the model is unchanged at init.
"""

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.adaptation.base import Adaptation, freeze
from transferlab.errors import ConfigError, UserError

_CONV = (nn.Conv1d, nn.Conv2d)


class Bottleneck(nn.Module):
    """x + up(gelu(down(x))) over the feature axis `dim` (-1 for tokens, 1 for conv channels)."""

    def __init__(self, width: int, bottleneck: int, dim: int):
        super().__init__()
        self.dim = dim
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.movedim(self.dim, -1)
        return x + self.up(F.gelu(self.down(h))).movedim(-1, self.dim)


def _width(block: nn.Module) -> tuple[int, int]:
    """(feature width, feature axis) of a block's output: its last layer that fixes a width."""
    for m in reversed(list(block.modules())):
        if isinstance(m, _CONV):
            return m.out_channels, 1
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return m.num_features, 1
        if isinstance(m, nn.Linear):
            return m.out_features, -1
        if isinstance(m, nn.LayerNorm):
            return m.normalized_shape[-1], -1
    raise ConfigError("peft", "adapter", f"a backbone whose blocks end in a linear/conv/norm layer ({type(block).__name__} has none)")


def _run_adapter(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    return module.adapter(output)


class BottleneckAdapter(Adaptation):
    """Adapters live inside their block (`blocks.{i}.adapter.*`), so freezing and layer-wise LR
    decay see them at that block's depth. A `nn.Sequential` block runs its adapter as its last
    layer; any other block through a forward hook."""

    def __init__(self, name: str, bottleneck: int):
        super().__init__(name)
        if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck <= 0:
            raise ConfigError("peft.bottleneck", bottleneck, "a positive integer (the adapter's hidden width)")
        self.bottleneck = bottleneck

    def attach(self, backbone: nn.Module) -> nn.Module:
        blocks = getattr(backbone, "blocks", None)
        if not isinstance(blocks, nn.ModuleList) or any(isinstance(b, (nn.ModuleDict, nn.ModuleList)) for b in blocks):
            raise ConfigError("peft", self.name, f"a backbone with callable `blocks` (model=transformer or cnn); "
                                                 f"{type(backbone).__name__} has none: use lora, ia3, bitfit or freeze")
        freeze(backbone)
        for block in blocks:
            width, dim = _width(block)
            block.add_module("adapter", Bottleneck(width, self.bottleneck, dim))
            if not isinstance(block, nn.Sequential):
                block.register_forward_hook(_run_adapter)
        return backbone

    def adapter_parameter_names(self, backbone: nn.Module) -> list[str]:
        return [n for n, _ in backbone.named_parameters() if ".adapter." in f".{n}"]

    def merge(self, backbone: nn.Module) -> nn.Module:
        raise UserError("peft=adapter cannot be merged: its bottleneck MLPs are nonlinear, so they do not fold into "
                        "the backbone's weights; keep the checkpoint (or the adapter file) instead")
