"""BBC News topic classification with 10 labels per class: scratch vs MLM-pretrained vs LoRA.

Per seed, one `python -m transferlab.train experiment=bbc_news_mlm seed=S` pipeline: masked-
language-model pretraining of a small transformer (width 64, 2 blocks, 64 tokens, WordPiece 2k
trained on the training articles) on every training article with labels unused, then, on 10
labelled articles per topic (50 in all): full fine-tuning and LoRA (r=4) from the MLM checkpoint,
a linear probe, and the same transformer trained from scratch on the same 50 labels. The test
split (444 articles) is fixed; mean ± std over 3 seeds (pretraining included in each seed).

    nice python experiments/bbc_news/run.py                 # ~8 min on 2 cores
    python experiments/bbc_news/run.py --report-only        # table and plot from results.json
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from studylib import (  # noqa: E402
    Job,
    Timer,
    fmt,
    load_rows,
    markdown_table,
    mean_std,
    output_dir,
    parser,
    pyplot,
    run_jobs,
    save_rows,
    workdir,
)

OUT = output_dir(HERE)  # results, table and plot (a scratch folder for --smoke)

STAGES = [  # (stage, label) in table order
    ("scratch", "scratch (random init, full fine-tuning)"),
    ("finetune", "MLM-pretrained + full fine-tuning"),
    ("lora", "MLM-pretrained + LoRA (r=4)"),
    ("linear_probe", "MLM-pretrained + linear probe"),
]
SMOKE = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
         "task.pretrain_trainer.max_epochs=1", "task.target_trainer.max_epochs=1", "task.target_trainer.check_val_every_n_epoch=1",
         "task.pretrain_trainer.check_val_every_n_epoch=1"]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    work = workdir(args, "bbc_news")
    if not args.report_only:
        jobs = [Job(f"seed{s}", ["experiment=bbc_news_mlm", f"seed={s}", *(SMOKE if args.smoke else [])], {"seed": s})
                for s in args.seeds]
        with Timer() as t:
            results = run_jobs(jobs, work, args.jobs, args.override)
        rows = []
        for job in jobs:
            m = results.get(job.name)
            if m is None:
                continue
            for stage, label in STAGES:
                rows.append({"seed": job.tags["seed"], "stage": stage, "method": label,
                             "test_acc": m.get(f"{stage}/test/acc"), "test_f1": m.get(f"{stage}/test/f1"),
                             "test_ece": m.get(f"{stage}/test/ece"),
                             "trainable_params": m.get(f"{stage}/params/trainable"),
                             "trainable_pct": m.get(f"{stage}/params/trainable_pct"),
                             "fit_s": m.get(f"{stage}/time/fit_s")})
            rows.append({"seed": job.tags["seed"], "stage": "pretrain", "method": "MLM pretraining (online probes)",
                         "val_mlm_loss": m.get("pretrain/val/loss"), "val_knn_acc": m.get("pretrain/val/knn_acc"),
                         "val_linear_acc": m.get("pretrain/val/linear_acc"), "fit_s": m.get("pretrain/time/fit_s")})
        save_rows(rows, OUT, {"command": "python " + " ".join(sys.argv), "wall_s": round(t.seconds, 1),
                               "jobs": args.jobs, "seeds": args.seeds, "smoke": args.smoke, "workdir": str(work)})
    report()


def report() -> None:
    rows, meta = load_rows(OUT)
    body, labels, means, stds = [], [], [], []
    for stage, label in STAGES:
        rs = [r for r in rows if r["stage"] == stage]
        if not rs:
            continue
        accs = [r["test_acc"] for r in rs]
        m, s = mean_std(accs)
        labels.append(label.replace(" + ", "\n+ "))
        means.append(100 * m)
        stds.append(100 * s)
        body.append([label, fmt(accs), fmt([r["test_f1"] for r in rs]), f"{int(rs[0]['trainable_params']):,}",
                     f"{rs[0]['trainable_pct']:.2f}", len(rs)])
    table = markdown_table(["method", "test acc (%)", "test macro-F1 (%)", "trainable params", "trainable %", "seeds"], body)
    pre = [r for r in rows if r["stage"] == "pretrain"]
    pre_line = (f"MLM pretraining, last epoch: val MLM loss {fmt([r['val_mlm_loss'] for r in pre], 1, 2)}, "
                f"online k-NN acc {fmt([r['val_knn_acc'] for r in pre])} %, online linear-probe acc "
                f"{fmt([r['val_linear_acc'] for r in pre])} %, fit {fmt([r['fit_s'] for r in pre], 1, 0)} s.") if pre else ""
    (OUT / "table.md").write_text(table + "\n\n" + pre_line + "\n" + f"\nStudy wall time: {meta['wall_s']:.0f} s "
                                   f"({meta['jobs']} runs in parallel){' [smoke]' if meta.get('smoke') else ''}.\n")
    print(table + "\n\n" + pre_line)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(range(len(means)), means, yerr=stds, capsize=4, color=["#999999", "#1f77b4", "#2ca02c", "#ff7f0e"][: len(means)])
    ax.axhline(20, color="k", lw=0.8, ls=":", label="chance (5 topics)")
    ax.set_xticks(range(len(means)), labels, fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("BBC News, 10 labels per topic (mean ± std, 3 seeds)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(OUT / "accuracy.png", dpi=120)


if __name__ == "__main__":
    main()
