"""`python -m transferlab.eval ckpt_path=... data=...`: test a checkpoint on any data config.

The model is rebuilt from the config stored in the checkpoint (plain containers, read with
weights_only=True); only `_target_`s allowed by *this* run's `allowed_targets` are instantiated.
"""

import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from transferlab.cli import CONFIG_DIR, report_user_errors


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    import pytorch_lightning as pl

    from transferlab.build import build_backbone, build_datamodule, build_loggers, build_task, build_trainer
    from transferlab.checkpoint import load_checkpoint, resolve_checkpoint, restore_datamodule_state, stored_config
    from transferlab.errors import CheckpointError
    from transferlab.summary import write_summary

    out = Path(str(cfg.paths.output_dir))
    ckpt_file = resolve_checkpoint(cfg.ckpt_path)
    ckpt = load_checkpoint(ckpt_file)
    stored = stored_config(ckpt, ckpt_file, needs=("model", "task"))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model_cfg = OmegaConf.create({**{k: stored[k] for k in ("model", "task", "peft", "optimizer", "scheduler") if k in stored},
                                  "allowed_targets": list(cfg.allowed_targets), "data": cfg.data})
    datamodule = build_datamodule(cfg)
    restore_datamodule_state(datamodule, ckpt)  # the training run's normalization statistics
    datamodule.setup("test")
    spec = datamodule.spec
    task = build_task(model_cfg, build_backbone(model_cfg, spec), spec, config=stored, pretrained=None)
    if hasattr(task, "set_test_sets") and hasattr(datamodule, "test_set_names"):
        task.set_test_sets(datamodule.test_set_names)
    state = ckpt.get("state_dict", {})
    own = task.state_dict()
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if shapes or missing or unexpected:
        hint = ""
        if any(k.startswith("head.") for k in shapes):
            hint = f" (the checkpoint's head has {state['head.1.weight'].shape[0]} classes, data={cfg.data.name} has {spec.num_classes}: set data.classes)"
        raise CheckpointError(f"{ckpt_file} does not match the rebuilt model: shape mismatch {shapes[:4]}, "
                              f"missing {missing[:4]}, unexpected {unexpected[:4]}{hint}")
    task.load_state_dict(state)
    trainer = build_trainer(cfg, out, callbacks=[], loggers=build_loggers(cfg))
    results = trainer.test(task, datamodule=datamodule, verbose=False)
    summary: dict[str, Any] = {}
    for r in results:
        summary.update({k: float(v) for k, v in r.items()})
    summary.update(task.param_counts())
    summary.update({"evaluated": str(ckpt_file), "data": cfg.data.name, "model": stored["model"].get("name"),
                    "task": stored["task"].get("name"), "time/wall_s": time.perf_counter() - start})
    if trainer.is_global_zero:
        write_summary(out, summary)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    summary = evaluate(cfg)
    print(" ".join(f"{k}={v:.4f}" for k, v in summary.items() if k.startswith("test") and isinstance(v, float)), flush=True)
    return summary.get("test/acc")


if __name__ == "__main__":
    main()
