"""Data pipeline: batches/s each built-in datamodule's training loader delivers vs steps/s its model consumes.

For each default pairing (data -> model): the train loader is iterated on its own (whole epochs,
new iterator each epoch, as Lightning does), and the model's training step (forward, loss,
backward, AdamW) runs on batches already in memory. headroom = loader batches/s / model steps/s;
loading is never the bottleneck when it is well above 1. `--workers` repeats the loader
measurement with worker processes, to check the `num_workers: 0` default of in-memory data.

    python experiments/benchmarks/data_pipeline.py [--datasets mnist1d,digits,bbc_news,csv]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import compose, load_average, machine, print_table, write_results

PAIRS = {"mnist1d": "cnn", "digits": "cnn", "bbc_news": "transformer", "csv": "mlp"}


def make_csv(path: Path, rows: int = 5000, features: int = 32, classes: int = 4, seed: int = 0) -> Path:
    """A numeric table with a learnable label (a user's own CSV)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    y = (x[:, :classes] + 0.5 * rng.normal(size=(rows, classes))).argmax(1)
    header = ",".join([f"f{i}" for i in range(features)] + ["label"])
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="", fmt=["%.5f"] * features + ["%d"])
    return path


def loader_rate(dm, min_batches: int, min_seconds: float) -> tuple[float, int]:
    n, t0 = 0, time.perf_counter()
    while n < min_batches or time.perf_counter() - t0 < min_seconds:
        for _ in dm.train_dataloader():
            n += 1
    return n / (time.perf_counter() - t0), n


def model_rate(cfg, dm, steps: int, warmup: int = 3) -> float:
    import torch

    from transferlab.runner.build import build_backbone, build_task

    task = build_task(cfg, build_backbone(cfg, dm.spec), dm.spec)
    opt = torch.optim.AdamW(task.parameters(), lr=1e-3)
    batches = []
    for b in dm.train_dataloader():
        batches.append(b)
        if len(batches) >= 8:
            break
    task.train()
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        x, y = batches[i % len(batches)]
        loss = torch.nn.functional.cross_entropy(task(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="mnist1d,digits,bbc_news,csv")
    p.add_argument("--steps", type=int, default=30, help="model steps measured per dataset")
    p.add_argument("--min-batches", type=int, default=200)
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--workers", type=int, nargs="*", default=[2], help="also measure the loader with these num_workers")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    load0 = load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tl_data_") as tmpname:
        tmp = Path(tmpname)
        for name in args.datasets.split(","):
            over = [f"data={name}", f"model={PAIRS[name]}", "task=supervised"]
            if name == "csv":
                over.append(f"data.path={make_csv(tmp / 'table.csv')}")
            cfg = compose(over, tmp / name)
            from transferlab.runner.build import build_datamodule

            t0 = time.perf_counter()
            dm = build_datamodule(cfg)
            dm.setup("fit")
            setup_s = time.perf_counter() - t0
            rate, n = loader_rate(dm, args.min_batches, args.min_seconds)
            steps = model_rate(cfg, dm, args.steps)
            row = {"data": name, "model": PAIRS[name], "batch": int(cfg.data.batch_size), "train_size": len(dm.train_set),
                   "setup_s": setup_s, "num_workers": int(cfg.data.num_workers), "loader_batches_s": rate,
                   "model_steps_s": steps, "headroom": rate / steps}
            rows.append(row)
            for w in args.workers:
                if w == row["num_workers"]:
                    continue
                wcfg = compose([*over, f"data.num_workers={w}"], tmp / f"{name}_w{w}")
                wdm = build_datamodule(wcfg)
                wdm.setup("fit")
                wrate, _ = loader_rate(wdm, args.min_batches, args.min_seconds)
                rows.append({**row, "num_workers": w, "loader_batches_s": wrate, "headroom": wrate / steps, "setup_s": float("nan")})
    table = print_table(rows)
    write_results("data_pipeline", {"machine": machine(), "load_start": load0, "load_end": load_average(), "rows": rows,
                                    "table": table}, args.out)


if __name__ == "__main__":
    main()
