"""Study 2: the PEFT frontier - accuracy vs trainable % for every `peft` method, in-distribution and shifted.

Per seed: pretrain the backbone (supervised, MNIST-1D classes 0-4), then adapt it to classes 5-9
with `--labels` labels per class with every method found in conf/peft/*.yaml at run time. Test on
the clean split and on the shifted MNIST-1D test sets (data=mnist1d_shift). Compare Hu et al. 2021
(LoRA close to full fine-tuning at a small fraction of trainable parameters).

    python experiments/peft_frontier/run.py --jobs 2
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from studylib import (  # noqa: E402
    ROOT,
    Job,
    Timer,
    ci95,
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
PER_CLASS = 360            # MNIST-1D target training examples per class (for the step plan)


def methods() -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / "peft").glob("*.yaml"))


def plan(seeds: list[int], model: str, labels: int | None, pretrain_epochs: int, smoke: bool) -> tuple[list[Job], list[Job]]:
    steps = 20 if smoke else STEPS
    pre, down = [], []
    for seed in seeds:
        pname = f"seed{seed}/pretrain"
        pre.append(Job(pname, ["task=supervised", f"model={model}", "data=mnist1d_shift", f"data.classes={SOURCE}",
                               f"trainer.max_epochs={1 if smoke else pretrain_epochs}", f"seed={seed}"],
                       {"seed": seed, "method": "pretrain"}))
        for peft in methods() + ["scratch"]:
            over = ["task=finetune", f"model={model}", "data=mnist1d_shift", f"data.classes={TARGET}",
                    f"data.labels_per_class={'null' if labels is None else labels}", f"seed={seed}",
                    *downstream_trainer(labels, PER_CLASS, steps)]
            over += ["peft=full"] if peft == "scratch" else [f"peft={peft}", f"task.pretrained=PRETRAIN:{pname}"]
            down.append(Job(f"seed{seed}/{peft}", over, {"seed": seed, "method": peft}))
    return pre, down


def report(rows: list[dict], meta: dict) -> str:
    plt = pyplot()
    down = [r for r in rows if r["method"] != "pretrain"]
    g = group(down, ["method"])
    body = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    order = sorted(g, key=lambda k: mean_std([r["params/trainable_pct"] for r in g[k]])[0])
    for i, (method,) in enumerate(order):
        rs = g[(method,)]
        pct = mean_std([r["params/trainable_pct"] for r in rs])[0]
        acc, shift = [r["test/acc"] for r in rs], [r.get("test_shift/mean_acc") for r in rs]
        body.append([method, f"{pct:.2f}", int(rs[0]["params/trainable"]), fmt(acc), fmt(shift), fmt([r["test/ece"] for r in rs])])
        for vals, marker in ((acc, "o"), (shift, "x")):
            m, s = mean_std(vals)
            ax.errorbar([pct], [m], yerr=[s], fmt=marker, color=plt.cm.tab20(i % 20), capsize=3, label=method if marker == "o" else None)
        ax.annotate(method, (pct, mean_std(acc)[0]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (%) - log scale")
    ax.set_ylabel("test accuracy (o: in-distribution, x: mean shifted)")
    ax.set_title(f"PEFT frontier, MNIST-1D 5-9, {meta['labels']} labels/class, model={meta['model']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(OUT / "peft_frontier.png", dpi=120)
    plt.close(fig)
    return (f"MNIST-1D classes 5-9, {meta['labels']} labels per class, model={meta['model']}, mean ± std over seeds {meta['seeds']} (%)\n\n"
            + markdown_table(["method", "trainable %", "trainable params", "test acc", "mean shifted acc", "test ECE"], body)
            + "\n\n" + paired(down, rows, order))


def paired(down: list[dict], rows: list[dict], order: list[tuple]) -> str:
    """Each method minus full fine-tuning on the same seed (test accuracy, points), and the source accuracy."""
    by = {(r["seed"], r["method"]): r["test/acc"] for r in down}
    body = []
    for (method,) in order:
        if method == "full":
            continue
        diffs = [100 * (by[(s, method)] - by[(s, "full")]) for s in sorted({r["seed"] for r in down})
                 if (s, method) in by and (s, "full") in by]
        m, sd = mean_std(diffs)
        body.append([method, ", ".join(f"{d:+.1f}" for d in diffs), f"{m:+.1f} ± {sd:.1f}", f"± {ci95(diffs):.1f}"])
    source = ", ".join(f"{100 * r['test/acc']:.1f}" for r in sorted(rows, key=lambda r: r["seed"]) if r["method"] == "pretrain")
    return ("Paired by seed, method minus `peft=full` (test accuracy, points; 95 % t-interval of the mean):\n\n"
            + markdown_table(["method", "per seed", "mean ± std", "95 % CI"], body)
            + f"\n\nSource accuracy of the pretrained transformers (classes 0-4, test, per seed): {source} %")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="transformer")
    p.add_argument("--labels", type=int, default=50, help="labels per class of the target task (0 = all)")
    p.add_argument("--pretrain-epochs", type=int, default=60)
    args = p.parse_args()
    labels = args.labels or None
    work = workdir(args, "peft_frontier")
    if not args.report_only:
        pre, down = plan(args.seeds, args.model, labels, args.pretrain_epochs, args.smoke)
        with Timer() as t:
            results = run_stages(pre, down, work, args)
        rows = rows_of(pre + down, results, ["test/acc", "test/ece", "test_shift/mean_acc", "params/trainable", "params/trainable_pct",
                                             "params/adapter", "time/wall_s"])
        save_study(OUT, rows, args, t.seconds, STEPS, model=args.model, labels=labels or "all", methods=methods())
    write_table(OUT, report)


if __name__ == "__main__":
    main()
