"""Self-supervised vs supervised pretraining on MNIST-1D, transferred with few labels.

Per seed: pretrain a transformer on MNIST-1D classes 0-4 with task=contrastive and task=masked
(the objectives never read the labels; only their online probes do), and with task=supervised
(labels used) for reference. Then, on classes 5-9 with LABELS labels per class: full fine-tuning,
a linear probe (peft=linear_probe) and a weighted k-NN on the frozen features
(transferlab.knn, bank = the same labelled examples), against the same transformer from random
init (scratch fine-tuning, random-feature probe and k-NN). Mean and std over 3 seeds.

    nice python experiments/ssl_mnist1d/run.py            # ~10-15 min on 2 shared cores
    python experiments/ssl_mnist1d/run.py --report-only   # table and plot from results.csv
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
# results, table and plot; a --smoke run (checks the script) writes to a scratch folder, not over the committed ones
OUT = ROOT / "outputs" / "studies" / "ssl_mnist1d" / "smoke_results" if "--smoke" in sys.argv[1:] else HERE
CONF = ROOT / "conf"
sys.path.insert(0, str(HERE.parent))

from studylib import ONLINE_PROBES_ON, PROBE_BEFORE_20261207  # noqa: E402

SOURCE, TARGET = "[0,1,2,3,4]", "[5,6,7,8,9]"
LABELS = 10                       # labels per target class
MODEL = ["model=transformer", "model.depth=2"]   # width 64, 2 blocks, patch 4 -> 10 tokens
PRETRAIN_EPOCHS = 40
# pretraining rows -> their overrides; every row but the last pretrains for PRETRAIN_EPOCHS (the same budget);
# masked turns its online probes on (off by default) for the table's source-class columns
PRETRAINS = {
    "supervised": ["task=supervised"],
    "contrastive": ["task=contrastive"],
    "masked": ["task=masked", *ONLINE_PROBES_ON],
    # issue 21's recipe as conf/task/masked.yaml gives it: its own 200 epochs (task.trainer.max_epochs), k-NN probe on
    "masked, its 200 epochs": ["task=masked", "task.probe.knn.enabled=true"],
}
OWN_EPOCHS = {"masked, its 200 epochs"}
DOWN_EPOCHS = 100                 # 50 labels = 1 batch per epoch -> 100 optimizer steps
PROBE_LR = 1e-2                   # the linear probe trains only a head: a larger step
# the downstream methods -> their overrides: `linear probe` is the probe the committed rows used (pinned: CLS token);
# `default probe` is peft=linear_probe's own defaults since 2026-12-07 (mean pool, lr 0.03; its 100 epochs = the study's)
METHODS = {"fine-tune": ["peft=full"], "linear probe": ["peft=linear_probe", *PROBE_BEFORE_20261207, f"optimizer.lr={PROBE_LR}"],
           "default probe": ["peft=linear_probe"]}
KNN_K = 5


def compose(overrides: list[str], out: Path, config_name: str = "train"):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=[*overrides, f"paths.output_dir={out}"])


def run(overrides: list[str], out: Path) -> dict:
    """One training run in-process (skipped when its metrics.json exists: the study resumes)."""
    from transferlab.runner.run import train

    if not (out / "metrics.json").is_file():
        train(compose([*overrides, "trainer.enable_progress_bar=false"], out))
    return json.loads((out / "metrics.json").read_text())


def knn(ckpt: Path, seed: int, out: Path) -> dict:
    from transferlab.knn import knn_eval

    if not (out / "metrics.json").is_file():
        knn_eval(compose([f"ckpt_path={ckpt}", f"data.classes={TARGET}", f"data.labels_per_class={LABELS}",
                          f"seed={seed}", f"k={KNN_K}"], out, "knn"))
    return json.loads((out / "metrics.json").read_text())


def folder_name(row: str) -> str:
    """A table row's name as a run folder name: `masked, its 200 epochs` -> `masked_its_200_epochs`."""
    return row.replace(",", "").replace(" ", "_")


