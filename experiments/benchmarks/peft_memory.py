"""PEFT memory and speed: full vs lora vs linear_probe fine-tuning of the mid-sized transformer.

Each method runs `run_stage` (task=finetune, data=mnist1d, width 256, depth 6) in a fresh
interpreter, so peak RSS belongs to that method alone. Reported: trainable parameters; bytes held
by parameters, gradients and optimizer state (AdamW: two fp32 moments per trainable parameter);
the training peak RSS above the process's RSS before the run; steady-state steps/s; last.ckpt size.
On a GPU the same split shows in torch.cuda.max_memory_allocated (see RESULTS.md).

    python experiments/benchmarks/peft_memory.py [--methods full,lora,linear_probe] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    ALLOWED,
    compose,
    load_average,
    machine,
    model_overrides,
    print_table,
    steady_rate,
    write_results,
)


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(method: str, steps: int, warmup: int, out: str, size: str) -> None:
    import peft  # noqa: F401  (imported up front by every method, so RSS growth is training's, not LoRA's import)
    from steptimer import MemoryProbe, StepTimer

    from transferlab.runner.stage import run_stage

    run_dir = Path(out).with_suffix("")
    cfg = compose(["task=finetune", f"peft={method}", "data=mnist1d", *model_overrides(size), "trainer.max_epochs=-1",
                   f"trainer.max_steps={steps + warmup + 1}", ALLOWED, "+callbacks.bench_timer._target_=steptimer.StepTimer",
                   "+callbacks.bench_memory._target_=steptimer.MemoryProbe"], run_dir)
    before = rss_mb()
    summary = run_stage(cfg, run_dir)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    timer, probe = StepTimer.last, MemoryProbe.last
    starts = timer.starts
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    record = {"method": method, "trainable_params": summary["params/trainable"], "total_params": summary["params/total"],
              **probe.record, "rss_before_mb": before, "peak_rss_mb": peak, "train_peak_increase_mb": peak - before,
              "steps_per_s": steady_rate(starts, warmup, timer.validation_within(starts[warmup], starts[-1])),
              "last_ckpt_mb": ckpt.stat().st_size / 2**20 if ckpt.exists() else None}
    Path(out).write_text(json.dumps(record))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="full,lora,linear_probe")
    p.add_argument("--size", default="mid")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--out", default=None)
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child[0], args.steps, args.warmup, args.child[1], args.size)
    load0 = load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tl_peft_mem_") as tmp:
        for method in args.methods.split(","):
            out = Path(tmp) / f"{method}_{time.monotonic_ns()}.json"
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", method, str(out), "--steps", str(args.steps),
                                   "--warmup", str(args.warmup), "--size", args.size], capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(out.read_text())
            mb = 2**20
            rows.append({"method": method, "trainable_params": int(r["trainable_params"]),
                         "trainable_pct": 100.0 * r["trainable_params"] / r["total_params"],
                         "param_mb": r["param_bytes"] / mb, "grad_mb": r["grad_bytes"] / mb,
                         "optimizer_state_mb": r["optimizer_state_bytes"] / mb,
                         "train_peak_increase_mb": r["train_peak_increase_mb"], "peak_rss_mb": r["peak_rss_mb"],
                         "steps_per_s": r["steps_per_s"], "last_ckpt_mb": r["last_ckpt_mb"]})
    table = print_table(rows)
    write_results("peft_memory", {"machine": machine(), "load_start": load0, "load_end": load_average(), "size": args.size,
                                  "steps": args.steps, "warmup": args.warmup, "rows": rows, "table": table}, args.out)


if __name__ == "__main__":
    main()
