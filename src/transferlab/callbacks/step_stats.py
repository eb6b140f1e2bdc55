"""Training cost measured while it runs: step time and peak memory."""

import resource
import sys
import time

import pytorch_lightning as pl
import torch


class StepStats(pl.Callback):
    """Mean wall time per optimizer step (after `skip` warm-up steps) and peak memory.

    Peak memory is the accelerator's max allocated bytes on GPU, else the process's peak RSS.
    """

    def __init__(self, skip: int = 5):
        self.skip = skip
        self._times: list[float] = []
        self._t0: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._t0 is not None:
            self._times.append(time.perf_counter() - self._t0)

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        times = self._times[self.skip:] or self._times
        if times:
            out["time/step_ms"] = 1000.0 * sum(times) / len(times)
            out["time/train_steps"] = len(self._times)
        out["threads/torch"] = torch.get_num_threads()  # intra-op threads this process trained with
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["memory/peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        else:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            out["memory/peak_rss_mb"] = rss / (2**20 if sys.platform == "darwin" else 2**10)
        return out
