"""One stage: seed -> build -> fit -> test -> summary (metrics.json) in one run folder."""

import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from transferlab.errors import Preempted, TrainingDiverged
from transferlab.runner.summary import write_summary
from transferlab.tracking.summary import log_summary

log = logging.getLogger("transferlab")


def resume_checkpoint(cfg: DictConfig, out: Path) -> str | None:
    """`resume` (or its lightning-hydra-template name `ckpt_path`): auto, a checkpoint, a run folder, or None."""
    resume = cfg.get("resume") or cfg.get("ckpt_path")
    if not resume:
        return None
    if resume == "auto":
        last = out / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    from transferlab.utils.checkpoint import resolve_checkpoint

    return str(resolve_checkpoint(resume))


def run_stage(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Train and test one task in `out`; return (and write) its summary."""
    start = time.perf_counter()
    import pytorch_lightning as pl
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from transferlab.callbacks.fault_tolerance import keep_logs_for_resume
    from transferlab.callbacks.step_stats import StepStats
    from transferlab.config.instantiate import to_plain
    from transferlab.config.validate import check_monitor
    from transferlab.distributed.launch import prepare_launch
    from transferlab.distributed.rank_watch import failed_ranks_named, watch_ranks
    from transferlab.distributed.threads import set_torch_threads
    from transferlab.runner.build import (
        build_backbone,
        build_callbacks,
        build_datamodule,
        build_loggers,
        build_task,
        build_trainer,
        compile_backbone,
    )
    from transferlab.runner.provenance import provenance
    from transferlab.runner.restore import adopt_checkpoint_tokenizer
    from transferlab.runner.run_folder import check_resume_matches, finished_summary, hydra_files_replaced
    from transferlab.tracking.run_id import persistent_run_id
    from transferlab.utils.hydra import hydra_job_dir

    out.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    done = finished_summary(cfg, out)
    if done is not None:  # resume=auto on a finished run of this recipe: nothing to do
        return done
    if os.environ.get("LOCAL_RANK", "0") in ("", "0"):
        check_resume_matches(cfg, out)  # resume=auto: the checkpoint's seed, model, data, task, peft are this run's
    set_torch_threads(cfg)  # this process's share of the cores (sweep jobs and DDP ranks must not fight)
    persistent_run_id(out)  # the tracker's run id (e.g. W&B `id`): a resumed run continues the same run
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    ckpt_path = resume_checkpoint(cfg, out)
    # text is read with the tokenizer of the weights this run starts from; a fine-tune's settings must match it
    adopt_checkpoint_tokenizer(datamodule, ckpt_path or cfg.task.get("pretrained"),
                               None if ckpt_path else cfg.data.get("tokenizer"))
    datamodule.setup("fit")
    spec = datamodule.spec
    backbone = compile_backbone(build_backbone(cfg, spec), bool(cfg.get("compile", False)))
    task = build_task(cfg, backbone, spec)
    if getattr(task, "probes_run", True) is False:  # unlabelled data: no online probe metric to monitor
        check_monitor(cfg, probes_run=False)
    if hasattr(task, "set_test_sets") and hasattr(datamodule, "test_set_names"):
        task.set_test_sets(datamodule.test_set_names)
    callbacks, loggers = build_callbacks(cfg), build_loggers(cfg)
    prepare_launch(cfg)
    with failed_ranks_named():
        trainer = build_trainer(cfg, out, callbacks, loggers)
        watch_ranks(trainer)
        if ckpt_path:
            log.info("resuming from %s", ckpt_path)
            keep_logs_for_resume(trainer)
        job = hydra_job_dir()
        if job:
            hydra_files_replaced(Path(job))  # this command writes into the folder from here on
        fit_start = time.perf_counter()
        trains = bool(cfg.get("train", True))  # train=false: no fit, test the checkpoint (or the initial weights)
        try:
            if trains:
                trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        except FloatingPointError as e:
            raise TrainingDiverged(f"training diverged in {out}: {e}; last good checkpoint kept in {out / 'checkpoints'}") from None
        except SIGTERMException:
            raise Preempted(f"SIGTERM at step {trainer.global_step}: checkpoint saved in {out / 'checkpoints'}; "
                            "rerun with resume=auto to continue") from None
        fit_s = time.perf_counter() - fit_start
        # no checkpoint callback (callbacks=none): the user asked for no checkpoint files
        last_file = save_final_checkpoint(trainer) if trains and trainer.checkpoint_callback is not None else None
        val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        test_ckpt = cfg.get("test_ckpt", "last") if trains else (ckpt_path or "init")
        results = []
        if cfg.get("test", True):
            test_from = ("best" if test_ckpt == "best" else None) if trains else ckpt_path
            results = trainer.test(task, datamodule=datamodule, ckpt_path=test_from, verbose=False, weights_only=True)
        tested: dict[str, float] = {}
        for r in results:
            tested.update({k: float(v) for k, v in r.items()})
        summary: dict[str, Any] = {**tested, **val, **task.param_counts()}
        for cb in callbacks:
            if isinstance(cb, StepStats):
                summary.update(cb.summary())
        summary.update({
            "task": cfg.task.name, "kind": getattr(task, "kind", "pretrain"),
            "peft": cfg.peft.name if getattr(task, "kind", "") == "finetune" else None,
            "data": cfg.data.name, "model": cfg.model.name, "seed": int(cfg.seed), "lr": cfg.optimizer.get("lr"),
            "pretrained": str(getattr(task, "pretrained", None) or "") or None,
            **checkpoint_record(out, last_file, _best_checkpoint(trainer)),
            "tested": test_ckpt, "epochs": trainer.current_epoch, "steps": trainer.global_step,
            "time/fit_s": fit_s, "time/wall_s": time.perf_counter() - start,
        })
        summary.update(provenance(to_plain(cfg), datamodule))
    if trainer.is_global_zero:
        write_summary(out, summary)
        log_summary(loggers, summary)
    return summary


def save_final_checkpoint(trainer) -> Path:
    """`last.ckpt` = the weights at the end of training, always.

    ModelCheckpoint writes `last.ckpt` only when it saves (after a validation that can rank the
    monitor), and FaultTolerance every N steps; neither runs after the final optimizer step in
    general, so the file could be many steps stale. One explicit save after `fit` (every rank
    takes part; rank 0 writes) makes it the weights that `trainer.test` just measured.
    """
    from transferlab.callbacks.fault_tolerance import last_checkpoint_path

    path = last_checkpoint_path(trainer)
    trainer.save_checkpoint(path, weights_only=False)
    return path


def _best_checkpoint(trainer) -> str | None:
    cb = trainer.checkpoint_callback
    return (getattr(cb, "best_model_path", None) or None) if cb is not None else None


def checkpoint_step(path: str | Path) -> int | None:
    """The global step a checkpoint file was written at (memory-mapped: no tensor is read)."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, ValueError):
        return None
    step = ckpt.get("global_step") if isinstance(ckpt, dict) else None
    return int(step) if step is not None else None


def checkpoint_record(out: Path, last: str | Path | None, best: str | Path | None) -> dict[str, Any]:
    """The checkpoint files a summary names, each with the step its weights are from."""
    record: dict[str, Any] = {}
    for key, path in (("checkpoint", last), ("best_checkpoint", best)):
        found = bool(path) and Path(str(path)).is_file()
        record[key] = _relative(str(path), out) if found else None
        record[f"{key}_step"] = checkpoint_step(path) if found else None
    return record


def _relative(path: str | None, out: Path) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path)
