"""Study 3: linear probe vs partial freezing vs full fine-tuning, per pretraining objective.

Per seed and objective (every pretraining task found in conf/task/*.yaml at run time that runs
on MNIST-1D signals: supervised, contrastive, masked, ...): pretrain on MNIST-1D classes 0-4, then
adapt to classes 5-9 with `--labels` labels per class by peft=linear_probe, freeze, full (those
that exist), against scratch. Compare Kumar et al. 2022 / He et al. 2022 (MAE): linear probing lags
fine-tuning most when the pretraining objective differs from the target task.

    python experiments/probe_vs_finetune/run.py --jobs 2
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from studylib import (  # noqa: E402
    ONLINE_PROBES_ON,
    PROBE_BEFORE_20261207,
    ROOT,
    Job,
    Timer,
    downstream_trainer,
    fmt,
    group,
    markdown_table,
    mean_std,
    output_dir,
    parser,
    pyplot,
    rows_of,
    run_stages,
    save_study,
    workdir,
    write_table,
)

OUT = output_dir(HERE)  # results, table and plot (a scratch folder for --smoke)

SOURCE, TARGET = "[0,1,2,3,4]", "[5,6,7,8,9]"
STEPS = 400
PER_CLASS = 360
ADAPT = ["linear_probe", "default_probe", "freeze", "full"]
# a column -> the peft method it runs: `linear_probe` is the probe the study's first rows used (PROBE_BEFORE_20261207:
# CLS token, lr 3e-3), `default_probe` the method's defaults since 2026-12-07 (mean pool, lr 0.03; the study's 400 steps)
PEFT_OF = {"default_probe": "linear_probe"}
SHOWN = {"linear_probe": "linear_probe (CLS, lr 3e-3)", "default_probe": "linear_probe (its defaults: mean, lr 0.03)"}
NOT_OBJECTIVES = {"finetune", "transfer", "causal_lm"}     # fine-tuning, pipelines, text-only objectives


# online probes, for the pretraining rows' val/linear_acc and val/knn_acc: task=masked has them off by default
PROBES_ON = {"masked": ONLINE_PROBES_ON}


def objectives() -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml") if p.stem not in NOT_OBJECTIVES)


def adapt_methods() -> list[str]:
    return [m for m in ADAPT if (ROOT / "conf" / "peft" / f"{PEFT_OF.get(m, m)}.yaml").is_file()]


def plan(seeds: list[int], model: str, labels: int | None, pretrain_epochs: int, smoke: bool) -> tuple[list[Job], list[Job]]:
    steps = 20 if smoke else STEPS
    pre, down = [], []
    common = [f"model={model}", "data=mnist1d"]
    for seed in seeds:
        target = [*common, f"data.classes={TARGET}", f"data.labels_per_class={'null' if labels is None else labels}", f"seed={seed}",
                  *downstream_trainer(labels, PER_CLASS, steps)]
        down.append(Job(f"seed{seed}/scratch", ["task=finetune", "peft=full", *target],
                        {"seed": seed, "objective": "none (scratch)", "method": "full"}))
        for obj in objectives():
            pname = f"seed{seed}/{obj}/pretrain"
            pre.append(Job(pname, [f"task={obj}", *common, f"data.classes={SOURCE}", f"trainer.max_epochs={1 if smoke else pretrain_epochs}",
                                   f"seed={seed}", *PROBES_ON.get(obj, [])], {"seed": seed, "objective": obj, "method": "pretrain"}))
            for m in adapt_methods():
                probe = PROBE_BEFORE_20261207 if m == "linear_probe" else []  # the probe its results used
                down.append(Job(f"seed{seed}/{obj}/{m}", ["task=finetune", f"peft={PEFT_OF.get(m, m)}", *probe,
                                                         f"task.pretrained=PRETRAIN:{pname}", *target],
                                {"seed": seed, "objective": obj, "method": m}))
    return pre, down


def report(rows: list[dict], meta: dict) -> str:
    plt = pyplot()
    down = [r for r in rows if r["method"] != "pretrain"]
    g = group(down, ["objective", "method"])
    objs = list(dict.fromkeys(r["objective"] for r in down if r["objective"] != "none (scratch)"))
    ms = [m for m in ADAPT if any(r["method"] == m for r in down)]
    probes = [m for m in ("linear_probe", "default_probe") if m in ms]

    def gap(o: str, probe: str) -> str:
        return fmt([f["test/acc"] - p["test/acc"] for f in g.get((o, "full"), []) for p in g.get((o, probe), []) if f["seed"] == p["seed"]])

    body = [[o] + [fmt([r["test/acc"] for r in g.get((o, m), [])]) for m in ms] + [gap(o, p) for p in probes] for o in objs]
    scratch = [r["test/acc"] for r in g.get(("none (scratch)", "full"), [])]
    body.append(["none (scratch)"] + ["-" if m != "full" else fmt(scratch) for m in ms] + ["-"] * len(probes))
    fig, ax = plt.subplots(figsize=(7, 4.6))
    width = 0.8 / max(1, len(ms))
    for j, m in enumerate(ms):
        vals = [mean_std([r["test/acc"] for r in g.get((o, m), [])]) for o in objs]
        ax.bar([i + j * width for i in range(len(objs))], [v[0] for v in vals], width, yerr=[v[1] for v in vals], capsize=3, label=SHOWN.get(m, m))
    scratch = mean_std([r["test/acc"] for r in g.get(("none (scratch)", "full"), [])])[0]
    if scratch == scratch:
        ax.axhline(scratch, color="k", ls="--", lw=1, label="scratch")
    ax.set_xticks([i + width * (len(ms) - 1) / 2 for i in range(len(objs))], objs)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"MNIST-1D 5-9, {meta['labels']} labels/class, model={meta['model']}", fontsize=9)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1))  # below the axes: it covers no bar
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(OUT / "probe_vs_finetune.png", dpi=120)
    plt.close(fig)
    return (f"Test accuracy % on MNIST-1D classes 5-9 ({meta['labels']} labels per class, model={meta['model']}), "
            f"pretrained on classes 0-4; mean ± std over seeds {meta['seeds']}\n\n"
            + markdown_table(["pretraining objective"] + [SHOWN.get(m, m) for m in ms] + [f"full - {SHOWN.get(p, p)}" for p in probes], body))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="transformer")
    p.add_argument("--labels", type=int, default=50, help="labels per class of the target task (0 = all)")
    p.add_argument("--pretrain-epochs", type=int, default=60)
    args = p.parse_args()
    labels = args.labels or None
    work = workdir(args, "probe_vs_finetune")
    if not args.report_only:
        pre, down = plan(args.seeds, args.model, labels, args.pretrain_epochs, args.smoke)
        with Timer() as t:
            results = run_stages(pre, down, work, args)
        rows = rows_of(pre + down, results, ["test/acc", "test/ece", "params/trainable_pct", "time/wall_s", "val/linear_acc", "val/knn_acc"])
        save_study(OUT, rows, args, t.seconds, STEPS, model=args.model, labels=labels or "all", objectives=objectives(), methods=adapt_methods())
    write_table(OUT, report)


if __name__ == "__main__":
    main()
