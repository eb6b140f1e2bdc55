"""W&B logging with transferlab's conventions (only imported when `logger=wandb`/`many`).

- group: the sweep (every job of one multirun shares it) or this run's own folder;
- name: the overrides that differ between the sweep's jobs (all overrides for a single run),
  plus the stage for a pipeline stage; job_type: the task (`${task.name}`);
- config: the full resolved run config (nested keys); summary: the metrics.json numbers;
- files under `<run folder>/wandb/`, beside metrics.json; offline without credentials.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger

from transferlab.utils.hydra import hydra_config, task_overrides

log = logging.getLogger("transferlab")

_told_offline = False


def has_credentials() -> bool:
    """WANDB_API_KEY, a `wandb login` (.netrc) or a settings file; checked without network."""
    import wandb

    return bool(os.environ.get("WANDB_API_KEY")) or bool(wandb.login(prompt=False, verify=False))


def run_identity(save_dir: str | Path) -> tuple[str, str]:
    """(group, name) for the W&B run of the stage whose folder is `save_dir`."""
    from hydra.types import RunMode

    from transferlab.sweeps.summary import read_sweep_info, sweep_group

    save_dir = Path(save_dir)
    hc = hydra_config()
    if hc is None:  # composed in-process (tests, notebooks): the folder is all we know
        return save_dir.name, save_dir.name
    run_dir = Path(hc.runtime.output_dir)
    overrides = task_overrides(hc)
    if hc.mode == RunMode.MULTIRUN:
        info = read_sweep_info(hc.sweep.dir)
        group = info.get("group") or sweep_group(hc.sweep.dir)
        swept = info.get("swept")
        if swept is not None:
            overrides = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in swept]
    else:  # a single run: its own group; its name, the overrides that describe the experiment (not where it logs)
        group = "_".join(run_dir.parts[-2:])
        overrides = [o for o in overrides if o.lstrip("+~").split("=", 1)[0].split(".", 1)[0] not in ("logger", "hydra")]
    from transferlab.tracking.redact import mask_overrides

    name = " ".join(mask_overrides(overrides)) or run_dir.name
    try:
        stage = save_dir.resolve().relative_to(run_dir.resolve())
    except ValueError:
        stage = None
    if stage is not None and str(stage) != ".":
        name = f"{name} / {stage}"
    return group, name


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger plus transferlab's defaults, the run summary and a clean finish."""

    def __init__(self, save_dir: str, project: str, entity: str | None = None, group: str | None = None,
                 name: str | None = None, job_type: str | None = None, tags: list[str] | None = None,
                 notes: str | None = None, offline: bool | None = None, log_model: bool | str = False,
                 **kwargs: Any) -> None:
        global _told_offline
        auto_group, auto_name = run_identity(save_dir)
        mode = os.environ.get("WANDB_MODE")
        if offline is None and not mode:
            offline = not has_credentials()
            if offline and not _told_offline:
                log.warning("W&B: no API key (WANDB_API_KEY or `wandb login`), logging offline to %s/wandb; "
                            "upload later with `wandb sync %s/wandb/offline-run-*`", save_dir, save_dir)
                _told_offline = True
        if offline:
            kwargs["mode"] = "offline"  # not Lightning's `offline=`: it refuses log_model, but offline artifacts sync later
        if not kwargs.get("id") and not kwargs.get("version"):
            from transferlab.tracking.run_id import persistent_run_id

            kwargs["id"] = persistent_run_id(save_dir)  # a resumed run (resume=auto) continues the same W&B run
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        from transferlab.tracking.redact import redact_text

        tags = [redact_text(str(t)) for t in tags or []]  # typed `${oc.env:VAR}` would otherwise arrive resolved
        notes = redact_text(notes) if notes else notes
        super().__init__(save_dir=save_dir, project=project, name=name or auto_name, log_model=log_model,
                         entity=entity, group=group or auto_group, job_type=job_type, tags=tags,
                         notes=notes, **kwargs)

    def log_hyperparams(self, params: Any) -> None:
        """The run's resolved config (tasks store it as hparams `config`) becomes the W&B config, nested."""
        params = dict(params) if isinstance(params, dict) else vars(params)
        config = params.pop("config", None)
        if isinstance(config, dict):
            params = {**config, **params}
        from transferlab.tracking.redact import redact

        super().log_hyperparams(redact(params))

    def log_summary(self, summary: dict[str, Any]) -> None:
        """The metrics.json numbers into the run summary, then finish the run (the stage is over)."""
        from pytorch_lightning.utilities import rank_zero_only

        if rank_zero_only.rank != 0:
            return
        self.experiment.summary.update({k: v for k, v in summary.items() if v is not None})
        import wandb

        if wandb.run is not None and wandb.run is self.experiment:
            wandb.finish()

    def finalize(self, status: str) -> None:
        super().finalize(status)
        if status != "success" and self._experiment is not None:
            import wandb

            if wandb.run is self._experiment:
                wandb.finish(exit_code=1)
