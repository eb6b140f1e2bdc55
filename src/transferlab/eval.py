"""`python -m transferlab.eval ckpt_path=<run folder or file>`: test a checkpoint again.

With no `data` key it tests on the run's own data config (stored in the checkpoint, with the
run's normalization) and reproduces the run's `test/*` exactly; `data=<option>` tests on another
data config, `+data.key=value` changes one key of the stored one. The model is rebuilt from the
config stored in the checkpoint (plain containers, read with weights_only=True); only `_target_`s
allowed by *this* run's `allowed_targets` are instantiated.

eval writes its own run folder (metrics.json, csv/): one that already holds a run (a training run's,
or an earlier eval's) is refused, and a live eval holds the folder's lock like a training run.
"""

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from transferlab.runner.entry import hydra_entry


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    from transferlab.runner.run_folder import claim, release

    out = Path(str(cfg.paths.output_dir))
    refuse_run_folder(out)
    claim(cfg, out)  # the lock (rank 0; DDP ranks share its folder): two live processes never write one folder
    try:
        return measure(cfg, out)
    finally:
        release(out)


def refuse_run_folder(out: Path) -> None:
    """Before eval writes anything: a folder holding a run would get its metrics.json, csv/ and .hydra/ replaced."""
    from transferlab.errors import UserError
    from transferlab.runner.run_folder import finished_files

    found = finished_files(out)
    if found:
        raise UserError(f"{out} already holds a run ({found[0].relative_to(out)}); eval would replace its metrics.json, "
                        "csv/ and .hydra/: pick another hydra.run.dir")


def measure(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Test the checkpoint (with the run's data or `data`), write metrics.json into `out`, return the summary."""
    start = time.perf_counter()
    import pytorch_lightning as pl

    from transferlab.runner.build import build_loggers, build_trainer
    from transferlab.runner.restore import restore_task
    from transferlab.runner.summary import write_summary

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data = data_override(cfg, cfg.ckpt_path)
    restored = restore_task(cfg.ckpt_path, list(cfg.allowed_targets), data=data, stage="test")
    task, datamodule = restored.task, restored.datamodule
    restore_callback_states(task, restored.checkpoint)
    if hasattr(task, "set_test_sets") and hasattr(datamodule, "test_set_names"):
        task.set_test_sets(datamodule.test_set_names)
    trainer = build_trainer(cfg, out, callbacks=[], loggers=build_loggers(cfg))
    summary: dict[str, Any] = {}
    for r in trainer.test(task, datamodule=datamodule, verbose=False):
        summary.update({k: float(v) for k, v in r.items()})
    summary.update(task.param_counts())
    data_name = (data if data is not None else restored.config["data"]).get("name")
    summary.update({"evaluated": str(restored.file), "data": data_name, "model": restored.config["model"].get("name"),
                    "task": restored.config["task"].get("name"), "time/wall_s": time.perf_counter() - start})
    if trainer.is_global_zero:
        write_summary(out, summary)
    return summary


def data_override(cfg: DictConfig, ckpt_path: str) -> Any:
    """None (the run's stored data), a whole data option (`data=`), or the stored one with `+data.*` keys."""
    from omegaconf import OmegaConf

    node = cfg.get("data")
    if not node:
        return None
    if "_target_" in node:
        return node
    from transferlab.runner.restore import open_checkpoint

    _, _, stored = open_checkpoint(ckpt_path)
    return OmegaConf.merge(OmegaConf.create(stored.get("data") or {}), node)


def restore_callback_states(task: Any, checkpoint: dict[str, Any]) -> None:
    """The task's own callbacks (an SSL task's online probe head) as they were when the file was written."""
    states = checkpoint.get("callbacks") or {}
    for cb in task.configure_callbacks() or []:
        state = states.get(cb.state_key)
        if state:
            cb.load_state_dict(state)


@hydra_entry("eval")
def main(cfg: DictConfig) -> float | None:
    summary = evaluate(cfg)
    from transferlab.runner.run import report_result

    report_result(summary, Path(str(cfg.paths.output_dir)))
    return summary.get("test/acc")


if __name__ == "__main__":
    main()
