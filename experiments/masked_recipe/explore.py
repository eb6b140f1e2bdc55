"""Masked-pretraining variants, judged by how linearly separable their frozen features are.

One MAE pretraining per call (`task=masked model=transformer data=mnist1d`, all ten classes, labels
unused, the given overrides), then two probes on 20 labels per class (the issue's protocol):

- a strong probe: scikit-learn logistic regression on standardised frozen features, CLS token and
  mean over patch tokens, C in {0.01, 0.1, 1, 10} chosen on the validation split (test only reported);
  the same for the randomly initialised transformer of that seed (`--random`);
- the default probe as it was before 2026-12-07 (`PROBE_BEFORE_20261207`: CLS token, no feature norm, lr 3e-3, 20 epochs):
  `task=finetune peft=linear_probe data.labels_per_class=20 task.pretrained=<run>`.

One JSON line per call is appended to exploration.jsonl.

    python experiments/masked_recipe/explore.py e100 0 trainer.max_epochs=100 threads=1      # ~10-15 min here
    python experiments/masked_recipe/explore.py --random random 0                            # random features, ~30 s
    python experiments/masked_recipe/explore.py --random random_p8 0 model.patch_size=8      # random features of that backbone
    python experiments/masked_recipe/explore.py digits 0 data=digits model.patch_size=2      # another data set (default mnist1d)
    python experiments/masked_recipe/explore.py recipe 0 task.probe.knn.enabled=true         # the committed `recipe` rows, ~15 min
    python experiments/masked_recipe/explore.py recipe_nohead 0 threads=auto                 # task=masked defaults (200 epochs), 8-10 min
    python experiments/masked_recipe/explore.py --report                                     # exploration.md from the rows
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from studylib import PROBE_BEFORE_20261207, ROOT, append_jsonl, compose_train, read_jsonl, train_once  # noqa: E402

LABELS = 20
BASE = ["model=transformer", "threads=1"]  # one torch thread a run (studies share the cores)


def features(backbone, loader, pool: str):
    """The backbone's own pooled features (`model.pool` = cls | mean) of a loader, as numpy arrays."""
    from transferlab.callbacks.online_probes import feature_bank

    backbone.eval().pool = pool
    feats, labels = feature_bank(backbone, loader, "cpu")
    return feats.numpy(), labels.numpy()


def with_data(over: list[str]) -> list[str]:
    """The overrides with the data set made explicit (`data=mnist1d` unless they choose another)."""
    return over if any(o.startswith("data=") for o in over) else ["data=mnist1d", *over]


def backbone_keys(over: list[str]) -> list[str]:
    """The data set and the `model.*` overrides of a pretraining: the probes must build the same backbone on the same data."""
    return [o for o in with_data(over) if o.startswith(("data=", "model."))]


def strong_probe(run: Path | None, seed: int, work: Path, backbone_over: list[str]) -> dict:
    """Logistic regression on frozen features of `run`'s backbone (None: random init), per pooling."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from transferlab.runner.build import build_backbone, build_datamodule
    from transferlab.utils.checkpoint import load_backbone

    cfg = compose_train(["task=finetune", "peft=linear_probe", *BASE, *backbone_over, f"seed={seed}", f"data.labels_per_class={LABELS}"], work)
    torch.manual_seed(seed)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    dm.setup("test")
    backbone = build_backbone(cfg, dm.spec)
    if run is not None:
        load_backbone(backbone, run)
    result = {}
    for pool in ("cls", "mean"):
        (xtr, ytr), (xva, yva), (xte, yte) = (features(backbone, dl, pool) for dl in
                                             (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()))
        scale = StandardScaler().fit(xtr)
        best = None
        for c in (0.01, 0.1, 1, 10):
            clf = LogisticRegression(C=c, max_iter=3000).fit(scale.transform(xtr), ytr)
            val = clf.score(scale.transform(xva), yva)
            if best is None or val > best[0]:
                best = (val, c, clf.score(scale.transform(xte), yte))
        result[pool] = {"val": round(best[0], 3), "C": best[1], "test": round(best[2], 3)}
    return result


def report() -> str:
    """exploration.md: one line per row of exploration.jsonl, test accuracy %, the random rows as the reference."""
    rows = read_jsonl(HERE / "exploration.jsonl")
    # the reference: the random transformer of the same seed and the same model overrides (e.g. model.patch_size)
    random = {(r["seed"], tuple(backbone_keys(r["over"]))): r for r in rows if r["name"].startswith("random")}
    lines = ["| variant | seed | pretraining overrides | wall s | val MAE loss | logreg CLS (val / test) | logreg mean (val / test) "
             "| mean − random (test) | default probe (val / test) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = random.get((r["seed"], tuple(backbone_keys(r["over"]))))
        gain = f"{100 * (r['mean']['test'] - ref['mean']['test']):+.1f}" if ref and not r["name"].startswith("random") else ""
        probe = f"{100 * r['probe_val']:.1f} / {100 * r['probe_test']:.1f}" if "probe_val" in r else ""
        loss = f"{r['val_loss']:.3f}" if r.get("val_loss") is not None else ""
        lines.append(f"| {r['name']} | {r['seed']} | {' '.join(r['over']) or '(defaults)'} | {r.get('wall', '')} | {loss} | "
                     f"{100 * r['cls']['val']:.1f} / {100 * r['cls']['test']:.1f} | {100 * r['mean']['val']:.1f} / "
                     f"{100 * r['mean']['test']:.1f} | {gain} | {probe} |")
    table = "\n".join(lines) + "\n"
    (HERE / "exploration.md").write_text(table)
    return table


def main() -> None:
    if sys.argv[1:] == ["--report"]:
        print(report())
        return
    args = sys.argv[1:]
    random = args[0] == "--random"
    name, seed, over = args[int(random)], int(args[int(random) + 1]), args[int(random) + 2:]
    work = ROOT / "outputs" / "studies" / "masked_recipe_explore" / name / f"seed{seed}"
    row = {"name": name, "seed": seed, "over": over}
    if random:
        row.update(strong_probe(None, seed, work / "probe_cfg", backbone_keys(over)))
    else:
        t0 = time.time()
        m = train_once(["task=masked", *BASE, f"seed={seed}", *with_data(over)], work / "pretrain")
        row.update({"wall": round(m.get("time/wall_s", time.time() - t0)), "val_loss": m.get("val/loss")})
        row.update(strong_probe(work / "pretrain", seed, work / "probe_cfg", backbone_keys(over)))
        p = train_once(["task=finetune", "peft=linear_probe", *PROBE_BEFORE_20261207, *BASE, *backbone_keys(over), f"seed={seed}",
                        f"data.labels_per_class={LABELS}",
                        f"task.pretrained={work / 'pretrain'}"], work / "probe")
        row.update({"probe_val": p["val/acc"], "probe_test": p["test/acc"]})
    append_jsonl(HERE / "exploration.jsonl", row)


if __name__ == "__main__":
    main()
