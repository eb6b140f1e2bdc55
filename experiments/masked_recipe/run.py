"""Does the default masked recipe transfer? MAE pretraining on MNIST-1D, then a linear probe.

The issue's check: `task=masked model=transformer data=mnist1d` with its defaults of the time (sessions 4-5: 20
epochs, no augmentation, online probes on; `MASKED_BEFORE_RECIPE` gives them now; all ten classes, labels never
read), then `task=finetune peft=linear_probe data.labels_per_class=20`
on its backbone, against the same probe on the randomly initialised transformer. The probe
variants (`--probes`) are chosen on the validation split; the test split is only reported.

    nice python experiments/masked_recipe/run.py                      # 3 seeds, defaults (~20 min here)
    nice python experiments/masked_recipe/run.py --seeds 0 --variant v1 --pretrain task.mask_ratio=0.5
    python experiments/masked_recipe/run.py --report-only             # table.md from results.csv
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

from studylib import MASKED_BEFORE_RECIPE, PROBE_BEFORE_20261207, ci95, train_once, write_csv  # noqa: E402

LABELS = 20
BASE = ["model=transformer", "data=mnist1d", "threads=1"]  # one torch thread a run (transferlab sets it, not torch.set_num_threads)
# probe variants: name -> overrides of the probe run (the first is `peft=linear_probe` as it was before 2026-12-07)
PROBES = {
    "default": [],
    "cls+bn": ["model.pool=cls", "peft.feature_norm=batchnorm"],
    "cls": ["model.pool=cls", "peft.feature_norm=none"],
    "mean+bn": ["model.pool=mean", "peft.feature_norm=batchnorm"],
    "mean": ["model.pool=mean", "peft.feature_norm=none"],
}
FIELDS = ["variant", "seed", "backbone", "probe", "val_acc", "test_acc", "pretrain_wall_s", "pretrain_overrides"]


def study(work: Path, variant: str, seeds: list[int], pretrain: list[str], probes: list[str]) -> list[dict]:
    rows = []
    for seed in seeds:
        out = work / variant / f"seed{seed}" / "pretrain"
        m = train_once(["task=masked", *MASKED_BEFORE_RECIPE, *BASE, f"seed={seed}", *pretrain], out)  # the recipe its rows used
        wall = round(m.get("time/wall_s", 0.0), 1)
        for backbone, pre in [("masked", [f"task.pretrained={out}"]), ("random", [])]:
            for probe in probes:
                folder = (work / variant if backbone == "masked" else work / "random") / f"seed{seed}" / f"probe-{probe}"
                p = train_once(["task=finetune", "peft=linear_probe", *PROBE_BEFORE_20261207, *BASE, f"seed={seed}",
                                f"data.labels_per_class={LABELS}",
                         *pre, *PROBES[probe]], folder)
                rows.append({"variant": variant, "seed": seed, "backbone": backbone, "probe": probe,
                             "val_acc": round(p["val/acc"], 4), "test_acc": round(p["test/acc"], 4),
                             "pretrain_wall_s": wall if backbone == "masked" else "", "pretrain_overrides": " ".join(pretrain)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def report(rows: list[dict]) -> str:
    lines = ["| pretraining variant | probe | seeds | masked val | random val | masked test | random test | gain (test) ± 95 % CI |",
             "|---|---|---|---|---|---|---|---|"]
    keys = dict.fromkeys((r["variant"], r["probe"]) for r in rows if r["backbone"] == "masked")
    for variant, probe in keys:
        ms = {int(r["seed"]): r for r in rows if r["variant"] == variant and r["probe"] == probe and r["backbone"] == "masked"}
        rs = {int(r["seed"]): r for r in rows if r["probe"] == probe and r["backbone"] == "random"}
        seeds = sorted(set(ms) & set(rs))

        def fmt(src: dict, key: str) -> str:
            v = [100 * float(src[s][key]) for s in seeds]
            return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"

        gain = [100 * (float(ms[s]["test_acc"]) - float(rs[s]["test_acc"])) for s in seeds]
        g = f"{statistics.mean(gain):+.1f} ± {ci95(gain):.1f}" if len(gain) > 1 else f"{gain[0]:+.1f}"
        lines.append(f"| {variant} | {probe} | {len(seeds)} | {fmt(ms, 'val_acc')} | {fmt(rs, 'val_acc')} | "
                     f"{fmt(ms, 'test_acc')} | {fmt(rs, 'test_acc')} | {g} |")
    table = "\n".join(lines)
    (HERE / "table.md").write_text(table + "\n")
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=str(ROOT / "outputs" / "studies" / "masked_recipe"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variant", default="defaults", help="a name for this pretraining recipe")
    p.add_argument("--pretrain", nargs="*", default=[], help="overrides of the masked pretraining (none = defaults)")
    p.add_argument("--probes", nargs="+", default=["default"], choices=list(PROBES))
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    os.environ.setdefault("TRANSFERLAB_CACHE", str(Path(args.workdir) / "cache"))
    results = HERE / "results.csv"
    old = list(csv.DictReader(open(results))) if results.is_file() else []
    if not args.report_only:
        start = time.perf_counter()
        new = study(Path(args.workdir), args.variant, args.seeds, args.pretrain, args.probes)
        done = {(r["variant"], str(r["seed"]), r["backbone"], r["probe"]) for r in new}
        rows = [r for r in old if (r["variant"], str(r["seed"]), r["backbone"], r["probe"]) not in done] + new
        write_csv(results, [{k: r.get(k) for k in FIELDS} for r in rows])
        print(f"wall time: {time.perf_counter() - start:.0f} s", flush=True)
    print(report(list(csv.DictReader(open(results)))))


if __name__ == "__main__":
    main()
