"""`python -m transferlab.knn ckpt_path=... data=...`: weighted k-NN accuracy of a checkpoint's features.

A label-free look at a representation (no head, no training): the training split's pooled
backbone features are the bank; val and test examples are classified by their `k` nearest
neighbours (cosine, votes weighted exp(sim / temperature)). Writes metrics.json in the run folder.
"""

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from transferlab.runner.entry import hydra_entry


def knn_eval(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    import pytorch_lightning as pl

    from transferlab.callbacks.online_probes import feature_bank, knn_predict
    from transferlab.errors import ConfigError
    from transferlab.runner.restore import restore_backbone
    from transferlab.runner.summary import write_summary

    if not (isinstance(cfg.k, int) and cfg.k > 0):
        raise ConfigError("k", cfg.k, "a positive integer")
    if not (isinstance(cfg.temperature, (int, float)) and cfg.temperature > 0):
        raise ConfigError("temperature", cfg.temperature, "a positive number")
    pl.seed_everything(cfg.seed, verbose=False)
    restored = restore_backbone(cfg.ckpt_path, list(cfg.allowed_targets), data=cfg.data, stage="fit")
    datamodule, device = restored.datamodule, cfg.get("device") or "cpu"
    backbone = restored.backbone.to(device).eval()
    bank = feature_bank(backbone, datamodule.bank_dataloader(), device, cfg.get("bank_size"))
    summary: dict[str, Any] = {}
    tests = datamodule.test_dataloader()
    names = list(getattr(datamodule, "test_set_names", ["test"]))
    loaders = [("val", datamodule.val_dataloader())] + list(zip(names, tests if isinstance(tests, list) else [tests]))
    for prefix, loader in loaders:
        feats, labels = feature_bank(backbone, loader, device)
        pred = knn_predict(*bank, feats, datamodule.spec.num_classes, int(cfg.k), float(cfg.temperature))
        summary[f"{prefix}/knn_acc"] = float((pred == labels).float().mean())
    summary.update({"evaluated": str(restored.file), "data": cfg.data.name, "model": restored.config["model"].get("name"),
                    "task": (restored.config.get("task") or {}).get("name"), "knn/k": int(cfg.k),
                    "knn/temperature": float(cfg.temperature), "knn/bank": int(bank[0].shape[0]),
                    "time/wall_s": time.perf_counter() - start})
    write_summary(Path(str(cfg.paths.output_dir)), summary)
    return summary


@hydra_entry("knn")
def main(cfg: DictConfig) -> float | None:
    summary = knn_eval(cfg)
    print(" ".join(f"{k}={v:.4f}" for k, v in summary.items() if k.endswith("knn_acc")), flush=True)
    return summary.get("test/knn_acc")


if __name__ == "__main__":
    main()
