"""PEFT benchmark (issue 3): accuracy vs trainable parameters on a pretrained transformer.

One command (from the repo root):

    nice python experiments/peft_benchmark/run.py

Pretrains `model=transformer` (width 64, depth 4) supervised on MNIST-1D classes 0-4 once per seed,
then fine-tunes on classes 5-9 with every method, through transferlab's own API: each run is the
real config tree composed with Hydra's compose API and executed by `transferlab.runner.stage.run_stage`
(the same code path as `python -m transferlab.train task=finetune peft=... task.pretrained=...`).
Writes results.csv (one row per run), summary.csv, tables.md and frontier.png next to this file;
run folders go to outputs/peft_benchmark (git-ignored). Finished runs are reused on a rerun.
"""

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 shared cores: one thread per process is ~10x faster than two

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE.parent))

from studylib import PROBE_BEFORE_20261207  # noqa: E402

COMMON = ["threads=1", "model=transformer", "model.width=64", "model.depth=4", "model.heads=4", "data=mnist1d",
          "trainer.enable_progress_bar=false", "logger=csv", "scheduler=cosine", "scheduler.warmup_fraction=0.05"]
# name -> (peft overrides, uses the pretrained backbone); every method trains at its own default lr
# (conf/peft/*.yaml peft.optimizer.lr, chosen on validation in experiments/peft_defaults; else the optimizer group's)
METHODS: dict[str, tuple[list[str], bool]] = {
    "scratch": (["peft=full"], False),
    "full": (["peft=full"], True),
    "linear_probe": (["peft=linear_probe", *PROBE_BEFORE_20261207], True),  # the probe its results used
    "freeze_last2": (["peft=freeze", "peft.trainable_blocks=2"], True),
    "bitfit": (["peft=bitfit"], True),
    "lora_r1": (["peft=lora", "peft.r=1", "peft.alpha=2"], True),
    "lora_r2": (["peft=lora", "peft.r=2", "peft.alpha=4"], True),
    "lora_r4": (["peft=lora", "peft.r=4", "peft.alpha=8"], True),
    "lora_r8": (["peft=lora", "peft.r=8", "peft.alpha=16"], True),
    "dora_r4": (["peft=dora", "peft.r=4", "peft.alpha=8"], True),
    "ia3": (["peft=ia3"], True),
    "loha_r4": (["peft=loha", "peft.r=4", "peft.alpha=8"], True),
    "lokr_r4": (["peft=lokr", "peft.r=4", "peft.alpha=8"], True),
    "adapter_b16": (["peft=adapter", "peft.bottleneck=16"], True),
}
FEW_SHOT_METHODS = ["scratch", "full", "linear_probe", "lora_r1", "lora_r4", "adapter_b16"]


def compose(overrides: list[str], out: Path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=[*overrides, f"paths.output_dir={out}"])


def peak_rss_reset() -> None:
    """Reset the kernel's resident-set high-water mark (VmHWM) so each run's peak is its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run(overrides: list[str], out: Path) -> dict:
    """One run_stage; its metrics.json gains the run's own peak RSS."""
    from transferlab.runner.stage import run_stage

    metrics = out / "metrics.json"
    if metrics.is_file():  # finished earlier: reuse (delete the folder to rerun)
        return json.loads(metrics.read_text())
    peak_rss_reset()
    summary = run_stage(compose(overrides, out), out)
    summary["memory/run_peak_rss_mb"] = peak_rss_mb()
    metrics.write_text(json.dumps(summary, indent=1, default=str))
    return summary


def run_all(jobs: list[tuple[list[str], Path]], workers: int) -> list[dict]:
    """Runs in `workers` processes (one torch thread each), results in the order given."""
    if workers <= 1:
        return [run(o, out) for o, out in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(run, *zip(*jobs)))


