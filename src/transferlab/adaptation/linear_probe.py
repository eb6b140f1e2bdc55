"""Linear probe: the backbone is frozen (and kept in eval mode); only the head trains.

`feature_norm: batchnorm` puts a BatchNorm without affine parameters between the frozen features
and the linear head, as MAE's linear probe does (He et al. 2022, appendix A.2): features of a
masked-modelling encoder have very uneven scales across dimensions, and a lone linear layer trained
for a few hundred steps cannot undo that. It adds no trainable parameters (running statistics only).
"""

import torch
from torch import nn

from transferlab.adaptation.base import Adaptation, freeze
from transferlab.errors import ConfigError

FEATURE_NORMS = ("batchnorm", "none")


class LinearProbe(Adaptation):
    frozen_backbone_eval = True

    def __init__(self, name: str, feature_norm: str = "none"):
        super().__init__(name)
        if feature_norm not in FEATURE_NORMS:
            raise ConfigError("peft.feature_norm", feature_norm, " or ".join(FEATURE_NORMS))
        self.feature_norm = feature_norm

    def attach(self, backbone: nn.Module) -> nn.Module:
        freeze(backbone)
        return backbone

    def head_prefix(self, feature_dim: int) -> nn.Module | None:
        if self.feature_norm == "batchnorm":
            return nn.BatchNorm1d(feature_dim, affine=False)
        return None

    def merge_head(self, head: nn.Module) -> nn.Module:
        """Fold the (eval-mode) BatchNorm into the linear layer: W (x - mu) / s + b = (W / s) x + (b - W mu / s)."""
        if self.feature_norm != "batchnorm" or not isinstance(head[0], nn.BatchNorm1d):
            return head
        norm, dropout, linear = head
        scale = (norm.running_var + norm.eps).rsqrt()
        folded = nn.Linear(linear.in_features, linear.out_features)
        with torch.no_grad():
            folded.weight.copy_(linear.weight * scale)
            folded.bias.copy_(linear.bias - (linear.weight * scale) @ norm.running_mean)
        return nn.Sequential(dropout, folded)
