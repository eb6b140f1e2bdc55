"""Does the torch thread count change a run's numbers? The frontier's seed-0 pretraining, alone on the
machine, with `threads=1` and with `threads=2`; each run's source accuracy and per-epoch validation
accuracy, and whether the 1-thread run reproduces the committed study row exactly.

    python experiments/peft_frontier/thread_check.py      # ~5 min here (two 60-epoch pretrainings)

Writes thread_check.json next to this file.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from run import plan  # noqa: E402
from studylib import ROOT, run_jobs  # noqa: E402


def val_curve(folder: Path) -> list[float]:
    with open(folder / "csv" / "metrics.csv") as f:
        return [round(float(r["val/acc"]), 4) for r in csv.DictReader(f) if r.get("val/acc")]


def main() -> None:
    job = plan([0], "transformer", 50, 60, smoke=False)[0][0]
    work = ROOT / "outputs" / "studies" / "thread_check"
    runs = {}
    for n in (1, 2):
        metrics = run_jobs([job], work / f"threads{n}", parallel=1, extra=[f"threads={n}"])[job.name]
        runs[n] = {"threads/torch": metrics["threads/torch"], "test/acc": metrics["test/acc"],
                   "val_acc_per_epoch": val_curve(work / f"threads{n}" / job.name)}
    study = next(r for r in json.loads((HERE / "results.json").read_text())["rows"] if r["seed"] == 0 and r["method"] == "pretrain")
    one, two = runs[1]["val_acc_per_epoch"], runs[2]["val_acc_per_epoch"]
    out = {"command": " ".join(job.overrides), "runs": runs,
           "first_epoch_differing": next((i for i, (a, b) in enumerate(zip(one, two)) if a != b), None),
           "study_row_test_acc": study["test/acc"], "threads1_reproduces_study_row": runs[1]["test/acc"] == study["test/acc"]}
    (HERE / "thread_check.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}), {n: r["test/acc"] for n, r in runs.items()})


if __name__ == "__main__":
    main()
