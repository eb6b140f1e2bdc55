"""Surviving faults: exact resume, SIGTERM checkpoints, NaN guards, atomic checkpoint files.

`FaultTolerance` is one callback (`callbacks.fault_tolerance`) so every task gets the same
guarantees without code of its own:
- the global RNG state (torch, CUDA, numpy, python) rides in every checkpoint and is restored
  on resume, so dropout/augmentation noise after a resume equals the uninterrupted run's
  (the data order is restored by the resumable train loader, data/resumable.py);
- a non-finite training loss stops the run before its backward pass, so no NaN update is
  applied and no NaN state is checkpointed (the last good checkpoint stays);
- `every_n_train_steps`: `last.ckpt` is also written mid-epoch, so a crash loses at most N steps;
- SIGTERM (SLURM preemption): Lightning finishes the current batch and raises; this callback
  then writes `last.ckpt`, and `resume=auto` continues from it;
- checkpoints are written to a temporary file in the same folder, fsynced, then renamed;
- loggers are flushed with every checkpoint, so a resumed run's CSV log continues without gaps.
"""

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.utilities.exceptions import SIGTERMException

from transferlab.distributed.world import world_size
from transferlab.utils.io import atomic_open

log = logging.getLogger("transferlab")

class AtomicCheckpointIO(TorchCheckpointIO):
    """Write-then-rename in the checkpoint's own folder: a reader sees the old file or the new one, never half."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any = None) -> None:
        if "://" in str(path):  # remote filesystems: Lightning's own (transactional) writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)


def rng_state() -> dict[str, Any]:
    """The global RNG states as tensors and plain containers (loadable with weights_only=True)."""
    import random

    import numpy as np

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, state, pgauss = random.getstate()
    out: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype("int64")), pos, has_gauss, gauss],
                           "python": [version, list(state), pgauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype("uint32"), pos, has_gauss, gauss))
    version, pstate, pgauss = state["python"]
    random.setstate((version, tuple(pstate), pgauss))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class FaultTolerance(pl.Callback):
    """See the module docstring; each guarantee has its own switch."""

    def __init__(self, every_n_train_steps: int | None = None, restore_rng: bool = True, check_finite: bool = True,
                 save_on_sigterm: bool = True, atomic_checkpoints: bool = True):
        self.every_n_train_steps = every_n_train_steps
        self._last_saved_step = -1
        self.restore_rng = restore_rng
        self.check_finite = check_finite
        self.save_on_sigterm = save_on_sigterm
        self.atomic_checkpoints = atomic_checkpoints
        self.sigterm_checkpoint: str | None = None

    @property
    def state_key(self) -> str:
        return "FaultTolerance"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.atomic_checkpoints and type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if self.check_finite and not torch.isfinite(loss.detach()).all():
            raise FloatingPointError(f"non-finite training loss ({loss.detach().float().mean().item()}) "
                                     f"at step {trainer.global_step}, epoch {trainer.current_epoch}")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """last.ckpt every N steps, mid-epoch too (ModelCheckpoint defers until a val score exists)."""
        n, step = self.every_n_train_steps, trainer.global_step
        if n and step > 0 and step % n == 0 and step != self._last_saved_step and not trainer.sanity_checking:
            trainer.save_checkpoint(last_checkpoint_path(trainer), weights_only=False)
            self._last_saved_step = step

    def state_dict(self) -> dict[str, Any]:
        """The RNG states, every rank's under DDP (all ranks save together; rank 0 writes the file)."""
        if not self.restore_rng:
            return {}
        state = rng_state()
        if world_size() == 1:
            return {"rng": state}
        states: list[Any] = [None] * world_size()
        torch.distributed.all_gather_object(states, state)
        return {"rng": state, "rng_per_rank": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not (self.restore_rng and state_dict.get("rng")):
            return
        per_rank = state_dict.get("rng_per_rank") or []
        if world_size() > 1 and len(per_rank) == world_size():
            set_rng_state(per_rank[torch.distributed.get_rank()])
        else:  # one process, or resumed with another number of ranks: rank 0's noise
            set_rng_state(state_dict["rng"])

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Flush the loggers with every checkpoint: after a crash, the log ends where the checkpoint does."""
        for logger in trainer.loggers:
            logger.save()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        for lg in trainer.loggers:
            rows = getattr(self, "_csv_rows", {}).pop(id(lg), None)
            if rows and trainer.is_global_zero:  # the CSV log is rank 0's
                _restore_csv_log(lg, rows, int(checkpoint.get("global_step", 0)))
        self._loader_states = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader", [])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Hand the train loaders their saved position (mid-epoch resume).

        Lightning restores loader states in `setup_data`, but a task whose optimizer setup reads
        `trainer.estimated_stepping_batches` makes it build the loaders before the checkpoint is
        restored, and the states are then never applied; doing it here (idempotently) covers both.
        """
        states, self._loader_states = getattr(self, "_loader_states", []), []
        if not states:
            return
        from pytorch_lightning.utilities.combined_loader import CombinedLoader

        loaders = [dl for dl in CombinedLoader(trainer.train_dataloader, "max_size_cycle").flattened
                   if hasattr(dl, "state_dict") and hasattr(dl, "load_state_dict")]
        for loader, state in zip(loaders, states):
            loader.load_state_dict(state)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.save_on_sigterm and isinstance(exception, SIGTERMException):
            path = last_checkpoint_path(trainer)
            trainer.save_checkpoint(path, weights_only=False)  # full state; also flushes the loggers (on_save_checkpoint)
            self.sigterm_checkpoint = str(path)
            log.warning("SIGTERM: saved %s at step %d; rerun with resume=auto to continue", path, trainer.global_step)


def keep_logs_for_resume(trainer: pl.Trainer) -> None:
    """Call before `trainer.fit(ckpt_path=...)`: Lightning's CSV writer deletes metrics.csv when it starts
    (before any callback hook runs); its rows up to the checkpoint are written back on restore."""
    for cb in trainer.callbacks:
        if isinstance(cb, FaultTolerance):
            cb._csv_rows = {id(lg): rows for lg in trainer.loggers if _is_csv(lg) and (rows := _read_csv_log(lg))}


def last_checkpoint_path(trainer: pl.Trainer) -> Path:
    cb = trainer.checkpoint_callback
    if cb is not None and getattr(cb, "dirpath", None):
        return Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}"
    return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


def _is_csv(logger: Any) -> bool:
    from pytorch_lightning.loggers import CSVLogger

    return isinstance(logger, CSVLogger)


def _read_csv_log(logger: Any) -> tuple[list[str], list[dict[str, str]]] | None:
    import csv

    path = Path(logger.log_dir) / "metrics.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _restore_csv_log(logger: Any, saved: tuple[list[str], list[dict[str, str]]], step: int) -> None:
    """Rewrite the rows logged up to the checkpoint's step (later ones are replayed by the resumed run)."""
    import csv

    keys, rows = saved
    rows = [r for r in rows if not r.get("step") or float(r["step"]) < step]  # a row's step is the batch index
    # Lightning's CSV writer internals (`metrics_keys`, `metrics_file_path`; pytorch-lightning <2.7, guarded by
    # tests/test_architecture.py): the writer deletes metrics.csv when created and has no public way to resume it.
    writer = logger.experiment  # creating the writer deletes the old file; write the kept rows back
    writer.metrics_keys = sorted(keys)
    with open(writer.metrics_file_path, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=writer.metrics_keys)
        out.writeheader()
        out.writerows(rows)
