"""The sweep job wrapper: under multirun a failing job (bad config, NaN divergence, any exception)
is recorded in `<job>/error.json` and returns the worst value for the sweeper's direction (so an
Optuna study goes on) instead of killing the sweep. Imports no torch.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from transferlab.analysis.runs import ERROR_FILE
from transferlab.errors import UserError
from transferlab.tracking.redact import mask_overrides, mask_text
from transferlab.utils.hydra import hydra_config, in_multirun, task_overrides
from transferlab.utils.io import atomic_write_text

log = logging.getLogger("transferlab")


def worst_value() -> float | None:
    """What a sweeper should see for a failed job: -inf when maximizing, +inf when minimizing, None if it has no direction."""
    hc = hydra_config()
    direction = hc.sweeper.get("direction") if hc is not None else None
    if isinstance(direction, str):
        return -math.inf if direction.lower().startswith("max") else math.inf
    return None


def failure_reason(exc: BaseException) -> str:
    """`user_error`, `diverged`, `preempted`, `rank_failed` (each UserError class says its own), else `exception`."""
    return exc.reason if isinstance(exc, UserError) else "exception"


def record_failure(job_dir: Path, reason: str, error: str, overrides: list[str], details: str = "") -> Path:
    """`<job>/error.json`: what compare and the sweep summary show for a failed job (secrets masked: an error
    message may quote a value that came from a secret environment variable)."""
    path = job_dir / ERROR_FILE
    atomic_write_text(path, json.dumps({"status": "failed", "reason": reason, "error": mask_text(error),
                                        "overrides": mask_overrides(overrides), "traceback": mask_text(details)},
                                       indent=2) + "\n")
    return path


def finish_wandb(exit_code: int) -> None:
    """End the W&B run a job left open, so the next job of the same process is its own run."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def sweep_job(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Under multirun, turn a job's failure into a record + the worst value; outside multirun do nothing."""

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig) -> Any:
        if not in_multirun():
            return fn(cfg)
        hc = hydra_config()
        job_dir = Path(hc.runtime.output_dir)
        overrides = task_overrides(hc)
        shown = " ".join(mask_overrides(overrides))  # what the console (and a scheduler's log file) may show
        # a rerun of this job (resume=auto after preemption, or the sweep run again after a fix) supersedes an
        # earlier attempt's failure record: the job's state is what this attempt ends with
        (job_dir / ERROR_FILE).unlink(missing_ok=True)
        failed = True
        try:
            value = fn(cfg)
            failed = False
        except Exception as e:  # noqa: BLE001 - a sweep must survive any job failure; it is recorded below
            reason = failure_reason(e)
            message = f"{type(e).__name__}: {e}"
            log.error("job %s failed (%s): %s", hc.job.num, reason, message, exc_info=reason == "exception")
            print(f"error: job {hc.job.num} ({shown}) failed: {mask_text(message)}", file=sys.stderr, flush=True)
            record_failure(job_dir, reason, message, overrides, traceback.format_exc())
            return worst_value()
        finally:
            finish_wandb(1 if failed else 0)
        worst = worst_value()
        if worst is not None and (value is None or not math.isfinite(float(value))):
            metric = cfg.get("optimized_metric")
            message = f"optimized_metric={metric!r} is {value!r} in metrics.json (missing or not finite)"
            print(f"error: job {hc.job.num} ({shown}): {mask_text(message)}", file=sys.stderr, flush=True)
            record_failure(job_dir, "metric", message, overrides)
            return worst
        return value

    return wrapper
