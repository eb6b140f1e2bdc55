"""A run of `python -m transferlab.train`: validate, keep secrets out of its files, then one stage or a pipeline."""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from transferlab.config.accelerator import check_mps
from transferlab.config.stages import is_pipeline
from transferlab.config.switches import check_switches
from transferlab.config.validate import validate
from transferlab.runner.build import dry_build_later_stages
from transferlab.runner.extras import apply_extras
from transferlab.tracking.external_loggers import check_logger_packages


def preflight(cfg: DictConfig) -> None:
    """Every mistake the config shows, for every stage of a pipeline, before any stage trains."""
    validate(cfg)
    check_switches(cfg)
    check_mps(cfg)
    check_logger_packages(cfg)
    dry_build_later_stages(cfg)


def train(cfg: DictConfig) -> float | None:
    """Validate every stage before any trains, run, and return the optimized metric (for sweepers)."""
    out = Path(str(cfg.paths.output_dir))
    from transferlab.errors import UserError
    from transferlab.runner.run_folder import claim, clear_for_overwrite, put_back_hydra_files, release
    from transferlab.tracking.redact import install_log_filter, redact_files

    install_log_filter()
    redact_files(out)
    try:
        claim(cfg, out, pipeline=is_pipeline(cfg))  # before validation: a finished run folder is refused in a second
        try:
            preflight(cfg)
            clear_for_overwrite(cfg, out)
            apply_extras(cfg, out)
            if is_pipeline(cfg):
                from transferlab.runner.pipeline import run_pipeline

                summary = run_pipeline(cfg, out)
            else:
                from transferlab.runner.stage import run_stage

                summary = run_stage(cfg, out)  # resume=auto: checks the checkpoint's config first (per stage)
        finally:
            release(out)
    except UserError:
        put_back_hydra_files(out)  # refused before it trained: the folder keeps its run's labels
        raise
    from transferlab.distributed.world import is_global_zero

    if is_global_zero():
        report_result(summary, out)
    metric = cfg.get("optimized_metric")
    return summary.get(metric) if metric else None


def result_line(summary: dict[str, Any], out: Path) -> str:
    """`result: test/acc=0.8120 test/loss=0.5012 ... gain/finetune=0.1920 -> <run folder>`: the run's main numbers."""
    shown = [(k, v) for k, v in summary.items() if k.startswith(("test/", "gain/")) and isinstance(v, (int, float))]
    numbers = " ".join(f"{k}={v:.4f}" for k, v in shown) or "no test metrics"
    return f"result: {numbers} -> {out}"


def report_result(summary: dict[str, Any], out: Path) -> None:
    """One line on stdout (terminal, a redirected log, a SLURM .out file) and in the run's log file."""
    import logging

    line = result_line(summary, out)
    print(line, flush=True)
    record = logging.LogRecord("transferlab", logging.INFO, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:  # file handlers only: the console has the printed line
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