def study(work: Path, seeds: list[int], smoke: bool) -> list[dict]:
    pre_epochs, down_epochs = (1, 2) if smoke else (PRETRAIN_EPOCHS, DOWN_EPOCHS)
    rows = []
    for seed in seeds:
        common = [*MODEL, "data=mnist1d", f"seed={seed}", "threads=1"]  # one torch thread per run (the study runs in one process)
        target = [*common, f"data.classes={TARGET}", f"data.labels_per_class={LABELS}", f"trainer.max_epochs={down_epochs}",
                  f"trainer.check_val_every_n_epoch={max(1, down_epochs // 4)}"]
        sources = {"random init": None}
        for obj, task in PRETRAINS.items():
            out = work / f"seed{seed}" / folder_name(obj)
            epochs = ["trainer.check_val_every_n_epoch=10"] if obj in OWN_EPOCHS and not smoke else \
                [f"trainer.max_epochs={pre_epochs}", f"trainer.check_val_every_n_epoch={max(1, pre_epochs // 4)}"]
            t0 = time.perf_counter()
            m = run([*task, *common, f"data.classes={SOURCE}", *epochs], out)
            sources[obj] = out
            rows.append({"seed": seed, "pretrain": obj, "method": "pretrain (source 0-4)", "test_acc": None,
                         "source_knn_acc": m.get("test/knn_acc"), "source_linear_acc": m.get("test/linear_acc"),
                         "wall_s": round(time.perf_counter() - t0, 1)})
            print(f"seed {seed} pretrain {obj}: {json.dumps({k: round(v, 4) for k, v in m.items() if k.startswith('test/')})}", flush=True)
        for src, path in sources.items():
            tag = folder_name(src)
            pre = [f"task.pretrained={path}"] if path else []
            for method, extra in METHODS.items():
                t0 = time.perf_counter()
                m = run(["task=finetune", *pre, *extra, *target], work / f"seed{seed}" / f"{tag}-{method.replace(' ', '_')}")
                rows.append({"seed": seed, "pretrain": src, "method": method, "test_acc": m["test/acc"],
                             "wall_s": round(time.perf_counter() - t0, 1)})
            t0 = time.perf_counter()
            out = work / f"seed{seed}" / f"{tag}-knn"
            m = knn(path, seed, out) if path else _random_knn(seed, common, out)
            rows.append({"seed": seed, "pretrain": src, "method": f"k-NN (k={KNN_K})", "test_acc": m["test/knn_acc"],
                         "wall_s": round(time.perf_counter() - t0, 1)})
            print(f"seed {seed} {src}: " + ", ".join(f"{r['method']} {r['test_acc']:.3f}" for r in rows[-len(METHODS) - 1:]), flush=True)
    return rows


def _random_knn(seed: int, common: list[str], out: Path) -> dict:
    """k-NN on the features of the untrained backbone (seeded as scratch fine-tuning is)."""
    import pytorch_lightning as pl

    from transferlab.callbacks.online_probes import feature_bank, knn_predict
    from transferlab.runner.build import build_backbone, build_datamodule
    from transferlab.runner.summary import write_summary

    if not (out / "metrics.json").is_file():
        cfg = compose([*common, "task=finetune", f"data.classes={TARGET}", f"data.labels_per_class={LABELS}"], out)
        pl.seed_everything(seed, verbose=False)
        dm = build_datamodule(cfg)
        dm.setup("fit")
        backbone = build_backbone(cfg, dm.spec).eval()
        bank = feature_bank(backbone, dm.bank_dataloader(), "cpu")  # the bank transferlab.knn uses
        feats, labels = feature_bank(backbone, dm.test_dataloader(), "cpu")
        acc = float((knn_predict(*bank, feats, dm.spec.num_classes, KNN_K, 0.07) == labels).float().mean())
        write_summary(out, {"test/knn_acc": acc})
    return json.loads((out / "metrics.json").read_text())


