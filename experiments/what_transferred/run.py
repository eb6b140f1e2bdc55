"""What transferred, and why: CKA to the pretrained backbone and weight change per block, per peft method.

The quickstart protocol (MNIST-1D, supervised pretraining on classes 0-4; fine-tuning on classes 5-9
with 5 labels per class, 60 epochs) with peft in (full, linear_probe, lora, adapter, bitfit) and 3
seeds; each seed's pretraining run is shared by all five methods. Every fine-tuned run is then
inspected with `transferlab.inspect` (in this process, the same code path as the CLI) on its test
set; the noise floor is the CKA between the seed's pretrained backbone and the next seed's, and a
randomly initialised backbone against the pretrained one shows what "unrelated" looks like.

    nice python experiments/what_transferred/run.py --inprocess [--model transformer]
    nice python experiments/what_transferred/run.py --inprocess --data bbc_news   # the text recipe (not run yet)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from studylib import (  # noqa: E402
    PROBE_BEFORE_20261207,
    ROOT,
    Job,
    Timer,
    fmt,
    group,
    markdown_table,
    output_dir,
    parser,
    pyplot,
    run_jobs,
    run_stages,
    save_study,
    workdir,
)

OUT = output_dir(HERE)
METHODS = {  # name -> (overrides, fine-tuning lr: the pipeline's 1e-3 / 1e-2, peft_benchmark's for the others)
    "full": (["peft=full"], 1e-3),
    "linear_probe": (["peft=linear_probe", *PROBE_BEFORE_20261207], 1e-2),  # the probe its results used
    "lora": (["peft=lora"], 3e-3),
    "adapter": (["peft=adapter"], 3e-3),
    "bitfit": (["peft=bitfit"], 1e-2),
}
SOURCE, TARGET = "data.classes=[0,1,2,3,4]", "data.classes=[5,6,7,8,9]"
BBC_STAGES = {"finetune": "full", "lora": "lora", "linear_probe": "linear_probe"}  # stage of experiment=bbc_news_mlm -> method


def plan(seeds: list[int], model: str, smoke: bool) -> tuple[list[Job], list[Job]]:
    short = ["trainer.max_epochs=1", "trainer.limit_train_batches=2"] if smoke else []
    pre = [Job(f"pre_s{s}", ["task=supervised", f"model={model}", "data=mnist1d", SOURCE, f"seed={s}",
                             "trainer.max_epochs=15", *short], {"seed": s}) for s in seeds]
    down = [Job(f"{m}_s{s}", ["task=finetune", f"model={model}", "data=mnist1d", TARGET, "data.labels_per_class=5",
                              *over, f"optimizer.lr={lr}", f"task.pretrained=PRETRAIN:pre_s{s}/checkpoints/last.ckpt",
                              f"seed={s}", "trainer.max_epochs=60", "trainer.check_val_every_n_epoch=10", *short],
                {"method": m, "seed": s})
            for s in seeds for m, (over, lr) in METHODS.items()]
    return pre, down


def compose(name: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name=name, overrides=overrides)


def targets_of(down: list[Job], seeds: list[int], work: Path, bbc: bool) -> list[tuple[Path, dict, Path]]:
    """(fine-tuned run folder, tags, the next seed's pretraining run) for every finished fine-tune."""
    def pretrain(s: int) -> Path:
        nxt = seeds[(seeds.index(s) + 1) % len(seeds)]
        return work / f"bbc_s{nxt}" / "pretrain" if bbc else work / f"pre_s{nxt}"

    if bbc:  # the recipe's pipeline: its finetune (full), lora and linear_probe stages share the MLM pretraining
        return [(work / job.name / stage, {"method": method, "seed": job.tags["seed"]}, pretrain(job.tags["seed"]))
                for job in down for stage, method in BBC_STAGES.items()]
    return [(work / job.name, job.tags, pretrain(job.tags["seed"])) for job in down]


def inspect_runs(targets: list[tuple[Path, dict, Path]], seeds: list[int], random_init) -> list[dict]:
    """`inspect` on every fine-tuned run (the next seed's pretraining as noise floor); one row per block."""
    from transferlab.inspect import inspect_run

    rows = []
    for run, tags, other in targets:
        if not (run / "metrics.json").is_file():
            continue
        s = tags["seed"]
        showcase = tags["method"] == "full" and s == seeds[0]  # pictures for one run; numbers for all
        overrides = [f"ckpt_path={run}", f"noise_floor={other}" if len(seeds) > 1 else "noise_floor=null",
                     f"projection={'pca' if showcase else 'null'}", f"attribution={'integrated_gradients' if showcase else 'null'}"]
        result = inspect_run(compose("inspect", overrides))
        acc = json.loads((run / "metrics.json").read_text()).get("test/acc")
        for depth, b in enumerate(result["blocks"]):
            rows.append({**tags, "block": b["name"], "depth": depth, "cka": b["cka"], "weight_change": b["weight_change"],
                         "added": b["added"], "buffer_change": b.get("buffer_change"), "test_acc": acc,
                         "inspect_s": round(result["time/wall_s"], 2)})
        if tags["method"] == "full" and result["noise_floor"]:
            rows += [{"method": "seed noise (pretrained vs other seed)", "seed": s, "block": name, "depth": d, "cka": v}
                     for d, (name, v) in enumerate(result["noise_floor"].items())]
            rows += random_init(Path(result["reference"]), s)
    return rows


def random_init_rows(pretrained: Path, seed: int, train: list[str], data: list[str]) -> list[dict]:
    """CKA between the pretrained backbone and the same architecture at random init (the target test set)."""
    import torch

    from transferlab.inspection.similarity import compare
    from transferlab.runner.build import build_backbone
    from transferlab.runner.restore import restore_backbone

    cfg = compose("inspect", ["ckpt_path=x", *data])
    restored = restore_backbone(pretrained, list(cfg.allowed_targets), data=cfg.get("data"), stage="test")
    torch.manual_seed(1000 + seed)
    random = build_backbone(compose("train", train), restored.datamodule.spec)
    cka = compare(random, restored.backbone, restored.datamodule.test_dataloader()).cka
    return [{"method": "random init vs pretrained", "seed": seed, "block": name, "depth": d, "cka": v}
            for d, (name, v) in enumerate(cka.items())]


ORDER = ["full", "bitfit", "lora", "adapter", "linear_probe", "seed noise (pretrained vs other seed)", "random init vs pretrained"]


def report(rows: list[dict], meta: dict) -> str:
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    by = group(rows, ["method", "block"])
    methods = [m for m in ORDER if any(k[0] == m for k in by)]
    parts = ["CKA to the pretrained backbone (mean ± std over seeds; 1 = same representation)\n",
             markdown_table(["method", *blocks], [[m, *(fmt([r["cka"] for r in by.get((m, b), [])], 1, 3) for b in blocks)]
                                                   for m in methods]),
             "\n\nRelative weight change ||W_ft - W_pre|| / ||W_pre|| "
             "(LoRA merged; an adapter's own weights are not counted: its frozen backbone shows 0)\n",
             markdown_table(["method", *blocks, "test acc %"],
                            [[m, *(fmt([r["weight_change"] for r in by.get((m, b), [])], 1, 3) for b in blocks),
                              fmt([r["test_acc"] for r in by.get((m, blocks[0]), [])])] for m in methods if m in METHODS])]
    with_buffers = [b for b in blocks if any(r.get("buffer_change") is not None for r in rows if r["block"] == b)]
    if with_buffers:
        parts += ["\n\nRelative change of the normalisation statistics (BatchNorm running mean/var): not weights, "
                  "but they move whenever the backbone trains in train mode\n",
                  markdown_table(["method", *with_buffers],
                                 [[m, *(fmt([r["buffer_change"] for r in by.get((m, b), [])], 1, 3) for b in with_buffers)]
                                  for m in methods if m in METHODS])]
    return "".join(parts)


def plot(rows: list[dict], path: Path, model: str, data: str = "mnist1d") -> None:
    plt = pyplot()
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    by = group(rows, ["method", "block"])
    fig, (top, bottom) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = range(len(blocks))
    for m in ORDER:
        if not any(k[0] == m for k in by):
            continue
        style = {"ls": "-", "marker": "o"}
        if m.startswith("seed"):
            style = {"ls": "--", "marker": "s", "color": "gray"}
        elif m.startswith("random"):
            style = {"ls": ":", "marker": "s", "color": "black"}
        for ax, key in ((top, "cka"), (bottom, "weight_change")):
            vals = [[r[key] for r in by.get((m, b), []) if r.get(key) is not None] for b in blocks]
            if not any(vals):
                continue
            mean = [sum(v) / len(v) if v else float("nan") for v in vals]
            lo = [min(v) if v else float("nan") for v in vals]
            hi = [max(v) if v else float("nan") for v in vals]
            ax.plot(xs, mean, label=m, **style)
            ax.fill_between(xs, lo, hi, alpha=0.15, color=ax.lines[-1].get_color())
    top.set_ylabel("linear CKA to the pretrained backbone")
    bottom.set_ylabel("relative weight change ||ΔW|| / ||W_pre||")
    for ax in (top, bottom):
        ax.set_xticks(list(xs), blocks, rotation=30, ha="right")
        ax.set_xlabel("block (input -> output)")
        ax.grid(alpha=0.3)
    top.set_title("Representation similarity (target test set)", fontsize=10)
    bottom.set_title("How far the weights moved", fontsize=10)
    top.legend(fontsize=7, loc="lower left")
    protocol = "BBC News, MLM -> 10 labels/topic" if data == "bbc_news" else "MNIST-1D 0-4 -> 5-9, 5 labels/class"
    fig.suptitle(f"What transferred (model={model}): {protocol} (mean; band = min-max over seeds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn")
    p.add_argument("--data", default="mnist1d", choices=["mnist1d", "bbc_news"],
                   help="bbc_news: the text recipe (experiment=bbc_news_mlm: MLM pretraining; full, lora, linear_probe)")
    args = p.parse_args()
    bbc = args.data == "bbc_news"
    stem = "_bbc_news" if bbc else "" if args.model == "cnn" else f"_{args.model}"
    work = workdir(args, "what_transferred" + stem)
    if not args.report_only:
        if bbc:
            smoke = ["task.pretrain_trainer.max_epochs=1", "task.target_trainer.max_epochs=1", "trainer.limit_train_batches=2"]
            down = [Job(f"bbc_s{s}", ["experiment=bbc_news_mlm", f"seed={s}", *(smoke if args.smoke else [])], {"seed": s})
                    for s in args.seeds]
            train, data = ["experiment=bbc_news_mlm"], []
        else:
            pre, down = plan(args.seeds, args.model, args.smoke)
            train, data = [f"model={args.model}", "data=mnist1d"], ["data=mnist1d", TARGET]
        with Timer() as t:
            if bbc:
                run_jobs(down, work, 0 if args.inprocess else args.jobs, args.override)
            else:
                run_stages(pre, down, work, args)
            rows = inspect_runs(targets_of(down, args.seeds, work, bbc), args.seeds,
                                lambda path, seed: random_init_rows(path, seed, train, data))
        save_study(OUT, rows, args, t.seconds, 0, name=f"results{stem}", model="transformer" if bbc else args.model,
                   data=args.data)  # its own file: the other models' results stay
    data = json.loads((OUT / f"results{stem}.json").read_text())
    rows, meta = data["rows"], data["meta"]
    table = report(rows, meta)
    (OUT / f"table{stem}.md").write_text(table + f"\n\nWall time of `{meta['command']}`: {meta['wall_s']} s "
                                            "(finished training runs are reused; inspect always reruns).\n")
    print(table)
    plot(rows, OUT / f"what_transferred{stem}.png", meta.get("model", args.model), meta.get("data", args.data))
    if not args.smoke:
        showcase = work / (f"bbc_s{args.seeds[0]}/finetune" if bbc else f"full_s{args.seeds[0]}") / "inspect"
        for name in ("feature_maps.png", "attributions.png", "representation.png"):
            if (showcase / name).is_file():
                (OUT / f"example{stem}_{name}").write_bytes((showcase / name).read_bytes())


if __name__ == "__main__":
    main()
