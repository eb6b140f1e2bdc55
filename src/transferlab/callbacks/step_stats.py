"""Training cost measured while it runs: step time and peak memory."""

import resource
import sys
import time

import pytorch_lightning as pl
import torch


class StepStats(pl.Callback):
    """Mean wall time per optimizer step (after `skip` warm-up steps) and peak memory.

    A step is the training batches of one optimizer update: with `trainer.accumulate_grad_batches=k`, k batches
    (their forward, backward and the update), so `time/step_ms` is the cost of what `steps`, `max_steps` and
    `every_n_train_steps` count, comparable across accumulation settings; `time/train_steps` is the number of
    updates this process timed (`steps` of a run that did not resume; a batch that updates several optimizers
    counts once). Each batch is timed from this callback's `on_train_batch_start` to its `on_train_batch_end`:
    the data loading before it and validation after it are left out, and so are the other callbacks' batch-end
    hooks (e.g. FaultTolerance's every-N-steps checkpoint save) as long as `step_stats` comes first in the
    `callbacks` config (conf/callbacks/default.yaml; callbacks run in config order).

    Peak memory is the accelerator's max allocated bytes on GPU, else the process's peak RSS.

    All of it, like `time/wall_s` and `time/fit_s`, covers this process: after a resume, the steps from
    `time/from_step` (the optimizer step this process started training at; 0 unless it resumed) on.
    """

    def __init__(self, skip: int = 5):
        self.skip = skip
        self._times: list[float] = []  # one per optimizer step
        self._t0: float | None = None
        self._pending = 0.0  # batches timed since the last optimizer step (gradient accumulation)
        self._step: int | None = None
        self._first_step: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._step is None:
            self._step = self._first_step = trainer.global_step
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._t0 is None:
            return
        self._pending += time.perf_counter() - self._t0
        self._t0 = None
        if trainer.global_step != self._step:  # this batch ended with an optimizer step
            self._step = trainer.global_step
            self._times.append(self._pending)
            self._pending = 0.0

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        times = self._times[self.skip:] or self._times
        if times:
            out["time/step_ms"] = 1000.0 * sum(times) / len(times)
            out["time/train_steps"] = len(self._times)
        if self._first_step is not None:
            out["time/from_step"] = self._first_step
        out["threads/torch"] = torch.get_num_threads()  # intra-op threads this process trained with
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            out["memory/peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        else:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            out["memory/peak_rss_mb"] = rss / (2**20 if sys.platform == "darwin" else 2**10)
        return out
