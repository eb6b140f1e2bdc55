"""Partial fine-tuning: only the last `trainable_blocks` depth positions of the backbone (+ head) train."""

from torch import nn

from transferlab.adaptation.base import Adaptation
from transferlab.errors import ConfigError


class Freeze(Adaptation):
    """Depth positions come from the backbone contract (`block_of`, `num_layers`), so "last k"
    means the same thing as layer-wise LR decay: for the transformer, position 0 is the stem,
    then one per block, then the final norm (`trainable_blocks=1` trains the final norm only).
    `trainable_blocks=0` is a linear probe; `num_layers` is full fine-tuning.
    """

    def __init__(self, name: str, trainable_blocks: int):
        super().__init__(name)
        self.trainable_blocks = trainable_blocks

    def attach(self, backbone: nn.Module) -> nn.Module:
        n, k = backbone.num_layers, self.trainable_blocks
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
            raise ConfigError("peft.trainable_blocks", k,
                              f"an integer in 0..{n} (this backbone has {n} depth positions, stem first)")
        first = n - k
        for name, p in backbone.named_parameters():
            p.requires_grad_(backbone.block_of(name) >= first)
        self.frozen_backbone_eval = k == 0
        return backbone
