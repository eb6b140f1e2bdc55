"""Fine-tuning: load pretrained `backbone.*` weights (or start from random), adapt, add a fresh head."""

from typing import Any

from transferlab.adaptation.base import Adaptation
from transferlab.checkpoint import load_backbone
from transferlab.tasks.classifier import ClassifierTask


class FinetuneTask(ClassifierTask):
    """Without `pretrained` (null) the backbone stays randomly initialised: the scratch baseline."""

    kind = "finetune"

    def __init__(self, backbone, *args: Any, adaptation: Adaptation, pretrained: str | None = None, **kwargs: Any):
        if pretrained:
            load_backbone(backbone, pretrained)
        backbone = adaptation.attach(backbone)
        super().__init__(backbone, *args, **kwargs)
        self.adaptation = adaptation
        self.pretrained = pretrained

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.adaptation.frozen_backbone_eval:
            self.backbone.eval()
        return self

    def param_counts(self) -> dict[str, float]:
        counts = super().param_counts()
        names = set(self.adaptation.adapter_parameter_names(self.backbone))
        counts["params/adapter"] = sum(p.numel() for n, p in self.backbone.named_parameters() if n in names)
        counts["params/head"] = sum(p.numel() for p in self.head.parameters())
        return counts
