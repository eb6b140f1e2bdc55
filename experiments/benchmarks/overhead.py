"""Training-loop overhead: transferlab's run_stage vs a minimal plain-PyTorch loop, same work.

Both paths train the same transformer backbone (+ linear head) on the same MNIST-1D in-memory
tensors with AdamW, the same batch size and the same number of steps. transferlab runs through
`run_stage` on a composed config with logging, progress bar and checkpointing at their defaults;
the plain loop is forward / backward / step. Steady state = steps after `--warmup`, from the start
of one step to the start of the last (so per-step hooks, logging and periodic checkpoints count);
transferlab's validation loops (work the plain loop does not do) are subtracted and reported apart.

    python experiments/benchmarks/overhead.py                       # small + mid, defaults
    python experiments/benchmarks/overhead.py --sizes mid --override callbacks.progress_bar.refresh_rate=1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import (
    ALLOWED,
    compose,
    load_average,
    machine,
    median,
    model_overrides,
    print_table,
    steady_rate,
    write_results,
)

DEFAULT_STEPS = {"small": 600, "mid": 200}


def transferlab_rate(size: str, steps: int, warmup: int, extra: list[str], workdir: Path) -> dict:
    from steptimer import StepTimer

    from transferlab.runner.stage import run_stage

    out = workdir / f"tl_{size}_{time.monotonic_ns()}"
    cfg = compose(["task=supervised", "data=mnist1d", *model_overrides(size), "trainer.max_epochs=-1",
                   f"trainer.max_steps={steps + warmup + 1}", ALLOWED, "+callbacks.bench_timer._target_=steptimer.StepTimer",
                   *extra], out)
    summary = run_stage(cfg, out)
    timer = StepTimer.last
    starts = timer.starts
    excluded = timer.validation_within(starts[warmup], starts[-1])
    return {"steps_per_s": steady_rate(starts, warmup, excluded), "validation_s": excluded,
            "steps_per_s_incl_val": steady_rate(starts, warmup), "steps": len(starts), "test_acc": summary.get("test/acc")}


def plain_rate(size: str, steps: int, warmup: int, workdir: Path) -> dict:
    """The hand-written loop a researcher would write: DataLoader over the same tensors, AdamW."""
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader

    from transferlab.runner.build import build_backbone, build_datamodule

    cfg = compose(["task=supervised", "data=mnist1d", *model_overrides(size)], workdir / "plain")
    torch.manual_seed(cfg.seed)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    backbone = build_backbone(cfg, dm.spec)
    model = nn.Sequential(backbone, nn.Linear(backbone.feature_dim, dm.spec.num_classes))
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg.optimizer.lr), weight_decay=float(cfg.optimizer.weight_decay))
    loader = DataLoader(dm.train_set, batch_size=int(cfg.data.batch_size), shuffle=True)
    model.train()
    starts: list[float] = []
    total = steps + warmup + 1
    while len(starts) < total:
        for x, y in loader:
            starts.append(time.perf_counter())
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if len(starts) >= total:
                break
    return {"steps_per_s": steady_rate(starts, warmup), "steps": len(starts)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="small,mid")
    p.add_argument("--steps", type=int, default=None, help="measured steps (default: small 600, mid 200)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2, help="alternating plain/transferlab pairs; the median is reported")
    p.add_argument("--override", nargs="*", default=[], help="config overrides for the transferlab path (e.g. the old defaults)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--label", default="defaults", help="name of this configuration in the results")
    p.add_argument("--tty", action="store_true", help="render the progress bar as in a terminal (TTY_COMPATIBLE=1), output to /dev/null")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.tty:  # before rich is imported: its console then draws live, as a user's terminal shows it
        import os

        os.environ["TTY_COMPATIBLE"] = "1"
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (restored before the table is printed)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    load0 = load_average()
    rows, raw = [], []
    with tempfile.TemporaryDirectory(prefix="tl_overhead_") as tmp:
        for size in args.sizes.split(","):
            steps = args.steps or DEFAULT_STEPS[size]
            plain, tl = [], []
            for _ in range(args.repeats):
                plain.append(plain_rate(size, steps, args.warmup, Path(tmp)))
                tl.append(transferlab_rate(size, steps, args.warmup, args.override, Path(tmp)))
                print(f"{size}: plain {plain[-1]['steps_per_s']:.2f} steps/s, transferlab {tl[-1]['steps_per_s']:.2f} steps/s "
                      f"(load {load_average():.2f})", file=sys.stderr, flush=True)
            raw.append({"size": size, "plain": plain, "transferlab": tl})
            p_rate, t_rate = median([r["steps_per_s"] for r in plain]), median([r["steps_per_s"] for r in tl])
            rows.append({"config": args.label, "size": size, "steps": steps, "plain_steps_s": p_rate, "transferlab_steps_s": t_rate,
                         "ratio_plain_over_tl": p_rate / t_rate,
                         "tl_incl_val_steps_s": median([r["steps_per_s_incl_val"] for r in tl])})
    if args.tty:
        sys.stdout = sys.__stdout__
    table = print_table(rows)
    write_results(f"overhead_{args.label}", {"machine": machine(), "load_start": load0, "load_end": load_average(),
                                             "override": args.override, "tty": args.tty, "warmup": args.warmup, "rows": rows, "raw": raw,
                                             "table": table}, args.out)


if __name__ == "__main__":
    main()
