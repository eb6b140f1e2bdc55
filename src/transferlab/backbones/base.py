"""The backbone contract every task relies on."""

import torch
from torch import nn


class Backbone(nn.Module):
    """Maps a batch of inputs to pooled features [B, feature_dim].

    Subclasses set `feature_dim`, keep their layers in order so that `block_names()` lists
    the stem, the blocks and the final norm/projection (used for partial freezing and
    layer-wise LR decay), and name `lora_targets`, the linear layers LoRA adapts by default.
    """

    feature_dim: int
    lora_targets: tuple[str, ...] = ()
    # the data modalities it reads (a DataSpec's `modality`): checked before any data is built
    modalities: tuple[str, ...] = ("signal", "image")

    def block_names(self) -> list[str]:
        raise NotImplementedError

    def block_of(self, param_name: str) -> int:
        """Depth index of a parameter: position of its block in `block_names()` (0 = stem)."""
        names = self.block_names()
        for i in range(len(names) - 1, -1, -1):
            if param_name == names[i] or param_name.startswith(names[i] + "."):
                return i
        return 0

    @property
    def num_layers(self) -> int:
        """Number of depth positions that `block_of` returns (stem = 0 ... last = num_layers - 1)."""
        return len(self.block_names())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def masked_mean(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the token axis of `h` [B, T, D], counting only positions where `mask` [B, T] is true."""
    if mask is None:
        return h.mean(1)
    m = mask.unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)
