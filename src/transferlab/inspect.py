"""`python -m transferlab.inspect ckpt_path=RUN [compare_to=RUN2] [noise_floor=PRETRAIN2]`: what fine-tuning changed.

For every block of the backbone (`block_names()`), on the run's test set: linear CKA between the
fine-tuned and the pretrained representation (the run's `task.pretrained`, or `reference=`) and the
relative weight change (LoRA-family updates merged first). Writes <run>/inspect/representation.json
and .png, feature_maps.png (pooled features before/after, coloured by class, with k-NN accuracy) and
attributions.png (Captum; `pip install 'transferlab[inspect]'`). Models come back only through
runner.restore, with this command's `allowed_targets`.
"""

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from transferlab.runner.entry import hydra_entry

PROJECTIONS = ("pca", "tsne", "umap")  # inspection.projection.METHODS, spelled here so a typo fails before torch loads
ATTRIBUTIONS = ("integrated_gradients", "saliency")  # inspection.attributions.METHODS


def run_folder(path: str) -> str:
    """A pipeline's folder (no checkpoints/ of its own) means its fine-tune stage."""
    p = Path(path).expanduser()
    if p.is_dir() and not (p / "checkpoints").is_dir() and (p / "finetune" / "checkpoints").is_dir():
        return str(p / "finetune")
    return str(p)


def restore_pair(ckpt_path: str, reference: str | None, allowed: list[str], data: Any):
    """(RunPair, datamodule) for a run and the backbone it is measured against."""
    from transferlab.errors import ConfigError
    from transferlab.inspection.report import RunPair
    from transferlab.runner.restore import restore_backbone, restore_task

    restored = restore_task(run_folder(ckpt_path), allowed, data=data, stage="test")
    ref_path = reference or (restored.config.get("task") or {}).get("pretrained")
    if not ref_path:
        raise ConfigError("reference", reference, f"a pretrained checkpoint or run folder: {restored.file} has no "
                                                   "task.pretrained (a pretraining or scratch run)")
    ref = restore_backbone(ref_path, allowed, data=data if data is not None else restored.config.get("data"), stage="test")
    folder = restored.file.parent.parent if restored.file.parent.name == "checkpoints" else restored.file.parent
    label = f"{(restored.config.get('peft') or {}).get('name', 'run')} ({folder.name})"
    pair = RunPair(label, str(folder), str(ref.file), restored.task.eval(), ref.backbone.eval())
    return pair, restored.datamodule, restored.config


def first_test_loader(datamodule: Any):
    """The run's test set (the first one when the data has shifted test sets too)."""
    loader = datamodule.test_dataloader()
    return loader[0] if isinstance(loader, list) else loader


def inspect_run(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    import json

    import pytorch_lightning as pl

    from transferlab.errors import ConfigError
    from transferlab.inspection import plots
    from transferlab.inspection.report import attribution_figure, feature_map_figure, measure, noise_floor
    from transferlab.runner.restore import restore_backbone
    from transferlab.utils.io import atomic_write_text

    if not (isinstance(cfg.max_dim, int) and cfg.max_dim > 0):
        raise ConfigError("max_dim", cfg.max_dim, "a positive integer")
    if cfg.projection not in (None, *PROJECTIONS):
        raise ConfigError("projection", cfg.projection, f"one of {list(PROJECTIONS)} or null")
    if cfg.attribution not in (None, *ATTRIBUTIONS):
        raise ConfigError("attribution", cfg.attribution, f"one of {list(ATTRIBUTIONS)} or null")
    pl.seed_everything(cfg.seed, verbose=False)
    allowed, device, data = list(cfg.allowed_targets), str(cfg.device), cfg.get("data")
    pair, datamodule, stored = restore_pair(str(cfg.ckpt_path), cfg.reference, allowed, data)
    out = Path(str(cfg.out)) if cfg.out else Path(pair.run) / "inspect"
    loader = first_test_loader(datamodule)
    entry, comparison = measure(pair, loader, device, int(cfg.max_dim), int(cfg.max_points))
    runs = [entry]
    if cfg.compare_to:
        other, other_datamodule, _ = restore_pair(str(cfg.compare_to), None, allowed, data)
        runs.append(measure(other, first_test_loader(other_datamodule), device, int(cfg.max_dim), keep=0)[0])
    floor = None
    if cfg.noise_floor:
        second = restore_backbone(str(cfg.noise_floor), allowed, data=data if data is not None else stored.get("data"), stage="test")
        floor = noise_floor(pair.reference, second.backbone, loader, device, int(cfg.max_dim))
    result: dict[str, Any] = {**entry, "runs": runs, "noise_floor": floor, "noise_floor_run": cfg.noise_floor,
                              "data": (stored.get("data") or {}).get("name") if data is None else data.get("name"),
                              "model": stored["model"].get("name"), "peft": (stored.get("peft") or {}).get("name")}
    out.mkdir(parents=True, exist_ok=True)
    plots.representation_plot(runs, out / "representation.png", floor)
    if cfg.projection:
        result["knn_acc"] = feature_map_figure(comparison, str(cfg.projection), datamodule.spec, out / "feature_maps.png",
                                               int(cfg.seed))
    if cfg.attribution:
        attribution_figure(pair.task, loader, datamodule, str(cfg.attribution), int(cfg.attribution_examples),
                           int(cfg.attribution_steps), device, out / "attributions.png")
    result["time/wall_s"] = time.perf_counter() - start
    atomic_write_text(out / "representation.json", json.dumps(result, indent=1) + "\n")
    return {**result, "out": str(out)}


@hydra_entry("inspect")
def main(cfg: DictConfig) -> None:
    result = inspect_run(cfg)
    cka = " ".join(f"{b['name']}={b['cka']:.3f}" for b in result["blocks"] if b["cka"] is not None)
    print(f"CKA to pretrained: {cka}\nwritten to {result['out']} in {result['time/wall_s']:.1f} s", flush=True)


if __name__ == "__main__":
    main()
