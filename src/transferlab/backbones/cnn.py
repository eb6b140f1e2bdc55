"""The classic MNIST-style convnet, for 1D signals (C, L) and images (C, H, W) alike."""

from collections.abc import Sequence

import torch
from torch import nn

from transferlab.backbones.base import Backbone


class CNN(Backbone):
    """conv-BN-ReLU blocks (pooling after each but the first), then a dense feature layer."""

    lora_targets = ("fc",)

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int] = (32, 64), kernel_size: int = 3,
                 hidden: int = 128, dropout: float = 0.1, **_: object):
        super().__init__()
        if len(input_shape) not in (2, 3):
            raise ValueError(f"model=cnn needs (C, L) signals or (C, H, W) images, got input shape {tuple(input_shape)}")
        dims = len(input_shape) - 1
        conv, norm, pool = (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)
        layers, c_in = [], input_shape[0]
        for i, c_out in enumerate(channels):
            block = [conv(c_in, c_out, kernel_size, padding=kernel_size // 2), norm(c_out), nn.ReLU()]
            if i > 0:
                block.append(pool(2))
            layers.append(nn.Sequential(*block))
            c_in = c_out
        self.blocks = nn.ModuleList(layers)
        with torch.no_grad():
            flat = self._convs(torch.zeros(1, *input_shape)).flatten(1).shape[1]
        self.fc = nn.Linear(flat, hidden)
        self.head_act = nn.Sequential(nn.ReLU(), nn.Dropout(dropout))
        self.feature_dim = hidden

    def _convs(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def block_names(self) -> list[str]:
        return [f"blocks.{i}" for i in range(len(self.blocks))] + ["fc"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_act(self.fc(self._convs(x).flatten(1)))
