"""Full fine-tuning: every backbone weight trains."""

from torch import nn

from transferlab.adaptation.base import Adaptation


class Full(Adaptation):
    def attach(self, backbone: nn.Module) -> nn.Module:
        for p in backbone.parameters():
            p.requires_grad_(True)
        return backbone
