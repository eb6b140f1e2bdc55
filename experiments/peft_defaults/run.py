"""Per-method fine-tuning defaults: sweep each `peft=` method's lr on the validation split.

Protocol (the issue's): the default transformer pretrained with `task=supervised` on MNIST-1D
classes 0-4 (`trainer.max_epochs=15`, as `task=transfer` does), then fine-tuned on classes 5-9 with
all labels (`trainer.max_epochs=60`, as the pipeline's target stages). Every (method, lr) is a
`task=finetune` run; the lr each method gets as its default (`peft.optimizer.lr`) is the one with
the best mean `val/acc`; test accuracy is only reported.

    nice python experiments/peft_defaults/run.py --seeds 0 --methods full lora --lrs 1e-3 3e-3 1e-2
    python experiments/peft_defaults/run.py --report-only
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))

from studylib import PROBE_BEFORE_20261207, ci95, compose_train, train_once, write_csv  # noqa: E402

SOURCE, TARGET = "[0,1,2,3,4]", "[5,6,7,8,9]"
BASE = ["model=transformer", "data=mnist1d", "threads=1"]  # one torch thread a run (studies share the cores)
METHODS = {  # name -> peft overrides
    "full": ["peft=full"],
    "lora": ["peft=lora", "peft.r=2"],  # the issue's `peft=lora peft.r=2`: every other LoRA key at its default
    "dora": ["peft=dora"],
    "ia3": ["peft=ia3"],
    "adapter": ["peft=adapter"],
    "bitfit": ["peft=bitfit"],
    "linear_probe": ["peft=linear_probe", *PROBE_BEFORE_20261207],  # the probe its rows used (60 epochs: the protocol's)
}
FIELDS = ["method", "variant", "lr", "seed", "epochs", "val_acc", "test_acc", "trainable_pct", "wall_s", "overrides"]
# Issue 21 added patch_embed to the transformer's default LoRA-family targets. Rows run before on the old
# default targets are recognised by their trainable share (a property of the config, not of the result)
# and relabelled with the overrides that reproduce them now; `embed` rows (the new targets given
# explicitly) are the default config.
EMBED = "peft.target_modules=[patch_embed,q_proj,k_proj,v_proj,out_proj,fc1,fc2]"
NO_EMBED = "peft.target_modules=[q_proj,k_proj,v_proj,out_proj,fc1,fc2]"
OLD_TARGETS_PCT = {("lora", "default"): 4.53, ("lora", "alpha4"): 4.53, ("lora", "bias-all"): 5.93,
                   ("dora", "default"): 9.48, ("ia3", "default"): 1.29}


def relabel(rows: list[dict]) -> list[dict]:
    for r in rows:
        key, pct = (r["method"], r["variant"]), float(r["trainable_pct"])
        if OLD_TARGETS_PCT.get(key) == pct and NO_EMBED not in (r["overrides"] or ""):
            r["variant"] = "no-embed" if r["variant"] == "default" else f"{r['variant']}-no-embed"
            r["overrides"] = " ".join(x for x in (r["overrides"], NO_EMBED) if x)
        elif r["method"] == "lora" and r["variant"] == "embed" and r["overrides"] == EMBED:
            r["variant"], r["overrides"] = "default", ""
    return rows


def study(work: Path, seeds: list[int], methods: list[str], lrs: list[float | None], epochs: int | None, variant: str,
          extra: list[str]) -> list[dict]:
    rows = []
    for seed in seeds:
        pre = work / f"seed{seed}" / "pretrain"
        train_once(["task=supervised", *BASE, f"seed={seed}", f"data.classes={SOURCE}", "trainer.max_epochs=15"], pre)
        for method in methods:
            for lr in lrs:  # None: the method's own default lr (what `peft=<method>` alone gets)
                t0 = time.perf_counter()
                lr_key = [] if lr is None else [f"optimizer.lr={lr}"]
                # epochs None: the method's own default (peft.trainer.max_epochs, e.g. lora), else the protocol's 60,
                # the same rule as the transfer pipeline's fine-tuning stage (conf/task/transfer.yaml)
                epochs_key = "${oc.select:peft.trainer.max_epochs,60}" if epochs is None else str(epochs)
                overrides = ["task=finetune", *BASE, *METHODS[method], f"seed={seed}", f"task.pretrained={pre}",
                             f"data.classes={TARGET}", f"trainer.max_epochs={epochs_key}", "trainer.check_val_every_n_epoch=10",
                             *lr_key, *extra]
                composed = compose_train(overrides, work / "compose")
                used_lr, used_epochs = float(composed.optimizer.lr), int(composed.trainer.max_epochs)  # what the run gets
                out = work / f"seed{seed}" / f"{method}-{variant}-lr{lr}-e{used_epochs if epochs is None else epochs}"
                m = train_once(overrides, out)
                rows.append({"method": method, "variant": variant, "lr": used_lr, "seed": seed,
                             "epochs": used_epochs, "val_acc": round(m["val/acc"], 4),
                             "test_acc": round(m["test/acc"], 4), "trainable_pct": round(m.get("params/trainable_pct", 0), 2),
                             "wall_s": round(m.get("time/wall_s", time.perf_counter() - t0), 1), "overrides": " ".join(extra)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def report(rows: list[dict]) -> str:
    def ms(v: list[float]) -> str:
        return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"

    lines = ["| method | variant | lr | epochs | seeds | trainable % | val acc | test acc | test − full (same seeds and epochs, "
             "best-val lr of full) | test − full at its defaults (lr 3e-3, 60 epochs; same seeds) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    cells = {}
    for r in rows:
        key = (r["method"], r.get("variant") or "default", float(r["lr"]), int(r["epochs"]))
        cells.setdefault(key, {})[int(r["seed"])] = r
    best_full = {}
    for (method, _variant, _lr, ep), by_seed in cells.items():
        if method == "full":
            val = statistics.mean(float(r["val_acc"]) for r in by_seed.values())
            if ep not in best_full or val > best_full[ep][0]:
                best_full[ep] = (val, by_seed)
    def gap(by_seed: dict, full: dict) -> str:
        seeds = sorted(set(by_seed) & set(full))
        diff = [100 * (float(by_seed[s]["test_acc"]) - float(full[s]["test_acc"])) for s in seeds]
        return (f"{statistics.mean(diff):+.1f} ± {statistics.stdev(diff):.1f} (95 % CI ± {ci95(diff):.1f})" if len(diff) > 1
                else f"{diff[0]:+.1f}" if diff else "-")

    full_defaults = cells.get(("full", "default", 0.003, 60), {})
    for (method, variant, lr, ep), by_seed in sorted(cells.items(), key=lambda kv: (kv[0][0] != "full", kv[0])):
        lines.append(f"| {method} | {variant} | {lr:g} | {ep} | {len(by_seed)} | "
                     f"{float(next(iter(by_seed.values()))['trainable_pct']):.1f} | "
                     f"{ms([100 * float(r['val_acc']) for r in by_seed.values()])} | "
                     f"{ms([100 * float(r['test_acc']) for r in by_seed.values()])} | "
                     f"{gap(by_seed, best_full.get(ep, (None, {}))[1])} | {gap(by_seed, full_defaults)} |")
    table = "\n".join(lines)
    (HERE / "table.md").write_text(table + "\n")
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=str(ROOT / "outputs" / "studies" / "peft_defaults"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["full", "lora"], choices=list(METHODS))
    p.add_argument("--lrs", type=lambda v: None if v == "default" else float(v), nargs="+", default=[None],
                   help="optimizer.lr values to sweep; `default` = none given: each method's own default lr (the default)")
    p.add_argument("--variant", default="default", help="a name for --over (a column of the results)")
    p.add_argument("--over", nargs="*", default=[], help="extra overrides of the fine-tuning runs (e.g. peft.target_modules=...)")
    p.add_argument("--epochs", type=lambda v: None if v == "default" else int(v), default=None,
                   help="fine-tuning epochs; `default` (the default) = each method's own (peft.trainer.max_epochs), else 60")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    os.environ.setdefault("TRANSFERLAB_CACHE", str(Path(args.workdir) / "cache"))
    results = HERE / "results.csv"
    if not args.report_only:
        new = study(Path(args.workdir), args.seeds, args.methods, args.lrs, args.epochs, args.variant, args.over)
        key = lambda r: (r["method"], r.get("variant") or "default", float(r["lr"]), str(r["seed"]), str(r["epochs"]))  # noqa: E731
        done = {key(r) for r in new}
        old = list(csv.DictReader(open(results))) if results.is_file() else []  # read now: another sweep may have written
        rows = relabel([r for r in old if key(r) not in done] + new)
        write_csv(results, [{k: r.get(k) for k in FIELDS} for r in rows])
    print(report(list(csv.DictReader(open(results)))))


if __name__ == "__main__":
    main()
