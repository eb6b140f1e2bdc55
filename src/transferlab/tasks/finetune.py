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
        self._frozen_statistics = frozen_statistics(self.backbone)

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
        if mode:
            self._hold_frozen()
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning keeps (and restores) each submodule's mode instead of calling .train(): re-freeze here.
        self._hold_frozen()

    def _hold_frozen(self) -> None:
        """Frozen means frozen: the linear probe's whole backbone, and every other method's frozen
        normalization layers, stay in eval mode, so their running statistics never move."""
        if self.adaptation.frozen_backbone_eval:
            self.backbone.eval()
        for module in self._frozen_statistics:
            module.eval()

    def param_counts(self) -> dict[str, float]:
        counts = super().param_counts()
        names = set(self.adaptation.adapter_parameter_names(self.backbone))
        counts["params/adapter"] = sum(p.numel() for n, p in self.backbone.named_parameters() if n in names)
        counts["params/head"] = sum(p.numel() for p in self.head.parameters())
        return counts


def has_running_statistics(module: nn.Module) -> bool:
    """BatchNorm (and InstanceNorm with track_running_stats): buffers that move in train mode."""
    return bool(getattr(module, "track_running_stats", False)) and getattr(module, "running_mean", None) is not None


def frozen_statistics(backbone: nn.Module) -> list[nn.Module]:
    """Normalization layers whose statistics must not move: their own weights are (partly) frozen, or,
    for layers without weights, any backbone weight is frozen (the method is not full fine-tuning)."""
    all_train = all(p.requires_grad for p in backbone.parameters())
    out = []
    for module in backbone.modules():
        if not has_running_statistics(module):
            continue
        own = list(module.parameters(recurse=False))
        if (own and not all(p.requires_grad for p in own)) or (not own and not all_train):
            out.append(module)
    return out
