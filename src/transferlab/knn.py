"""`python -m transferlab.knn ckpt_path=... data=...`: weighted k-NN accuracy of a checkpoint's features.

A label-free look at a representation (no head, no training): the training split's pooled
backbone features are the bank; val and test examples are classified by their `k` nearest
neighbours (cosine, votes weighted exp(sim / temperature)). Writes metrics.json in the run folder.
"""

import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from transferlab.cli import CONFIG_DIR, report_user_errors


def features(backbone, loader, device, limit: int | None = None):
    """Pooled features and labels of a loader's batches (eval mode, no gradients)."""
    import torch

    from transferlab.tasks.probes import split_batch

    feats, labels, n = [], [], 0
    with torch.no_grad():
        for batch in loader:
            x, y = split_batch(batch)
            feats.append(backbone(x.to(device)))
            labels.append(y.to(device))
            n += y.shape[0]
            if limit and n >= limit:
                break
    f, y = torch.cat(feats), torch.cat(labels)
    return (f[:limit], y[:limit]) if limit else (f, y)


def knn_eval(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    import pytorch_lightning as pl

    from transferlab.build import build_backbone, build_datamodule
    from transferlab.checkpoint import (load_backbone, load_checkpoint, resolve_checkpoint, restore_datamodule_state,
                                        stored_config)
    from transferlab.errors import ConfigError
    from transferlab.summary import write_summary
    from transferlab.tasks.probes import knn_predict

    if not (isinstance(cfg.k, int) and cfg.k > 0):
        raise ConfigError("k", cfg.k, "a positive integer")
    if not (isinstance(cfg.temperature, (int, float)) and cfg.temperature > 0):
        raise ConfigError("temperature", cfg.temperature, "a positive number")
    out = Path(str(cfg.paths.output_dir))
    ckpt_file = resolve_checkpoint(cfg.ckpt_path)
    ckpt = load_checkpoint(ckpt_file)
    stored = stored_config(ckpt, ckpt_file)
    pl.seed_everything(cfg.seed, verbose=False)
    datamodule = build_datamodule(cfg)
    restore_datamodule_state(datamodule, ckpt)
    datamodule.setup("fit")
    spec = datamodule.spec
    model_cfg = OmegaConf.create({"model": stored["model"], "allowed_targets": list(cfg.allowed_targets)})
    backbone = build_backbone(model_cfg, spec)
    load_backbone(backbone, ckpt_file)
    device = cfg.get("device") or "cpu"
    backbone.to(device).eval()
    bank = features(backbone, datamodule.bank_dataloader(), device, cfg.get("bank_size"))
    summary: dict[str, Any] = {}
    tests = datamodule.test_dataloader()
    names = list(getattr(datamodule, "test_set_names", ["test"]))
    loaders = [("val", datamodule.val_dataloader())] + list(zip(names, tests if isinstance(tests, list) else [tests]))
    for prefix, loader in loaders:
        feats, labels = features(backbone, loader, device)
        pred = knn_predict(*bank, feats, spec.num_classes, int(cfg.k), float(cfg.temperature))
        summary[f"{prefix}/knn_acc"] = float((pred == labels).float().mean())
    summary.update({"evaluated": str(ckpt_file), "data": cfg.data.name, "model": stored["model"].get("name"),
                    "task": (stored.get("task") or {}).get("name"), "knn/k": int(cfg.k),
                    "knn/temperature": float(cfg.temperature), "knn/bank": int(bank[0].shape[0]),
                    "time/wall_s": time.perf_counter() - start})
    write_summary(out, summary)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="knn")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    summary = knn_eval(cfg)
    print(" ".join(f"{k}={v:.4f}" for k, v in summary.items() if k.endswith("knn_acc")), flush=True)
    return summary.get("test/knn_acc")


if __name__ == "__main__":
    main()
