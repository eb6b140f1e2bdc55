"""Linear probe: the backbone is frozen (and kept in eval mode); only the head trains."""

from torch import nn

from transferlab.adaptation.base import Adaptation, freeze


class LinearProbe(Adaptation):
    frozen_backbone_eval = True

    def attach(self, backbone: nn.Module) -> nn.Module:
        freeze(backbone)
        return backbone
