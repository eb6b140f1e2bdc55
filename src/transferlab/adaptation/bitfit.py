"""BitFit (Ben Zaken et al., 2022): only the backbone's bias terms (+ head) train."""

from torch import nn

from transferlab.adaptation.base import Adaptation
from transferlab.errors import ConfigError


class BitFit(Adaptation):
    """Every parameter whose leaf name is `bias` (linear, conv and norm biases) stays trainable."""

    def attach(self, backbone: nn.Module) -> nn.Module:
        found = False
        for name, p in backbone.named_parameters():
            is_bias = name.rsplit(".", 1)[-1] == "bias"
            p.requires_grad_(is_bias)
            found = found or is_bias
        if not found:
            raise ConfigError("peft", self.name, "a method other than bitfit: this backbone has no bias parameters")
        return backbone
