"""Scaling: training throughput of 1 process vs 2 DDP processes on CPU (trainer=ddp_cpu, gloo).

Each configuration is a real `python -m transferlab.train` run (task=supervised, data=mnist1d,
the mid-sized transformer, data.batch_size per process), timed from inside by a benchmark callback
(steady state after `--warmup` steps, validation excluded). Throughput = processes x batch x
steps/s. The 1-process run is measured with all cores (torch's default threads) and with one
thread, since Lightning gives each of N DDP processes cores/N threads.

    python experiments/benchmarks/scaling.py [--steps 60] [--size mid]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    ALLOWED,
    ROOT,
    load_average,
    machine,
    model_overrides,
    print_table,
    steady_rate,
    write_results,
)

HERE = Path(__file__).resolve().parent
CONFIGS = {  # name -> (trainer overrides, extra environment)
    "1 process, all threads": (["trainer=default"], {}),
    "1 process, 1 thread": (["trainer=default"], {"OMP_NUM_THREADS": "1"}),
    "2 DDP processes (gloo)": (["trainer=ddp_cpu"], {}),
}


def run(name: str, size: str, steps: int, warmup: int, tmp: Path) -> dict:
    trainer, extra_env = CONFIGS[name]
    tag = f"run_{time.monotonic_ns()}"
    env = {**os.environ, **extra_env, "BENCH_TIMER_OUT": str(tmp / tag), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(HERE), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "transferlab.train", "task=supervised", "data=mnist1d", *model_overrides(size), *trainer,
           "trainer.max_epochs=-1", f"trainer.max_steps={steps + warmup + 1}", "trainer.enable_progress_bar=false",
           f"hydra.run.dir={tmp / (tag + '_dir')}", ALLOWED, "+callbacks.bench_timer._target_=steptimer.StepTimer"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    records = [json.loads(p.read_text()) for p in sorted(tmp.glob(f"{tag}.*.json"))]
    rates = []
    for r in records:
        starts = r["starts"]
        val = sum(d for s, d in r["validations"] if starts[warmup] <= s < starts[-1])
        rates.append(steady_rate(starts, warmup, val))
    world = records[0]["world_size"]
    batch = records[0]["batch_size"]
    steps_s = min(rates)  # DDP steps are in lockstep; the slowest rank sets the pace
    return {"config": name, "processes": world, "threads_per_process": records[0]["torch_threads"], "batch_per_process": batch,
            "steps_per_s": steps_s, "samples_per_s": world * batch * steps_s, "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="mid")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--configs", nargs="*", default=list(CONFIGS))
    p.add_argument("--out", default=None)
    args = p.parse_args()
    load0 = load_average()
    with tempfile.TemporaryDirectory(prefix="tl_scaling_") as tmp:
        rows = [run(name, args.size, args.steps, args.warmup, Path(tmp)) for name in args.configs]
    base = rows[0]["samples_per_s"]
    for r in rows:
        r["speedup_vs_first"] = r["samples_per_s"] / base
    table = print_table(rows)
    write_results("scaling", {"machine": machine(), "load_start": load0, "load_end": load_average(), "size": args.size,
                              "steps": args.steps, "warmup": args.warmup, "rows": rows, "table": table}, args.out)


if __name__ == "__main__":
    main()
