"""Wall time of a short default run (the 4-stage transfer pipeline, a few batches per stage) and how
much of it the progress bar spends stopping.

Lightning's RichProgressBar redraws from a thread that sleeps 1/refresh_rate seconds between
draws; stopping the bar (end of every fit and test) joins that thread, so each stop can idle up to
1/refresh_rate seconds. This measures it for several `callbacks.progress_bar.refresh_rate` values.

    python experiments/benchmarks/short_run.py [--rates 1 4 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import compose, load_average, machine, print_table, write_results

SHORT = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
         "task.pretrain_trainer.max_epochs=2", "task.target_trainer.max_epochs=2"]


def child(rate: str, out: str) -> None:
    from pytorch_lightning.callbacks.progress import rich_progress

    stops: list[float] = []
    original = rich_progress.CustomProgress.stop

    def timed_stop(self) -> None:
        t0 = time.perf_counter()
        original(self)
        stops.append(time.perf_counter() - t0)

    rich_progress.CustomProgress.stop = timed_stop
    from transferlab.runner.run import train

    run_dir = Path(out).with_suffix("")
    cfg = compose([*SHORT, f"callbacks.progress_bar.refresh_rate={rate}"], run_dir)
    t0 = time.perf_counter()
    train(cfg)
    Path(out).write_text(json.dumps({"wall_s": time.perf_counter() - t0, "stops": len(stops), "stop_s": sum(stops)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", nargs="*", default=["1", "4", "10"])
    p.add_argument("--out", default=None)
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(*args.child)
    load0 = load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tl_short_") as tmp:
        for rate in args.rates:
            out = Path(tmp) / f"rate{rate}.json"
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", rate, str(out)], capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(proc.stderr[-3000:])
            r = json.loads(out.read_text())
            rows.append({"refresh_rate": rate, "pipeline_wall_s": r["wall_s"], "bar_stops": r["stops"], "idle_in_bar_stop_s": r["stop_s"]})
    table = print_table(rows)
    write_results("short_run", {"machine": machine(), "load_start": load0, "load_end": load_average(), "overrides": SHORT,
                                "rows": rows, "table": table}, args.out)


if __name__ == "__main__":
    main()
