"""A run of `python -m transferlab.train`: validate, keep secrets out of its files, then one stage or a pipeline."""

import os
from pathlib import Path

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
    from transferlab.runner.run_folder import check_resume_matches, claim, clear_for_overwrite, release
    from transferlab.tracking.redact import install_log_filter, redact_files

    install_log_filter()
    redact_files(out)
    claim(cfg, out, pipeline=is_pipeline(cfg))  # before validation: a finished run folder is refused in a second
    try:
        preflight(cfg)
        clear_for_overwrite(cfg, out)
        apply_extras(cfg, out)
        if not is_pipeline(cfg) and os.environ.get("LOCAL_RANK", "0") in ("", "0"):
            check_resume_matches(cfg, out)
        if is_pipeline(cfg):
            from transferlab.runner.pipeline import run_pipeline

            summary = run_pipeline(cfg, out)
        else:
            from transferlab.runner.stage import run_stage

            summary = run_stage(cfg, out)
    finally:
        release(out)
    metric = cfg.get("optimized_metric")
    return summary.get(metric) if metric else None