def train_state_mb(total: float, trainable: float) -> float:
    """fp32 weights + gradients + AdamW's two moments: what parameter efficiency saves."""
    return 4 * (total + 3 * trainable) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(ROOT / "outputs" / "peft_benchmark"), help="run folders (git-ignored)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--pretrain-epochs", type=int, default=60)
    ap.add_argument("--pretrain-lr", type=float, default=1e-3)
    ap.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs (all labels)")
    ap.add_argument("--few-shot", type=int, default=10, help="labels per class of the few-label setting (0: skip)")
    ap.add_argument("--few-shot-epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", nargs="*", default=[], help="per-method learning rate overrides, e.g. full=3e-4 (default: the method's own)")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    ap.add_argument("--results", default=str(HERE))
    ap.add_argument("--plot-only", action="store_true", help="redraw frontier.png from summary.csv (seconds)")
    args = ap.parse_args()
    runs, results = Path(args.runs).resolve(), Path(args.results)
    if args.plot_only:
        return plot_only(results)
    lrs: dict[str, float | None] = dict.fromkeys(METHODS)
    lrs.update({k: float(v) for k, v in (item.split("=") for item in args.lr)})
    start = time.perf_counter()
    data = [f"data.batch_size={args.batch_size}"]
    pretrains = [([*COMMON, *data, "task=supervised", f"seed={seed}", "data.classes=[0,1,2,3,4]",
                   f"optimizer.lr={args.pretrain_lr}", f"trainer.max_epochs={args.pretrain_epochs}"],
                  runs / "pretrain" / f"seed{seed}") for seed in args.seeds]
    pre_metrics = run_all(pretrains, args.jobs)
    print(f"[{time.perf_counter() - start:6.0f}s] pretrained (classes 0-4 test acc: "
          f"{[round(m['test/acc'], 4) for m in pre_metrics]})", flush=True)
    settings = [("all", None, args.epochs)]
    if args.few_shot:
        settings.append((f"{args.few_shot}/class", args.few_shot, args.few_shot_epochs))
    jobs, meta = [], []
    for setting, k, epochs in settings:
        for name in args.methods:
            if k is not None and name not in FEW_SHOT_METHODS:
                continue
            peft, use_pre = METHODS[name]
            for seed in args.seeds:
                pre = runs / "pretrain" / f"seed{seed}" / "checkpoints" / "last.ckpt"
                over = [*COMMON, *data, "task=finetune", f"seed={seed}", "data.classes=[5,6,7,8,9]", *peft,
                        *([f"optimizer.lr={lrs[name]}"] if lrs[name] is not None else []), f"trainer.max_epochs={epochs}",
                        f"data.labels_per_class={k if k else 'null'}",
                        f"task.pretrained={pre}" if use_pre else "task.pretrained=null"]
                jobs.append((over, runs / ("all" if k is None else f"k{k}") / name / f"seed{seed}"))
                meta.append((setting, name, seed, epochs, float(compose(over, runs).optimizer.lr)))
    rows: list[dict] = []
    for (setting, name, seed, epochs, lr), m in zip(meta, run_all(jobs, args.jobs)):
        rows.append({"setting": setting, "method": name, "seed": seed, "lr": lr, "epochs": epochs,
                     "test_acc": m["test/acc"], "trainable": int(m["params/trainable"]),
                     "adapter": int(m.get("params/adapter", 0)), "total": int(m["params/total"]),
                     "trainable_pct": m["params/trainable_pct"], "step_ms": m.get("time/step_ms"),
                     "peak_rss_mb": m.get("memory/run_peak_rss_mb"),
                     "train_state_mb": train_state_mb(m["params/total"], m["params/trainable"]),
                     "fit_s": m.get("time/fit_s")})
        print(f"{setting:8s} {name:13s} seed {seed}: acc {m['test/acc']:.4f}  trainable {m['params/trainable_pct']:.2f}%")
    write_outputs(rows, results, args, time.perf_counter() - start, pre_metrics)


def aggregate(rows: list[dict]) -> list[dict]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["setting"], r["method"]), []).append(r)
    out = []
    for (setting, method), rs in groups.items():
        accs = [100 * r["test_acc"] for r in rs]

        def mean(key: str) -> float:
            vals = [r[key] for r in rs if r[key] is not None]
            return statistics.fmean(vals) if vals else float("nan")

        out.append({"setting": setting, "method": method, "seeds": len(rs), "trainable": rs[0]["trainable"],
                    "trainable_pct": round(rs[0]["trainable_pct"], 2), "acc_mean": round(statistics.fmean(accs), 2),
                    "acc_std": round(statistics.stdev(accs), 2) if len(accs) > 1 else 0.0,
                    "step_ms": round(mean("step_ms"), 1), "peak_rss_mb": round(mean("peak_rss_mb"), 1),
                    "train_state_mb": round(rs[0]["train_state_mb"], 2)})
    return out


