"""From restored models to `inspect/`: representation.json, representation.png, feature_maps.png,
attributions.png. The entry point restores the models (runner.restore); everything here is torch."""

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def measure(pair: RunPair, loader, device: str, max_dim: int, keep: int = 2000) -> tuple[dict[str, Any], Comparison]:
    """The JSON entry of one run (CKA and weight change per block) and the comparison behind it
    (with the pooled features of the first `keep` test examples, for the feature maps)."""
    backbone = merged_backbone(pair.task)
    comparison = compare(backbone, pair.reference, loader, device, max_dim, keep)
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


def feature_map_figure(comparison: Comparison, method: str, spec: Any, path: Path, seed: int = 0) -> dict[str, float]:
    """feature_maps.png: the pretrained and the fine-tuned pooled features in 2-D; returns their k-NN accuracy."""
    from transferlab.inspection.plots import feature_map_plot
    from transferlab.inspection.projection import feature_maps

    labels = comparison.labels.numpy()
    panels = {"pretrained": comparison.reference_features.numpy(), "fine-tuned": comparison.features.numpy()}
    maps = feature_maps(panels, labels, method, seed)
    feature_map_plot(maps, labels, method, path, list(spec.class_names) or None)
    return {title: m["knn_acc"] for title, m in maps.items()}


def attribution_figure(task: nn.Module, loader, datamodule: Any, method: str, per_class: int, steps: int, device: str,
                       path: Path) -> Path:
    """attributions.png: `per_class` test inputs of each class, coloured by their attribution to the true class."""
    from transferlab.inspection.attributions import attribute, pick_examples
    from transferlab.inspection.plots import attribution_plot

    spec = datamodule.spec
    x, y = pick_examples(loader, per_class, spec.num_classes)
    task, x = task.to(device).eval(), x.to(device)
    attr = attribute(task, task.backbone, x, y.to(device), method, steps, spec.pad_id)
    with torch.no_grad():
        preds = task(x).argmax(-1).cpu().numpy()
    decode = getattr(datamodule, "decode", None) if spec.modality == "text" else None
    return attribution_plot(x.cpu().numpy(), attr.cpu().numpy(), y.numpy(), preds, method, path,
                            list(spec.class_names) or None, (lambda t: decode([t])) if decode else None, spec.pad_id)
