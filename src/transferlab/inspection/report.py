"""From restored models to `inspect/`: representation.json, representation.png, feature_maps.png,
attributions.png. The entry point restores the models (runner.restore); everything here is torch."""

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from transferlab.inspection.similarity import Comparison, compare
from transferlab.inspection.weights import weight_change


@dataclass
class RunPair:
    """A fine-tuned task (or any task) and the backbone it is measured against."""

    label: str
    run: str
    reference_path: str
    task: nn.Module
    reference: nn.Module


def merged_backbone(task: nn.Module) -> nn.Module:
    """A copy of the task's backbone with its adaptation folded in (LoRA family); methods that add
    nonlinear modules (bottleneck adapters) cannot fold, and keep them: the weight change counts them."""
    from transferlab.adaptation.adapter import BottleneckAdapter

    backbone = copy.deepcopy(task.backbone)
    adaptation = getattr(task, "adaptation", None)
    if adaptation is None or isinstance(adaptation, BottleneckAdapter):
        return backbone
    return adaptation.merge(backbone)


def measure(pair: RunPair, loader, device: str, max_dim: int) -> tuple[dict[str, Any], Comparison]:
    """The JSON entry of one run (CKA and weight change per block) and the comparison behind it."""
    backbone = merged_backbone(pair.task)
    comparison = compare(backbone, pair.reference, loader, device, max_dim)
    change = weight_change(backbone.cpu(), pair.reference.cpu())
    blocks = [{"name": name, "cka": comparison.cka.get(name), "weight_change": change[name]["weight_change"],
               "added": change[name]["added"], "buffer_change": change[name]["buffer_change"],
               "feature_width": comparison.reduced.get(name)}
              for name in pair.reference.block_names()]
    return {"label": pair.label, "run": pair.run, "reference": pair.reference_path, "blocks": blocks,
            "examples": comparison.examples}, comparison


def noise_floor(reference: nn.Module, other: nn.Module, loader, device: str, max_dim: int) -> dict[str, float | None]:
    """CKA per block between the reference and another pretraining (another seed): seed noise."""
    return compare(copy.deepcopy(other), reference, loader, device, max_dim).cka


def predictions(task: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return task.eval()(x).argmax(-1).cpu().numpy()
