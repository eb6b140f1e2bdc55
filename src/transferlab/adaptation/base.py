"""The seam every fine-tuning method plugs into."""

from torch import nn


class Adaptation:
    """Decides which backbone weights train, and may inject new modules (adapters).

    `attach` runs after pretrained weights are loaded into the backbone and before the
    optimizer is built. `frozen_backbone_eval` keeps the backbone in eval mode during
    training (its normalization statistics and dropout stay fixed).
    """

    frozen_backbone_eval: bool = False

    def __init__(self, name: str):
        self.name = name

    def attach(self, backbone: nn.Module) -> nn.Module:
        """Prepare `backbone` for fine-tuning; return the module the task keeps as its backbone."""
        raise NotImplementedError

    def adapter_parameter_names(self, backbone: nn.Module) -> list[str]:
        """Names of parameters this method added to the backbone (none for masking methods)."""
        return []

    def head_prefix(self, feature_dim: int) -> nn.Module | None:
        """A parameter-free module the task puts before its linear head (None: nothing)."""
        return None

    def merge_head(self, head: nn.Module) -> nn.Module:
        """The head with `head_prefix` folded in: the plain (dropout, linear) head a `peft=full` task builds."""
        return head

    def merge(self, backbone: nn.Module) -> nn.Module:
        """Fold the adaptation into plain backbone weights (identity for methods that add nothing)."""
        return backbone


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)
