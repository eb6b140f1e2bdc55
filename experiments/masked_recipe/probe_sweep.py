"""Which `peft=linear_probe` settings read frozen features best? Chosen on validation, on the issue's probe
protocol (MNIST-1D, 10 classes, 20 labels per class), for a random backbone and a masked-pretrained one.

Grid: `peft.feature_norm` none | batchnorm x `optimizer.lr` 3e-3 | 1e-2 | 3e-2 x `trainer.max_epochs`
20 | 100. Backbones: `random` (the transformer untrained) and a masked pretraining run folder given with
`--backbone NAME=RUN_FOLDER_PATTERN` (`{seed}` is filled in). One JSON line per probe run goes to
probe_sweep.jsonl; `--report` writes probe_sweep.md: every setting's validation accuracy per backbone
(the choice is the best mean over the backbones), and the chosen and the old default on test.

    python experiments/masked_recipe/probe_sweep.py --seeds 1 --backbone random                 # ~3 min here
    python experiments/masked_recipe/probe_sweep.py --seeds 1 \\
        --backbone 'e100_d4=outputs/studies/masked_recipe_explore/e100_d4/seed{seed}/pretrain'   # ~3 min
    python experiments/masked_recipe/probe_sweep.py --seeds 0 1 2 --backbone random \\
        --settings 'peft.feature_norm=batchnorm optimizer.lr=0.03 trainer.max_epochs=100' --over model.pool=mean
    python experiments/masked_recipe/probe_sweep.py --report
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from studylib import PROBE_BEFORE_20261207, ROOT, append_jsonl, ci95, read_jsonl, train_once  # noqa: E402

LABELS = 20
# the grid's keys are given; the rest (the pool) is the probe's before 2026-12-07, which its rows used
BASE = ["task=finetune", "peft=linear_probe", *PROBE_BEFORE_20261207, "model=transformer", "data=mnist1d", "threads=1",
        f"data.labels_per_class={LABELS}"]
GRID = {"peft.feature_norm": ["none", "batchnorm"], "optimizer.lr": [3e-3, 1e-2, 3e-2], "trainer.max_epochs": [20, 100]}
OLD_DEFAULT = ("none", 3e-3, 20)
ROWS = HERE / "probe_sweep.jsonl"


def settings(only: list[str] | None) -> list[tuple]:
    grid = list(itertools.product(*GRID.values()))
    return [s for s in grid if only is None or key(s) in only]


def key(setting: tuple) -> str:
    return " ".join(f"{k}={v}" for k, v in zip(GRID, setting))


def run(backbone: str, pattern: str | None, seeds: list[int], only: list[str] | None, over: list[str]) -> None:
    work = ROOT / "outputs" / "studies" / "masked_probe_sweep" / backbone
    for seed in seeds:
        pretrained = [f"task.pretrained={ROOT / pattern.format(seed=seed)}"] if pattern else []
        for s in settings(only):
            folder = work / f"seed{seed}" / "_".join([*(str(v) for v in s), *(o.replace("=", "-") for o in over)])
            m = train_once([*BASE, f"seed={seed}", *pretrained, *(f"{k}={v}" for k, v in zip(GRID, s)), *over], folder)
            append_jsonl(ROWS, {"backbone": backbone, "seed": seed, "setting": " ".join([key(s), *over]),
                              "val_acc": m["val/acc"], "test_acc": m["test/acc"]})


def report() -> str:
    latest = {(r["backbone"], r["seed"], r["setting"]): r for r in read_jsonl(ROWS)}  # a rerun's row replaces the earlier one
    backbones = sorted({b for b, _, _ in latest}, key=lambda b: (b != "random", b))

    def by_seed(backbone: str, setting: str, field: str) -> dict[int, float]:
        return {s: 100 * r[field] for (b, s, k), r in sorted(latest.items()) if b == backbone and k == setting}

    def vals(backbone: str, setting: str, field: str, seeds=None) -> list[float]:
        return [v for s, v in by_seed(backbone, setting, field).items() if seeds is None or s in seeds]

    grid = {key(s) for s in settings(None)}
    complete = [{s for (b2, s, k) in latest if b2 == b and k in grid and all((b2, s, g) in latest for g in grid)} for b in backbones]
    if not set.intersection(*complete):
        return "no seed has the whole grid on every backbone yet"
    choose_seeds = {min(set.intersection(*complete))}  # the first seed with the whole grid on every backbone
    lines = [f"Validation accuracy (%, seed {min(choose_seeds)}) per setting; the choice is the best mean over the backbones.\n",
             "| setting | " + " | ".join(f"{b} val" for b in backbones) + " | mean val |", "|---" * (len(backbones) + 2) + "|"]
    scored = []
    for s in settings(None):
        k = key(s)
        per = [vals(b, k, "val_acc", choose_seeds) for b in backbones]
        if not all(per):
            continue
        mean = statistics.fmean(statistics.fmean(p) for p in per)
        scored.append((mean, k))
        lines.append(f"| {k} | " + " | ".join(f"{statistics.fmean(p):.1f}" for p in per) + f" | {mean:.1f} |")
    if not scored:
        return "no rows"
    best = max(scored)[1]
    lines += ["", f"Chosen on validation: `{best}`.", "",
              "Test accuracy (%, every seed run) of the chosen setting, the old default (`" + key(OLD_DEFAULT) + "`) and rows run with `--over`:", "",
              "| setting | " + " | ".join(f"{b} test" for b in backbones) + " | " + " | ".join(f"{b} − random" for b in backbones[1:]) + " |",
              "|---" * (1 + 2 * len(backbones) - 1) + "|"]
    extra = sorted({k for _, _, k in latest} - grid)  # rows run with --over (e.g. another pooling)
    for k in (best, key(OLD_DEFAULT), *extra):
        tests = [vals(b, k, "test_acc") for b in backbones]
        cells = [f"{statistics.fmean(t):.1f} ± {statistics.stdev(t):.1f} (n={len(t)})" if len(t) > 1 else
                 (f"{t[0]:.1f} (n=1)" if t else "-") for t in tests]
        gains, ref = [], by_seed(backbones[0], k, "test_acc")
        for b in backbones[1:]:
            other = by_seed(b, k, "test_acc")
            diff = [other[s] - ref[s] for s in sorted(other) if s in ref]  # paired by seed
            gains.append(f"{statistics.fmean(diff):+.1f} ± {statistics.stdev(diff):.1f} (95 % CI ± {ci95(diff):.1f})"
                         if len(diff) > 1 else (f"{diff[0]:+.1f}" if diff else "-"))
        lines.append(f"| {k} | " + " | ".join(cells) + " | " + " | ".join(gains) + " |")
    lines += ["", f"`{backbones[0]}`: the reference; a gain is paired by seed (seeds run on both)."]
    text = "\n".join(lines) + "\n"
    (HERE / "probe_sweep.md").write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--backbone", default=None, help="random, or NAME=RUN_FOLDER_PATTERN with {seed}")
    p.add_argument("--settings", nargs="*", default=None, help="only these settings (as printed in the report)")
    p.add_argument("--over", nargs="*", default=[], help="overrides added to every probe run (recorded in its setting), e.g. model.pool=mean")
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    if args.report:
        print(report())
        return
    name, _, pattern = args.backbone.partition("=")
    run(name, pattern or None, args.seeds, args.settings, args.over)


if __name__ == "__main__":
    main()
