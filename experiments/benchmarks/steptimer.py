"""A benchmark-only callback: the wall-clock start of every training step, and time spent validating.

The gap between consecutive step starts includes everything the loop does per step (data
fetching, hooks, logging, progress bar, periodic checkpoints), which is what overhead means.
"""

import json
import os
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch


class StepTimer(pl.Callback):
    last: "StepTimer | None" = None  # the most recent instance (run_stage builds it from the config)

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.validations: list[tuple[float, float]] = []  # (start, seconds) of each validation loop in fit
        self._val_t0: float | None = None
        StepTimer.last = self

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and len(self.starts) > 0:
            self._val_t0 = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._val_t0 is not None:
            self.validations.append((self._val_t0, time.perf_counter() - self._val_t0))
            self._val_t0 = None

    def validation_within(self, t0: float, t1: float) -> float:
        """Seconds of validation that started inside [t0, t1)."""
        return sum(d for s, d in self.validations if t0 <= s < t1)

    def on_train_end(self, trainer, pl_module) -> None:
        """Under the CLI (or DDP children) the numbers leave through a file: $BENCH_TIMER_OUT.<rank>.json."""
        out = os.environ.get("BENCH_TIMER_OUT")
        if out:
            record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "starts": self.starts,
                      "validations": self.validations, "torch_threads": torch.get_num_threads(),
                      "batch_size": _batch_size(trainer)}
            Path(f"{out}.{trainer.global_rank}.json").write_text(json.dumps(record))


class FirstStep(pl.Callback):
    """Start-up benchmark: write the wall-clock time of the first training step to $BENCH_FIRST_STEP_OUT, then exit."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        Path(os.environ["BENCH_FIRST_STEP_OUT"]).write_text(repr(time.time()))
        sys.stdout.flush()
        os._exit(0)


class MemoryProbe(pl.Callback):
    """Bytes held by parameters, gradients and optimizer state at optimizer step `at` (PEFT benchmark)."""

    last: "MemoryProbe | None" = None

    def __init__(self, at: int = 5) -> None:
        self.at = at
        self.record: dict[str, float] = {}
        MemoryProbe.last = self

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step == self.at:
            params = list(pl_module.parameters())
            self.record["param_bytes"] = sum(p.numel() * p.element_size() for p in params)
            self.record["trainable_param_bytes"] = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
            self.record["grad_bytes"] = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at + 1 and "optimizer_state_bytes" not in self.record:
            self.record["optimizer_state_bytes"] = sum(
                t.numel() * t.element_size() for opt in trainer.optimizers for state in opt.state.values()
                for t in state.values() if isinstance(t, torch.Tensor))


def _batch_size(trainer) -> int | None:
    dm = getattr(trainer, "datamodule", None)
    return getattr(dm, "batch_size", None)


class StepParts(pl.Callback):
    """Real-time boundaries inside each training step (step_parts.py): batch start, backbone forward
    start/end (hooks on `pl_module.backbone`), before/after backward, before the optimizer step, batch end."""

    last: "StepParts | None" = None

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []
        self._now: dict[str, float] = {}
        self._hooked = False
        StepParts.last = self

    def _mark(self, name: str) -> None:
        self._now[name] = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self._hooked:
            pl_module.backbone.register_forward_pre_hook(lambda *_: self._mark("forward_start"))
            pl_module.backbone.register_forward_hook(lambda *_: self._mark("forward_end"))
            self._hooked = True
        self._now = {"batch_start": time.perf_counter()}

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._mark("backward_start")

    def on_after_backward(self, trainer, pl_module) -> None:
        self._mark("backward_end")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._mark("optimizer_start")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._mark("batch_end")
        self.steps.append(dict(self._now))
