"""Masked pretraining on MNIST-1D, read by the issue's probes and by fine-tuning on few labels.

The backbones: the random transformer, and masked pretrainings `explore.py` ran: on a generated set of
50,000 signals (`big50k`: `data.generator.num_samples=50000 data.generator.seed=7`, 36,000 training signals
instead of the standard 3,600; another generator seed, so none of the standard set's test signals
is among them), and on the standard split with augmentation for 200 epochs (`aug200_np`; `recipe`: the
task's defaults since session 12). Every probe and fine-tuning reads the standard MNIST-1D set (5,000 signals,
seed 42) with the issue's labels: 20 per class for the probes, 10 per class for fine-tuning (all ten classes).

Settings (each a `task=finetune model=transformer data=mnist1d` run, seeds paired):

- `probe default` (before 2026-12-07): `peft=linear_probe` with its defaults of then (`PROBE_BEFORE_20261207`: CLS token,
  no feature norm, lr 3e-3, 20 epochs); the next three rows start from it too
- `probe default, mean pool`: the same with `model.pool=mean`
- `probe batchnorm`: `peft.feature_norm=batchnorm` (MAE's probe: BatchNorm without affine), defaults otherwise
- `probe tuned, mean pool`: `peft.feature_norm=batchnorm optimizer.lr=0.03 trainer.max_epochs=100 model.pool=mean`
  (the few-label probe chosen on validation in `probe_sweep.md`)
- `fine-tune, 10 labels`: `peft=full data.labels_per_class=10` (random backbone = training from scratch)
- `probe default since 2026-12-07`: `peft=linear_probe` with its defaults chosen in `experiments/probe_defaults`

One JSON line per run goes to pool_size.jsonl; `--report` writes pool_size.md (mean ± std over seeds and
the paired gain with its 95 % t-interval).

    python experiments/masked_recipe/explore.py big50k 0 data.generator.num_samples=50000 data.generator.seed=7   # ~10-15 min a seed
    python experiments/masked_recipe/pool_size.py --seeds 0 1 2      # ~8 min here (10 short runs a seed)
    python experiments/masked_recipe/pool_size.py --seeds 0 --backbones big50k_e10   # another explore.py run
    python experiments/masked_recipe/pool_size.py --seeds 0 1 2 --backbones recipe   # task=masked's defaults
    python experiments/masked_recipe/pool_size.py --seeds 0 1 2 --backbones random recipe --settings "probe default since 2026-12-07"
    python experiments/masked_recipe/pool_size.py --report
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from studylib import PROBE_BEFORE_20261207, ROOT, append_jsonl, ci95, read_jsonl, train_once  # noqa: E402

BASE = ["task=finetune", "model=transformer", "data=mnist1d", "threads=1"]
PROBE = ["peft=linear_probe", *PROBE_BEFORE_20261207, "data.labels_per_class=20"]  # the probe before 2026-12-07
SETTINGS = {
    "probe default": PROBE,
    "probe default, mean pool": [*PROBE, "model.pool=mean"],
    "probe batchnorm": [*PROBE, "peft.feature_norm=batchnorm"],
    "probe tuned, mean pool": [*PROBE, "peft.feature_norm=batchnorm", "optimizer.lr=0.03", "trainer.max_epochs=100", "model.pool=mean"],
    "fine-tune, 10 labels": ["peft=full", "data.labels_per_class=10"],
    "probe default since 2026-12-07": ["peft=linear_probe", "data.labels_per_class=20"],  # experiments/probe_defaults
}
NAMES = {"probe default": "probe default before 2026-12-07"}  # how the report names a setting whose rows carry another name
PRETRAINED = "outputs/studies/masked_recipe_explore/{name}/seed{seed}/pretrain"  # explore.py's run folders
ROWS = HERE / "pool_size.jsonl"


def run(seeds: list[int], backbones: list[str], only: list[str] | None) -> None:
    work = ROOT / "outputs" / "studies" / "masked_pool_size"
    for seed in seeds:
        for backbone in backbones:
            pretrained = [] if backbone == "random" else [f"task.pretrained={ROOT / PRETRAINED.format(name=backbone, seed=seed)}"]
            for name, over in SETTINGS.items():
                if only and name not in only:
                    continue
                folder = work / backbone / f"seed{seed}" / name.replace(" ", "_").replace(",", "")
                m = train_once([*BASE, f"seed={seed}", *pretrained, *over], folder)
                append_jsonl(ROWS, {"backbone": backbone, "seed": seed, "setting": name, "over": over,
                                  "val_acc": m["val/acc"], "test_acc": m["test/acc"]})


def report() -> str:
    latest = {(r["backbone"], r["seed"], r["setting"]): r for r in read_jsonl(ROWS)}  # a rerun's row replaces the earlier one

    def by_seed(backbone: str, setting: str, field: str) -> dict[int, float]:
        return {s: 100 * r[field] for (b, s, k), r in sorted(latest.items()) if b == backbone and k == setting}

    def cell(values: list[float]) -> str:
        return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"

    lines = ["Test accuracy (%, standard MNIST-1D test set, 10 classes); gain = pretrained − random, paired by seed, "
             "mean ± std (95 % t-interval).\n",
             "| backbone | setting | seeds | random val | pretrained val | random test | pretrained test | gain (test) |",
             "|---|---|---|---|---|---|---|---|"]
    for backbone in sorted({b for b, _, _ in latest} - {"random"}, key=lambda b: (b != "big50k", b)):
        for name in SETTINGS:
            ref, big = by_seed("random", name, "test_acc"), by_seed(backbone, name, "test_acc")
            seeds = sorted(set(ref) & set(big))
            if not seeds:
                continue
            diff = [big[s] - ref[s] for s in seeds]
            gain = (f"{statistics.fmean(diff):+.1f} ± {statistics.stdev(diff):.1f} ({statistics.fmean(diff) - ci95(diff):+.1f} to "
                    f"{statistics.fmean(diff) + ci95(diff):+.1f})" if len(diff) > 1 else f"{diff[0]:+.1f}")
            val_ref, val_big = by_seed("random", name, "val_acc"), by_seed(backbone, name, "val_acc")
            lines.append(f"| {backbone} | {NAMES.get(name, name)} | {', '.join(map(str, seeds))} | {cell([val_ref[s] for s in seeds])} | "
                         f"{cell([val_big[s] for s in seeds])} | {cell([ref[s] for s in seeds])} | {cell([big[s] for s in seeds])} | {gain} |")
    text = "\n".join(lines) + "\n"
    (HERE / "pool_size.md").write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--backbones", nargs="+", default=["random", "big50k"],
                   help="random, or names of explore.py runs (outputs/studies/masked_recipe_explore/NAME/seedS/pretrain)")
    p.add_argument("--settings", nargs="+", default=None, choices=list(SETTINGS), help="only these settings (default: all)")
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    if args.report:
        print(report())
        return
    run(args.seeds, args.backbones, args.settings)


if __name__ == "__main__":
    main()