def table(summary: list[dict], setting: str) -> str:
    lines = ["| method | trainable params | trainable % | test acc % (mean ± std) | step ms | peak RSS MB | weights+grads+Adam MB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        if s["setting"] == setting:
            lines.append(f"| {s['method']} | {s['trainable']:,} | {s['trainable_pct']:.2f} | {s['acc_mean']:.2f} ± {s['acc_std']:.2f} "
                         f"| {s['step_ms']:.1f} | {s['peak_rss_mb']:.0f} | {s['train_state_mb']:.2f} |")
    return "\n".join(lines)


def verdict(summary: list[dict]) -> str:
    by = {s["method"]: s for s in summary if s["setting"] == "all"}
    full = by.get("full")
    if not full:
        return "No full fine-tuning run, no verdict."
    cands = [s for name, s in by.items() if name.startswith("lora") and s["trainable_pct"] <= 5.0]
    if not cands:
        return "No LoRA run at <= 5% trainable parameters."
    best = max(cands, key=lambda s: s["acc_mean"])
    gap = full["acc_mean"] - best["acc_mean"]
    if gap <= 1.0:
        return (f"**Yes**: {best['method']} ({best['trainable_pct']:.2f}% trainable) reaches {best['acc_mean']:.2f}% "
                f"vs {full['acc_mean']:.2f}% for full fine-tuning ({-gap:+.2f} points), so it is within 1 point "
                "(mean over seeds; see the std column for the noise).")
    return (f"**No**: the best LoRA at <= 5% trainable, {best['method']} ({best['trainable_pct']:.2f}%), reaches "
            f"{best['acc_mean']:.2f}%, {gap:.2f} points below full fine-tuning ({full['acc_mean']:.2f}%): "
            "not within 1 point in this budget.")


def plot(summary: list[dict], path: Path) -> None:
    """One panel per label setting; each method keeps its colour and marker in both, named in one legend
    (labels next to the points overlapped where methods sit close on the log axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({s["setting"] for s in summary}, key=lambda s: s != "all")
    methods = sorted({s["method"] for s in summary}, key=lambda m: min(s["trainable_pct"] for s in summary if s["method"] == m))
    colours, markers = plt.get_cmap("tab10").colors, "osD^vP*Xh<>p"  # 10 x 12: a unique pair for 60 methods
    style = {m: (colours[i % len(colours)], markers[i % len(markers)]) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings) + 1.6, 4.5), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for s in (s for s in summary if s["setting"] == setting):
            colour, marker = style[s["method"]]
            ax.errorbar(max(s["trainable_pct"], 1e-2), s["acc_mean"], yerr=s["acc_std"], fmt=marker, color=colour,
                        capsize=3, markersize=6, label=s["method"])
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (% of model, log)")
        ax.set_ylabel("test accuracy (%), mean ± std over seeds")
        ax.set_title(f"MNIST-1D 0-4 -> 5-9, labels: {setting}")
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend([handles[m] for m in methods], methods, loc="center right", fontsize=8, title="method (by % trainable)",
               title_fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_only(results: Path) -> None:
    """Redraw frontier.png from the committed summary.csv (no runs)."""
    with open(results / "summary.csv") as f:
        summary = [{**r, **{k: float(r[k]) for k in ("trainable_pct", "acc_mean", "acc_std")}} for r in csv.DictReader(f)]
    plot(summary, results / "frontier.png")


def write_outputs(rows: list[dict], results: Path, args, wall_s: float, pre_metrics: list[dict]) -> None:
    results.mkdir(parents=True, exist_ok=True)
    with open(results / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = aggregate(rows)
    with open(results / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    plot(summary, results / "frontier.png")
    settings = sorted({r["setting"] for r in summary}, key=lambda s: s != "all")
    pre = ", ".join(f"{100 * m['test/acc']:.1f}%" for m in pre_metrics)
    compute_min = (sum(m.get("time/wall_s", 0.0) for m in pre_metrics) + sum(r["fit_s"] or 0.0 for r in rows)) / 60
    text = "\n\n".join(f"### labels: {s}\n\n{table(summary, s)}" for s in settings)
    text += (f"\n\n{verdict(summary)}\n\npretrained backbones (classes 0-4, test acc per seed): {pre}\n\n"
             f"this invocation's wall time: {wall_s / 60:.1f} min (finished runs are reused); summed run time "
             f"(pretraining wall + fine-tuning fit, over {args.jobs} parallel jobs): {compute_min:.1f} min\n\n"
             f"settings: {vars(args)}\n")
    (results / "tables.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
