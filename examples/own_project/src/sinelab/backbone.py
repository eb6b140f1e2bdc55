"""A tiny 1-D CNN that follows transferlab's backbone contract."""

from collections.abc import Sequence

import torch
from torch import nn

from transferlab.backbones.base import Backbone


class TinyConv(Backbone):
    """Conv stem, `depth` conv blocks, global average pooling, a linear projection to `width` features.

    The contract: take `input_shape` (transferlab passes the data's; `vocab_size` and `pad_id` too, which a
    signal model ignores), set `feature_dim`, return `[B, feature_dim]`, list `block_names()` in depth order,
    name the linear layers LoRA adapts by default in `lora_targets`.
    """

    lora_targets = ("proj",)

    def __init__(self, input_shape: Sequence[int], width: int = 32, depth: int = 2, kernel_size: int = 5, **_: object):
        super().__init__()
        channels = input_shape[0]
        self.stem = nn.Sequential(nn.Conv1d(channels, width, kernel_size, padding=kernel_size // 2), nn.GELU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv1d(width, width, kernel_size, padding=kernel_size // 2), nn.BatchNorm1d(width), nn.GELU())
            for _ in range(depth))
        self.proj = nn.Linear(width, width)
        self.feature_dim = width

    def block_names(self) -> list[str]:
        return ["stem", *(f"blocks.{i}" for i in range(len(self.blocks))), "proj"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.proj(h.mean(-1))
