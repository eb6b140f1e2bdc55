"""The one place that asks Hydra for the running app's config (None outside a Hydra app)."""

from typing import Any


def hydra_config() -> Any | None:
    """`HydraConfig.get()` of the running app, or None (composed in-process: tests, notebooks)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def task_overrides(hc: Any | None = None) -> list[str]:
    """The job's command-line overrides as typed: `${oc.env:VAR}` stays a reference (iterating Hydra's list
    would resolve it into the secret's value). Empty outside a Hydra app."""
    from omegaconf import OmegaConf

    hc = hydra_config() if hc is None else hc
    return [str(o) for o in OmegaConf.to_container(hc.overrides.task, resolve=False)] if hc is not None else []


def hydra_job_dir() -> str | None:
    """The current job's output folder (a multirun job's own subfolder), or None outside a Hydra app."""
    hc = hydra_config()
    return str(hc.runtime.output_dir) if hc is not None else None


def in_multirun() -> bool:
    from hydra.types import RunMode

    hc = hydra_config()
    return hc is not None and hc.mode == RunMode.MULTIRUN