FIELDS = ["seed", "pretrain", "method", "test_acc", "source_knn_acc", "source_linear_acc", "wall_s"]
# how the table and plot name a method (the rows keep the names they were written with)
SHOWN = {"linear probe": "linear probe (CLS, lr 1e-2)", "default probe": "linear probe (its defaults: mean, lr 0.03)"}


def report(rows: list[dict]) -> str:
    down = [r for r in rows if r["test_acc"] not in (None, "")]
    srcs = list(dict.fromkeys(r["pretrain"] for r in down))
    methods = list(dict.fromkeys(r["method"] for r in down))

    def cell(src: str, method: str) -> tuple[float, float, int]:
        v = [float(r["test_acc"]) for r in down if r["pretrain"] == src and r["method"] == method]
        return (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)) if v else (float("nan"), 0.0, 0)

    lines = ["| pretraining (classes 0-4) | labels used in pretraining | " + " | ".join(SHOWN.get(m, m) for m in methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for s in srcs:
        used = {"random init": "-", "supervised": "yes"}.get(s, "no (hidden)")
        lines.append(f"| {s} | {used} | " + " | ".join(f"{100 * m:.1f} ± {100 * sd:.1f}" for m, sd, _ in (cell(s, x) for x in methods)) + " |")
    pre = [r for r in rows if r["method"].startswith("pretrain")]
    if pre:
        lines += ["", "Online probes at the end of pretraining (source classes 0-4, test split):", "",
                  "| pretraining | test/knn_acc | test/linear_acc | wall s of the invocation, per seed (a reused run: ~0) |",
                  "|---|---|---|---|"]
        for s in dict.fromkeys(r["pretrain"] for r in pre):
            rs = [r for r in pre if r["pretrain"] == s]

            def ms(key: str) -> str:
                v = [float(r[key]) for r in rs if r.get(key) not in (None, "")]
                return f"{100 * statistics.mean(v):.1f} ± {100 * statistics.stdev(v) if len(v) > 1 else 0:.1f}" if v else "-"

            walls = " / ".join(f"{float(r['wall_s']):.1f}" for r in rs)
            lines.append(f"| {s} | {ms('source_knn_acc')} | {ms('source_linear_acc')} | {walls} |")
    table = "\n".join(lines)
    (OUT / "table.md").write_text(table + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        stats = [cell(s, method) for s in srcs]
        ax.bar([j + (i - (len(methods) - 1) / 2) * width for j in range(len(srcs))], [100 * m for m, _, _ in stats], width,
               yerr=[100 * sd for _, sd, _ in stats], capsize=3, label=SHOWN.get(method, method))
    ax.axhline(20, color="gray", lw=0.8, ls=":", label="chance")
    ax.set_xticks(range(len(srcs)), [s.replace(", ", ",\n") for s in srcs])  # long labels on two lines
    ax.set_ylabel(f"test accuracy on classes 5-9 (%), {LABELS} labels/class")
    ax.set_title("MNIST-1D: transfer from classes 0-4 (transformer, mean ± std, 3 seeds)")
    ax.set_ylim(0, 80)  # room above the bars for the legend, which would otherwise cover some
    ax.legend(fontsize=8, ncol=3, loc="upper center")
    fig.tight_layout()
    fig.savefig(OUT / "results.png", dpi=120)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=str(ROOT / "outputs" / "studies" / "ssl_mnist1d"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--smoke", action="store_true", help="1-2 epochs per run: checks the script, not the science")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    os.environ.setdefault("TRANSFERLAB_CACHE", str(Path(args.workdir) / "cache"))
    OUT.mkdir(parents=True, exist_ok=True)
    results = OUT / "results.csv"
    if not args.report_only:
        start = time.perf_counter()
        rows = study(Path(args.workdir), args.seeds, args.smoke)
        with open(results, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            w.writerows({k: r.get(k) for k in FIELDS} for r in rows)
        print(f"study wall time: {time.perf_counter() - start:.0f} s", flush=True)
    with open(results) as f:
        rows = list(csv.DictReader(f))
    print(report(rows))


if __name__ == "__main__":
    main()
