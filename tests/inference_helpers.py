"""Tiny trained runs shared by the predict / export / serve tests (trained once per test session)."""

import csv
import shutil
from pathlib import Path

import numpy as np
import torch
from conftest import FAST, compose_cfg

ALLOWED = ["transferlab.", "torch.optim.", "pytorch_lightning.", "lightning."]
_RUNS: dict[str, Path] = {}
WORDS = {"pos": "good great lovely fine", "neg": "bad awful dull poor"}


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _numeric(root: Path) -> list[str]:
    rng = np.random.default_rng(0)
    rows = [[round(y + rng.normal(0, 0.5), 4), round(100 * rng.random(), 2), "x", ["cat", "dog", "eel"][y]]
            for y in [i % 3 for i in range(90)]]
    write_csv(root / "train.csv", ["a", "b", "city", "y"], rows[:60])
    write_csv(root / "test.csv", ["a", "b", "city", "y"], rows[60:])
    return ["model=mlp", "model.hidden=16", "model.depth=1", "data=csv", f"data.path={root / 'train.csv'}",
            f"data.test_path={root / 'test.csv'}", "data.label_column=y"]


def _text(root: Path, model: str) -> list[str]:
    rows = [[f"a {WORDS[lab].split()[i % 4]} film, {WORDS[lab].split()[(i + 1) % 4]} acting {i}", lab]
            for i in range(30) for lab in ("pos", "neg")]
    write_csv(root / "train.csv", ["review", "sentiment"], rows[:44])
    write_csv(root / "test.csv", ["review", "sentiment"], rows[44:])
    backbone = (["model=hf", "model.hidden_size=16", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=32"]
                if model == "hf" else ["model=transformer", "model.width=16", "model.depth=1", "model.heads=2"])
    return [*backbone, "data=csv", f"data.path={root / 'train.csv'}", f"data.test_path={root / 'test.csv'}",
            "data.text_column=review", "data.label_column=sentiment", "data.max_length=12", "data.tokenizer.vocab_size=100"]


def _images(root: Path) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for c, name in enumerate(["ant", "cat", "zebra"]):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = (rng.random((10, 12, 3)) * 60 + 90 * c).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return ["model=cnn", "model.channels=[4,8]", "model.hidden=16", "data=image_folder", f"data.path={root / 'train'}",
            f"data.test_path={root / 'test'}", "data.image_size=8", "data.val_fraction=0.34"]


RECIPES = {
    "mlp": lambda root: _numeric(root),
    "transformer": lambda root: _text(root, "transformer"),
    "hf": lambda root: _text(root, "hf"),
    "cnn": lambda root: _images(root),
    "digits": lambda root: ["model=cnn", "model.channels=[4,8]", "model.hidden=16", "data=digits"],
}


def trained(name: str, tmp_path_factory, extra: tuple[str, ...] = ()) -> Path:
    """The run folder of a tiny supervised run of recipe `name` (trained once per session)."""
    key = name + "|" + " ".join(extra)
    if key not in _RUNS:
        from transferlab.runner.stage import run_stage

        root = tmp_path_factory.mktemp(name)
        overrides = ["task=supervised", *RECIPES[name.split("+")[0]](root), *FAST, *extra]
        out = root / "run"
        run_stage(compose_cfg(overrides, out), out)
        _RUNS[key] = out
    return _RUNS[key]


def eval_probabilities(run: Path) -> tuple[np.ndarray, list[str]]:
    """What `eval` computes on the test split: the restored model over the restored test loader, softmaxed."""
    from transferlab.runner.restore import restore_task

    restored = restore_task(run, ALLOWED, stage="test")
    task = restored.task.eval()
    with torch.inference_mode():
        probs = [torch.softmax(task(x), -1) for x, _ in restored.datamodule.test_dataloader()]
    return torch.cat(probs).numpy(), list(restored.datamodule.spec.class_names)


def flat_image_folder(source: Path, dest: Path) -> Path:
    """A class-per-subfolder tree flattened, its sorted file order = the datamodule's (class, file) order."""
    dest.mkdir(parents=True, exist_ok=True)
    for c, cls in enumerate(sorted(d.name for d in source.iterdir() if d.is_dir())):
        for f in sorted((source / cls).iterdir()):
            shutil.copy(f, dest / f"{c}_{cls}_{f.name}")
    return dest


def read_predictions(path: Path, class_names: list[str]) -> tuple[list[str], np.ndarray, list[str]]:
    """(ids, every class's probability, labels) of a predictions.csv written with all_probabilities=true."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    probs = np.asarray([[float(r[f"p_{c}"]) for c in class_names] for r in rows])
    return [r["id"] for r in rows], probs, [r["label"] for r in rows]
