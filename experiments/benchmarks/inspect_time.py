"""`python -m transferlab.inspect` on the quickstart's fine-tune stage: wall time from the command to its exit.

Runs the quickstart (`python -m transferlab.train`, seed 0) once into a scratch folder, then times
`python -m transferlab.inspect ckpt_path=<run>` (its default: CKA + weight change, PCA feature maps,
Integrated Gradients) `--repeats` times, each in a fresh interpreter, plus the time spent inside
(`time/wall_s` of representation.json: restore + measure + pictures, imports excluded), and the CPU
seconds each command used (a shared machine's load stretches wall time, not CPU time).

    python experiments/benchmarks/inspect_time.py [--repeats 3] [--run DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, load_average, machine, print_table, write_results


def _children_cpu() -> float:
    """User + system CPU seconds of finished child processes: what the command costs whatever the load."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--run", default=None, help="an existing quickstart run folder (default: run the quickstart first)")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    scratch = Path(tempfile.mkdtemp(prefix="inspect_time_"))
    run = Path(args.run) if args.run else scratch / "quickstart"
    load_start = load_average()
    if not args.run:
        subprocess.run([sys.executable, "-m", "transferlab.train", "trainer.enable_progress_bar=false", f"hydra.run.dir={run}"],
                       cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    for i in range(args.repeats):
        start, cpu = time.perf_counter(), _children_cpu()
        subprocess.run([sys.executable, "-m", "transferlab.inspect", f"ckpt_path={run}", f"hydra.run.dir={scratch / f'log{i}'}"],
                       cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
        inside = json.loads((run / "finetune" / "inspect" / "representation.json").read_text())["time/wall_s"]
        rows.append({"repeat": i, "command_s": round(wall, 2), "cpu_s": round(cpu, 2), "inside_s": round(inside, 2),
                     "load_1min": round(load_average(), 2)})
    walls = [r["command_s"] for r in rows]
    summary = {"median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls),
               "median_cpu_s": statistics.median(r["cpu_s"] for r in rows)}
    print_table(rows)
    print(summary)
    write_results("inspect_time", {"machine": machine(), "load_start": load_start, "load_end": load_average(), "run": str(run),
                                   "rows": rows, "summary": summary, "command": " ".join(sys.argv)})


if __name__ == "__main__":
    main()
