"""The sweep summary: `SweepSummary` (a Hydra callback, registered in conf/hydra/default.yaml) writes
`summary.csv` / `summary.md` of every job into the sweep folder and makes the sweep's exit code 1
when any job failed. Runs in the launcher process: imports no torch.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from transferlab.analysis.runs import ERROR_FILE, load_runs
from transferlab.analysis.tables import write_csv, write_tables
from transferlab.sweeps.job import failure_reason, record_failure
from transferlab.utils.hydra import task_overrides
from transferlab.utils.io import atomic_write_text

log = logging.getLogger("transferlab")

SUMMARY_STEM = "summary"
SWEEP_INFO = "sweep.json"


def swept_keys(config: DictConfig) -> list[str]:
    """Keys the sweep varies: sweep overrides (`a=1,2`, `range()`, ...) and `hydra.sweeper.params`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False) or []
    keys = [o.get_key_element().lstrip("+~") for o in OverridesParser.create().parse_overrides(task) if o.is_sweep_override()]
    params = config.hydra.sweeper.get("params") or {}
    keys += [str(k) for k in params if str(k) not in keys]
    return keys


def sweep_group(sweep_dir: str | Path) -> str:
    """One W&B group per sweep: the sweep folder's last two parts (`<date>_<time>`)."""
    return "_".join(Path(sweep_dir).parts[-2:])


def read_sweep_info(sweep_dir: str | Path) -> dict[str, Any]:
    path = Path(sweep_dir) / SWEEP_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


def write_summary_table(sweep_dir: Path, optimized_metric: str | None) -> tuple[int, int]:
    """Rebuild summary.csv / summary.md from the job folders; return (jobs, failed or incomplete)."""
    runs = load_runs([sweep_dir])
    if not runs:
        return 0, 0
    metrics = [m for m in [optimized_metric, "test/acc", "test/loss"] if m]
    metrics = list(dict.fromkeys(metrics))
    for r in runs:
        r.name = r.path.name
    _, rows = write_tables(runs, sweep_dir, SUMMARY_STEM, metrics)
    # the full override list of every job in the CSV, so a failed job can be rerun as is
    by_name = {r.name: r for r in runs}
    for row in rows:
        row["overrides"] = " ".join(f"{k}={v}" for k, v in by_name[row["run"]].overrides.items())
    write_csv(sweep_dir / f"{SUMMARY_STEM}.csv", rows)
    return len(runs), sum(r.status != "ok" for r in runs)


class SweepSummary(Callback):
    """Summary table of every job in the sweep folder; exit code 1 when a job failed."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        info = {"group": sweep_group(sweep_dir), "swept": swept_keys(config)}
        atomic_write_text(sweep_dir / SWEEP_INFO, json.dumps(info, indent=2) + "\n")

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:  # Hydra calls this for single runs too
            return
        job_dir = Path(str(config.hydra.runtime.output_dir))
        if job_return.status == JobStatus.FAILED and not (job_dir / ERROR_FILE).is_file():
            exc = job_return._return_value
            record_failure(job_dir, failure_reason(exc), f"{type(exc).__name__}: {exc}",
                           task_overrides(config.hydra),
                           "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        try:  # a partial table while the sweep runs (and the only one if the sweeper itself raises)
            write_summary_table(Path(str(config.hydra.sweep.dir)), config.get("optimized_metric"))
        except Exception as e:  # noqa: BLE001 - never fail a job because its table could not be refreshed
            log.warning("could not refresh the sweep summary: %s", e)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs, failed = write_summary_table(sweep_dir, config.get("optimized_metric"))
        print(f"\nsweep {sweep_dir}: {jobs} jobs, {failed} failed; table in {sweep_dir / (SUMMARY_STEM + '.md')}", flush=True)
        if failed:
            print(f"error: {failed} of {jobs} sweep jobs failed (see {sweep_dir / (SUMMARY_STEM + '.md')})",
                  file=sys.stderr, flush=True)
            raise SystemExit(1)
