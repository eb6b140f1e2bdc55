"""What each part of transferlab's training loop costs on the small model, per call and as a share of the run.

step_parts.py times the parts *inside* a median step; the overhead ratio (overhead.py) also counts the
steps that end an epoch, where checkpoints are written. This wraps the callables that do transferlab's
own work (metric updates, `self.log`, zero_grad, checkpoint saves, the callbacks' per-step hooks) with
`time.perf_counter()` in overhead.py's transferlab run (same config, steps and threads) and reports,
per callable, the calls, ms per call and share of the run's training time (first step start to last,
validation loops excluded, as overhead.py counts it). The wrappers are this benchmark's only: nothing
in transferlab is changed.

    python experiments/benchmarks/hook_costs.py      # ~1 min here (3 runs of 166 steps)
"""

from __future__ import annotations

import argparse
import collections
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ALLOWED, compose, load_averages, machine, model_overrides, write_results
from overhead import DEFAULT_STEPS, DEFAULT_WARMUP

TIMES: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)  # label -> (start, seconds) per call


_depth = [0]  # wrapped calls inside a wrapped call (log_dict -> log) count once, in the outer one


INSIDE = "of which Lightning's _ResultMetric.to (inside self.log)"  # a part of a part: not added to the total


def _wrap(cls, name: str, label: str) -> None:
    original = getattr(cls, name)
    nested = label == INSIDE

    @functools.wraps(original)
    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        _depth[0] += 1
        try:
            return original(*args, **kwargs)
        finally:
            _depth[0] -= 1
            if _depth[0] == 0 or nested:
                TIMES[label].append((t0, time.perf_counter() - t0))

    setattr(cls, name, timed)


def instrument() -> None:
    import pytorch_lightning as pl
    from torchmetrics import MeanMetric, MetricCollection

    from transferlab.callbacks.fault_tolerance import FaultTolerance
    from transferlab.callbacks.progress import ProgressBar
    from transferlab.callbacks.step_stats import StepStats

    _wrap(MetricCollection, "update", "train metric updates (acc, f1: MetricCollection.update)")
    _wrap(MeanMetric, "update", "loss mean (MeanMetric.update)")
    _wrap(pl.LightningModule, "log", "self.log (train/loss_step on written steps)")
    _wrap(pl.LightningModule, "log_dict", "self.log_dict (epoch metrics)")
    # private class, wrapped only to time it (where self.log's time goes); Lightning 2.6: result.py
    from pytorch_lightning.trainer.connectors.logger_connector.result import _ResultMetric

    _wrap(_ResultMetric, "to", INSIDE)
    _wrap(pl.LightningModule, "optimizer_zero_grad", "zero_grad (LightningModule.optimizer_zero_grad)")
    _wrap(pl.Trainer, "save_checkpoint", "checkpoint saves (best.ckpt, last.ckpt)")
    _wrap(FaultTolerance, "on_before_backward", "finite-loss check (FaultTolerance)")
    _wrap(ProgressBar, "on_train_batch_end", "progress bar (on_train_batch_end)")
    _wrap(StepStats, "on_train_batch_start", "step stats (StepStats hooks)")
    _wrap(StepStats, "on_train_batch_end", "step stats (StepStats hooks)")


def one_run(size: str, steps: int, threads: int, workdir: Path) -> dict:
    from steptimer import StepTimer

    from transferlab.runner.stage import run_stage

    TIMES.clear()
    out = workdir / f"tl_{time.monotonic_ns()}"
    cfg = compose(["task=supervised", "data=mnist1d", *model_overrides(size), "trainer.max_epochs=-1",
                   f"trainer.max_steps={steps}", "trainer.limit_test_batches=1", ALLOWED, f"threads={threads}",
                   "+callbacks.bench_timer._target_=steptimer.StepTimer"], out)
    before = load_averages()
    run_stage(cfg, out)
    timer = StepTimer.last
    starts = timer.starts
    train_s = starts[-1] - starts[0] - timer.validation_within(starts[0], starts[-1])

    def in_training(t: float) -> bool:  # inside overhead.py's span, outside the validation loops it subtracts
        return starts[0] <= t < starts[-1] and not any(s <= t < s + d for s, d in timer.validations)

    parts = {}
    for label, calls in TIMES.items():
        kept = [d for t, d in calls if in_training(t)]
        if kept:
            parts[label] = {"calls": len(kept), "total_s": sum(kept)}
    return {"train_s": train_s, "steps": len(starts), "parts": parts, "load_before": before, "load_after": load_averages()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(DEFAULT_STEPS), default="small")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    steps = DEFAULT_STEPS[args.size] + DEFAULT_WARMUP[args.size] + 1  # overhead.py's transferlab run
    started, load0 = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), load_averages()
    instrument()
    with tempfile.TemporaryDirectory(prefix="tl_hooks_") as tmp:
        one_run(args.size, 3, args.threads, Path(tmp))  # first-use costs outside the measured runs
        runs = [one_run(args.size, steps, args.threads, Path(tmp)) for _ in range(args.runs)]
    labels = sorted({k for r in runs for k in r["parts"]}, key=lambda k: -sum(r["parts"][k]["total_s"] for r in runs if k in r["parts"]))
    rows = []
    for label in labels:
        got = [r["parts"][label] for r in runs if label in r["parts"]]
        rows.append({"part": label, "calls_per_run": statistics.median(g["calls"] for g in got),
                     "ms_per_call": statistics.median(1000 * g["total_s"] / g["calls"] for g in got),
                     "pct_of_training": statistics.median(100 * r["parts"].get(label, {"total_s": 0})["total_s"] / r["train_s"]
                                                          for r in runs)})
    total = sum(r["pct_of_training"] for r in rows if r["part"] != INSIDE)
    for r in rows:
        print(f"{r['part']:55s} {r['calls_per_run']:6.0f} calls  {r['ms_per_call']:7.3f} ms/call  {r['pct_of_training']:5.2f} %")
    write_results(f"hook_costs_{args.size}", {
        "command": " ".join(["python experiments/benchmarks/hook_costs.py", *sys.argv[1:]]),
        "machine": machine(), "started": started, "load_start": load0, "load_end": load_averages(), "size": args.size,
        "steps": steps, "torch_threads": torch.get_num_threads(), "rows": rows, "pct_total": total,
        "train_ms_per_step": statistics.median(1000 * r["train_s"] / (r["steps"] - 1) for r in runs), "runs": runs}, args.out)
    print(f"hook costs {args.size}: {total:.1f} % of the training time in the parts above")


if __name__ == "__main__":
    main()
