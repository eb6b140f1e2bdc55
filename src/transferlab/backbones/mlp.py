"""A plain multilayer perceptron over flattened inputs."""

import math
from collections.abc import Sequence

import torch
from torch import nn

from transferlab.backbones.base import Backbone


class MLP(Backbone):
    """Linear-LayerNorm-GELU blocks over the flattened input."""

    lora_targets = ("fc",)
    modalities = ("signal", "image", "tabular")

    def __init__(self, input_shape: Sequence[int], hidden: int = 256, depth: int = 3, dropout: float = 0.1, **_: object):
        super().__init__()
        d_in = math.prod(input_shape)
        self.blocks = nn.ModuleList()
        for _i in range(depth):
            self.blocks.append(nn.ModuleDict({"fc": nn.Linear(d_in, hidden), "norm": nn.LayerNorm(hidden)}))
            d_in = hidden
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)
        self.feature_dim = hidden

    def block_names(self) -> list[str]:
        return [f"blocks.{i}" for i in range(len(self.blocks))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for block in self.blocks:
            x = self.drop(self.act(block["norm"](block["fc"](x))))
        return x
