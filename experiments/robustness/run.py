"""Study 4: accuracy under each shift and severity, pretrained (then fine-tuned) vs scratch.

Per dataset and seed: pretrain the stock CNN (supervised, source classes 0-4, clean data), then on
the target classes 5-9 fine-tune it and train the same CNN from scratch, with every training label
and with 10 labels per class. Test on the clean split and on shifted copies: digits with 5
corruptions x severities 1-5 (data/shifts.py), MNIST-1D regenerated with 4 generator knobs pushed
to 3 levels past their training values. Compare Hendrycks et al. 2019 ("Using pre-training can
improve model robustness and uncertainty").

    python experiments/robustness/run.py --jobs 2
"""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from studylib import (  # noqa: E402
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
BUDGETS = [10, None]
STEPS = 400
# MNIST-1D: knob levels 1..3 past the training values (translation 48, noise 0.25/0.02, shear 0.75, scale 0.4)
MNIST1D_SHIFTS = {
    "translate": [{"max_translation": 54}, {"max_translation": 60}, {"max_translation": 72}],
    "noise": [{"corr_noise_scale": 0.35, "iid_noise_scale": 0.04}, {"corr_noise_scale": 0.5, "iid_noise_scale": 0.08},
              {"corr_noise_scale": 0.75, "iid_noise_scale": 0.15}],
    "shear": [{"shear_scale": 1.0}, {"shear_scale": 1.5}, {"shear_scale": 2.0}],
    "scale": [{"scale_coeff": 0.7}, {"scale_coeff": 1.0}, {"scale_coeff": 1.4}],
}
MNIST1D_GENERATOR = {"num_samples": 5000, "seed": 42}   # conf/data/mnist1d.yaml's generator block


def mnist1d_override() -> str:
    items = [f"{name}_s{i + 1}:{{{','.join(f'{k}:{v}' for k, v in knobs.items())}}}"
             for name, levels in MNIST1D_SHIFTS.items() for i, knobs in enumerate(levels)]
    return "data.test_shifts={" + ",".join(items) + "}"


DATASETS = {
    "digits": {"data": ["data=digits", "data.corruptions=[gaussian_noise,blur,rotate,translate,occlude]", "data.severities=[1,2,3,4,5]"],
               "pretrain_epochs": 30, "per_class": 129},
    "mnist1d": {"data": ["data=mnist1d", mnist1d_override()], "pretrain_epochs": 20, "per_class": 360},
}


def _generate(knobs: dict) -> None:
    import os

    from transferlab.data.mnist1d import GENERATOR_DEFAULTS, generate

    generate({**GENERATOR_DEFAULTS, **MNIST1D_GENERATOR, **knobs}, os.environ.get("TRANSFERLAB_CACHE", "~/.cache/transferlab"))


def warm_cache(parallel: int) -> None:
    """Generate the shifted MNIST-1D sets once, in parallel, before any run needs them."""
    sys.path.insert(0, str(HERE.parents[1] / "src"))
    knobs = [{}] + [k for levels in MNIST1D_SHIFTS.values() for k in levels]
    with ProcessPoolExecutor(max_workers=max(1, parallel)) as pool:
        list(pool.map(_generate, knobs))


def plan(seeds: list[int], smoke: bool) -> tuple[list[Job], list[Job]]:
    steps = 20 if smoke else STEPS
    pre, down = [], []
    for ds, d in DATASETS.items():
        for seed in seeds:
            pname = f"{ds}/seed{seed}/pretrain"
            pre.append(Job(pname, ["task=supervised", *d["data"], f"data.classes={SOURCE}",
                                   f"trainer.max_epochs={1 if smoke else d['pretrain_epochs']}", f"seed={seed}"],
                           {"dataset": ds, "seed": seed, "method": "pretrain"}))
            for k in BUDGETS:
                for method in ("scratch", "pretrained"):
                    over = ["task=finetune", "peft=full", *d["data"], f"data.classes={TARGET}",
                            f"data.labels_per_class={'null' if k is None else k}", f"seed={seed}",
                            *downstream_trainer(k, d["per_class"], steps)]
                    if method == "pretrained":
                        over.append(f"task.pretrained=PRETRAIN:{pname}")
                    down.append(Job(f"{ds}/seed{seed}/{method}_k{k or 'all'}", over,
                                    {"dataset": ds, "seed": seed, "method": method, "labels_per_class": k or "all"}))
    return pre, down


def shift_names(rows: list[dict], ds: str) -> list[str]:
    names = []
    for r in rows:
        if r["dataset"] == ds:
            names += [k[len("test_shift/"):-len("/acc")] for k in r if k.startswith("test_shift/") and k.endswith("/acc")
                      and k[len("test_shift/"):-len("/acc")] not in names and k != "test_shift/mean_acc"]
    return names


def report(rows: list[dict], meta: dict) -> str:
    plt = pyplot()
    down = [r for r in rows if r["method"] != "pretrain"]
    g = group(down, ["dataset", "labels_per_class", "method"])
    text = []
    budgets = [b for b in (10, "all") if any(r["labels_per_class"] == b for r in down)]
    if not budgets:
        return "no finished downstream runs"
    fig, axes = plt.subplots(len(budgets), len(DATASETS), figsize=(12, 4 * len(budgets)), squeeze=False)
    for col, ds in enumerate(DATASETS):
        names = shift_names(down, ds)
        corruptions = list(dict.fromkeys(n.rsplit("_s", 1)[0] for n in names))
        severities = sorted({int(n.rsplit("_s", 1)[1]) for n in names})
        for row_i, b in enumerate(budgets):
            body = []
            for method in ("scratch", "pretrained"):
                rs = g.get((ds, b, method), [])
                body.append([method, "clean", fmt([r["test/acc"] for r in rs])]
                            + [fmt([r["test_shift/mean_acc"] for r in rs])] + [fmt([r["test/ece"] for r in rs])]
                            + [fmt([r.get("test_shift/mean_ece") for r in rs])])
            header = ["method", "", "clean acc", "mean shifted acc", "clean ECE", "mean shifted ECE"]
            per = []
            for c in corruptions:
                line = [c]
                for method in ("scratch", "pretrained"):
                    rs = g.get((ds, b, method), [])
                    line.append(" / ".join(f"{mean_std([r.get(f'test_shift/{c}_s{s}/acc') for r in rs])[0] * 100:.1f}" for s in severities))
                per.append(line)
            text.append(f"**{ds}, {b} labels per class** (accuracy %, mean ± std over seeds {meta['seeds']})\n\n"
                        + markdown_table(header, body)
                        + f"\n\nPer shift, accuracy % at severity {'/'.join(map(str, severities))} (seed means):\n\n"
                        + markdown_table(["shift", "scratch", "pretrained"], per))
            ax = axes[row_i][col]
            for method, style in (("scratch", "--"), ("pretrained", "-")):
                rs = g.get((ds, b, method), [])
                for i, c in enumerate(corruptions):
                    ys = [mean_std([r["test/acc"] for r in rs])[0]]
                    ys += [mean_std([r.get(f"test_shift/{c}_s{s}/acc") for r in rs])[0] for s in severities]
                    ax.plot([0] + severities, ys, style, marker="o", color=f"C{i}", label=f"{c} ({method})")
            ax.set_title(f"{ds}, {b} labels/class (solid: pretrained, dashed: scratch)", fontsize=9)
            ax.set_xlabel("severity (0 = clean)")
            ax.set_xticks([0, *severities])  # severities are levels, not a continuous axis
            ax.set_ylabel("test accuracy")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, ncol=2, handlelength=3)  # long enough to show dashed vs solid
    fig.tight_layout()
    fig.savefig(OUT / "robustness.png", dpi=120)
    plt.close(fig)
    return "\n\n".join(text)


def add_mean_ece(rows: list[dict]) -> None:
    for r in rows:
        eces = [v for k, v in r.items() if k.startswith("test_shift/") and k.endswith("/ece")]
        if eces:
            r["test_shift/mean_ece"] = sum(eces) / len(eces)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    work = workdir(args, "robustness")
    if not args.report_only:
        pre, down = plan(args.seeds, args.smoke)
        with Timer() as t:
            warm_cache(args.jobs)
            results = run_stages(pre, down, work, args)
        rows = rows_of(pre + down, results, ["test/acc", "test/ece", "test/nll", "test_shift/*"])
        add_mean_ece(rows)
        save_study(OUT, rows, args, t.seconds, STEPS)
    write_table(OUT, report)


if __name__ == "__main__":
    main()
