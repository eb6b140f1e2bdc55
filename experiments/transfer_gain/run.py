"""Transfer gain of the quickstart protocol on MNIST-1D and digits, 3 seeds.

    python experiments/transfer_gain/run.py            # runs the sweep, then tabulates
    python experiments/transfer_gain/run.py --collect DIR   # tabulate an existing multirun folder

Protocol (task=transfer, stock configs): supervised pretraining on classes 0-4, then on classes 5-9
with 5 labels per class: fine-tune (full), linear probe, and the same CNN from scratch.
"""

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def run_sweep(out: Path) -> float:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "transferlab.train", "-m", "data=mnist1d,digits", "seed=0,1,2",
           "trainer.enable_progress_bar=false", f"hydra.sweep.dir={out}"]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return time.perf_counter() - start


def collect(sweep: Path) -> list[dict]:
    rows = []
    for m in sorted(sweep.glob("*/metrics.json")):
        d = json.loads(m.read_text())
        rows.append({"data": d["data"], "seed": d["seed"], "finetune": d["finetune/test/acc"],
                     "linear_probe": d["linear_probe/test/acc"], "scratch": d["scratch/test/acc"],
                     "pretrain": d["pretrain/test/acc"], "gain_finetune": d["gain/finetune"],
                     "gain_linear_probe": d["gain/linear_probe"]})
    return rows


def mean_std(values: list[float]) -> str:
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else f"{100 * values[0]:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--collect", type=Path, default=None)
    args = ap.parse_args()
    sweep = args.collect or ROOT / "outputs" / "transfer_gain"
    wall = None if args.collect else run_sweep(sweep)
    rows = collect(sweep)
    with open(HERE / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    cols = ["pretrain", "scratch", "finetune", "linear_probe", "gain_finetune", "gain_linear_probe"]
    lines = ["| data | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for data in sorted({r["data"] for r in rows}):
        sel = [r for r in rows if r["data"] == data]
        lines.append(f"| {data} (n={len(sel)}) | " + " | ".join(mean_std([r[c] for r in sel]) for c in cols) + " |")
    table = "\n".join(lines)
    (HERE / "table.md").write_text(table + "\n" + (f"\nwall time of the sweep: {wall:.0f} s\n" if wall else ""))
    print(table)


if __name__ == "__main__":
    main()
