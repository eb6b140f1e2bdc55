"""Apply a classifier to batches of raw items: preprocess, forward, softmax, and the rows of predictions.csv."""

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferlab.inference.preprocess import Preprocessor
from transferlab.utils.io import atomic_open


class Predictor:
    """A model in eval mode and the preprocessing its run trained with."""

    def __init__(self, model: nn.Module, preprocessor: Preprocessor, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.pre = preprocessor
        self.device = device

    @property
    def class_names(self) -> list[str]:
        return self.pre.class_names

    @torch.inference_mode()
    def probabilities(self, items: list[Any], kind: str) -> np.ndarray:
        x = self.pre.encode(items, kind).to(self.device)
        return torch.softmax(self.model(x).float(), dim=-1).cpu().numpy()

    def answers(self, probs: np.ndarray, top_k: int = 1) -> list[dict[str, Any]]:
        """Per row: the predicted class name and its probability, and the next `top_k - 1` as `top`."""
        order = np.argsort(-probs, axis=1, kind="stable")[:, : max(1, top_k)]
        out = []
        for p, idx in zip(probs, order):
            row: dict[str, Any] = {"label": self.class_names[idx[0]], "probability": float(p[idx[0]])}
            if top_k > 1:
                row["top"] = [{"label": self.class_names[j], "probability": float(p[j])} for j in idx]
            out.append(row)
        return out


def header(class_names: list[str], top_k: int, all_probabilities: bool) -> list[str]:
    cols = ["id", "label", "probability"]
    for rank in range(2, top_k + 1):
        cols += [f"label_{rank}", f"probability_{rank}"]
    if all_probabilities:
        cols += [f"p_{name}" for name in class_names]
    return cols


def write_predictions(predictor: Predictor, batches: Iterable[tuple[list[Any], list[Any], str]], out: str | Path,
                      top_k: int = 1, all_probabilities: bool = False, total: int | None = None,
                      progress: bool = True) -> int:
    """Stream `batches` through the model into a CSV (written atomically); returns the number of rows."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    top_k = min(max(1, top_k), len(predictor.class_names))
    written = 0
    columns = [TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with atomic_open(out, "w", newline="") as f, Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("predict", total=total)
        writer = csv.writer(f)
        writer.writerow(header(predictor.class_names, top_k, all_probabilities))
        for ids, items, kind in batches:
            probs = predictor.probabilities(items, kind)
            order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
            for row_id, p, idx in zip(ids, probs, order):
                row = [row_id]
                for j in idx:
                    row += [predictor.class_names[j], f"{p[j]:.9g}"]
                if all_probabilities:
                    row += [f"{v:.9g}" for v in p]
                writer.writerow(row)
            written += len(ids)
            bar.update(task, advance=len(ids))
    return written
