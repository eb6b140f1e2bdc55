"""Test-only callback for the fault-injection test: paces training and records what each step sees."""

import os
import time
import zlib
from pathlib import Path

import pytorch_lightning as pl
import torch


class Pace(pl.Callback):
    """Sleeps after each step and writes `global_step` to `progress_file`, so a test can kill the run mid-epoch.

    Also appends `step rng-checksum batch-checksum` per step to `<progress_file>.trace`: a resumed run
    must see the same batches and the same random state at every step as an uninterrupted one.
    """

    def __init__(self, progress_file: str, seconds: float = 0.05):
        self.progress_file = Path(progress_file)
        self.seconds = seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        rng = zlib.crc32(torch.get_rng_state().numpy().tobytes())
        suffix = ".trace" if trainer.global_rank == 0 else f".rank{trainer.global_rank}.trace"  # DDP: one per rank
        with open(str(self.progress_file) + suffix, "a") as f:
            f.write(f"{trainer.global_step} {rng} {float(batch[0].double().sum()):.6f}\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
        tmp = self.progress_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(str(trainer.global_step))
        os.replace(tmp, self.progress_file)


class PoisonWeights(pl.Callback):
    """Sets the model's first weight to NaN at `at_step`: the next loss is NaN (a divergence, on demand).

    `rank`: poison only that process of a DDP run (one rank diverges, the others wait in a collective).
    """

    def __init__(self, at_step: int, rank: int | None = None):
        self.at_step = at_step
        self.rank = rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step and self.rank in (None, trainer.global_rank):
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


class SendSignal(pl.Callback):
    """Sends `signum` to this process after step `at_step` (an in-process SIGTERM, as SLURM sends before preemption)."""

    def __init__(self, at_step: int, signum: int = 15):
        self.at_step = at_step
        self.signum = signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.signum)
