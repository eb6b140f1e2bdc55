"""Study 1: transfer vs scratch vs labels per class (1, 5, 10, 50, all) on digits and MNIST-1D.

Per dataset and seed: pretrain the stock CNN once (supervised, source classes 0-4), then for every
label budget on the target classes 5-9: fine-tune that checkpoint (peft=full), linear-probe it,
and train the same CNN from scratch. Every downstream run trains the same number of optimizer
steps, so budgets differ only in the labels seen. Shifted test sets are on (data=*_shift), so the
same runs also give shifted accuracy.

    python experiments/label_efficiency/run.py --jobs 2
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from studylib import (  # noqa: E402
    PROBE_BEFORE_20261207,
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

BUDGETS = [1, 5, 10, 50, None]          # labels per class; None = every training label
SOURCE, TARGET = "[0,1,2,3,4]", "[5,6,7,8,9]"
# per dataset: its shifted data config, pretraining epochs, target training examples per class (approx.)
DATASETS = {
    "digits": {"data": "digits_shift", "pretrain_epochs": 30, "per_class": 129},
    "mnist1d": {"data": "mnist1d_shift", "pretrain_epochs": 20, "per_class": 360},
}
METHODS = {"scratch": None, "finetune": "full", "linear_probe": "linear_probe"}
STEPS = 400                              # optimizer steps of every downstream run


def plan(seeds: list[int], smoke: bool) -> tuple[list[Job], list[Job]]:
    steps = 20 if smoke else STEPS
    budgets = [5] if smoke else BUDGETS
    pre, down = [], []
    for ds, d in DATASETS.items():
        for seed in seeds:
            pname = f"{ds}/seed{seed}/pretrain"
            epochs = 1 if smoke else d["pretrain_epochs"]
            pre.append(Job(pname, ["task=supervised", f"data={d['data']}", f"data.classes={SOURCE}", f"trainer.max_epochs={epochs}",
                                   f"seed={seed}"], {"dataset": ds, "seed": seed, "method": "pretrain"}))
            for k in budgets:
                for method, peft in METHODS.items():
                    over = ["task=finetune", f"data={d['data']}", f"data.classes={TARGET}",
                            f"data.labels_per_class={'null' if k is None else k}", f"seed={seed}",
                            *downstream_trainer(k, d["per_class"], steps)]
                    over += [f"peft={peft}", f"task.pretrained=PRETRAIN:{pname}"] if peft else ["peft=full"]
                    over += PROBE_BEFORE_20261207 if peft == "linear_probe" else []  # the probe its results used
                    down.append(Job(f"{ds}/seed{seed}/{method}_k{k or 'all'}", over,
                                    {"dataset": ds, "seed": seed, "method": method, "labels_per_class": k or "all"}))
    return pre, down



def report(rows: list[dict], meta: dict) -> str:
    """README table and plot from the rows."""
    plt = pyplot()
    down = [r for r in rows if r["method"] != "pretrain"]
    budgets = [b for b in [1, 5, 10, 50, "all"] if any(r["labels_per_class"] == b for r in down)]
    g = group(down, ["dataset", "method", "labels_per_class"])
    text = []
    fig, axes = plt.subplots(1, len(DATASETS), figsize=(11, 4))
    for ax, ds in zip(axes, DATASETS):
        body = []
        for method in METHODS:
            body.append([method] + [fmt([r["test/acc"] for r in g.get((ds, method, b), [])]) for b in budgets])
            xs = [i for i, b in enumerate(budgets) if (ds, method, b) in g]
            ms = [mean_std([r["test/acc"] for r in g[(ds, method, budgets[i])]]) for i in xs]
            ax.errorbar(xs, [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", capsize=3, label=method)
        gain = ["gain finetune - scratch"]
        for b in budgets:
            f = {r["seed"]: r["test/acc"] for r in g.get((ds, "finetune", b), [])}
            s = {r["seed"]: r["test/acc"] for r in g.get((ds, "scratch", b), [])}
            gain.append(fmt([f[k] - s[k] for k in f if k in s]))
        body.append(gain)
        text.append(f"**{ds}** (target classes 5-9, test accuracy %, mean ± std over seeds {meta['seeds']})\n\n"
                    + markdown_table(["method \\ labels per class"] + [str(b) for b in budgets], body))
        ax.set_xticks(range(len(budgets)), [str(b) for b in budgets])
        ax.set_xlabel("labels per class")
        ax.set_ylabel("test accuracy")
        ax.set_title(ds)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "label_efficiency.png", dpi=120)
    plt.close(fig)
    return "\n\n".join(text)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    work = workdir(args, "label_efficiency")
    if not args.report_only:
        pre, down = plan(args.seeds, args.smoke)
        with Timer() as t:
            results = run_stages(pre, down, work, args)
        rows = rows_of(pre + down, results, ["test/acc", "test/ece", "test/nll", "test_shift/mean_acc", "params/trainable_pct", "time/wall_s"])
        save_study(OUT, rows, args, t.seconds, STEPS)
    write_table(OUT, report)


if __name__ == "__main__":
    main()
