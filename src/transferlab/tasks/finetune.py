"""Fine-tuning: load pretrained `backbone.*` weights (or start from random), adapt, add a fresh head."""

from pathlib import Path
from typing import Any

from torch import nn

from transferlab.adaptation.base import Adaptation
from transferlab.tasks.classifier import ClassifierTask
from transferlab.utils.checkpoint import load_backbone


class FinetuneTask(ClassifierTask):
    """Without `pretrained` (null) the backbone stays randomly initialised: the scratch baseline."""

    kind = "finetune"

    def __init__(self, backbone, *args: Any, adaptation: Adaptation, pretrained: str | None = None,
                 save_adapter: bool = False, **kwargs: Any):
        if pretrained:
            load_backbone(backbone, pretrained)
        backbone = adaptation.attach(backbone)
        super().__init__(backbone, *args, **kwargs)
        prefix = adaptation.head_prefix(self.backbone.feature_dim)
        if prefix is not None:  # e.g. the linear probe's feature BatchNorm: head = (norm, dropout, linear)
            self.head = nn.Sequential(prefix, *self.head)
        self.adaptation = adaptation
        self.pretrained = pretrained
        self.save_adapter = save_adapter

    def on_train_end(self) -> None:
        """With `task.save_adapter`, also write the small adapter file beside last.ckpt."""
        if not self.save_adapter or not self.trainer.is_global_zero:
            return
        from transferlab.adaptation.artifact import FILENAME, save_adapter

        cb = self.trainer.checkpoint_callback
        folder = Path(cb.dirpath) if cb is not None and cb.dirpath else Path(self.trainer.default_root_dir) / "checkpoints"
        save_adapter(self, folder / FILENAME)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.adaptation.frozen_backbone_eval:
            self.backbone.eval()
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning keeps (and restores) each submodule's mode instead of calling .train(): re-freeze here.
        if self.adaptation.frozen_backbone_eval:
            self.backbone.eval()

    def param_counts(self) -> dict[str, float]:
        counts = super().param_counts()
        names = set(self.adaptation.adapter_parameter_names(self.backbone))
        counts["params/adapter"] = sum(p.numel() for n, p in self.backbone.named_parameters() if n in names)
        counts["params/head"] = sum(p.numel() for p in self.head.parameters())
        return counts
