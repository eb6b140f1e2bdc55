"""`python -m transferlab.eval ckpt_path=... data=...`: test a checkpoint on any data config.

The model is rebuilt from the config stored in the checkpoint (plain containers, read with
weights_only=True); only `_target_`s allowed by *this* run's `allowed_targets` are instantiated.
"""

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from transferlab.runner.entry import hydra_entry


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    import pytorch_lightning as pl

    from transferlab.runner.build import build_loggers, build_trainer
    from transferlab.runner.restore import restore_task
    from transferlab.runner.summary import write_summary

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    restored = restore_task(cfg.ckpt_path, list(cfg.allowed_targets), data=cfg.data, stage="test")
    task, datamodule = restored.task, restored.datamodule
    if hasattr(task, "set_test_sets") and hasattr(datamodule, "test_set_names"):
        task.set_test_sets(datamodule.test_set_names)
    out = Path(str(cfg.paths.output_dir))
    trainer = build_trainer(cfg, out, callbacks=[], loggers=build_loggers(cfg))
    summary: dict[str, Any] = {}
    for r in trainer.test(task, datamodule=datamodule, verbose=False):
        summary.update({k: float(v) for k, v in r.items()})
    summary.update(task.param_counts())
    summary.update({"evaluated": str(restored.file), "data": cfg.data.name, "model": restored.config["model"].get("name"),
                    "task": restored.config["task"].get("name"), "time/wall_s": time.perf_counter() - start})
    if trainer.is_global_zero:
        write_summary(out, summary)
    return summary


@hydra_entry("eval")
def main(cfg: DictConfig) -> float | None:
    summary = evaluate(cfg)
    print(" ".join(f"{k}={v:.4f}" for k, v in summary.items() if k.startswith("test") and isinstance(v, float)), flush=True)
    return summary.get("test/acc")


if __name__ == "__main__":
    main()
