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
        with open(str(self.progress_file) + ".trace", "a") as f:
            f.write(f"{trainer.global_step} {rng} {float(batch[0].double().sum()):.6f}\n")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
        tmp = self.progress_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(str(trainer.global_step))
        os.replace(tmp, self.progress_file)
