"""The pictures `inspect` writes: CKA and weight change per block, feature maps, attributions."""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    from transferlab.utils.io import atomic_open

    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def representation_plot(runs: Sequence[dict[str, Any]], path: Path, floor: dict[str, float | None] | None = None) -> Path:
    """Two panels, blocks on the x-axis, one line per run: CKA to the reference, relative weight change."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 0.7 * len(runs[0]["blocks"]) + 3), 6.5), sharex=True)
    names = [b["name"] for b in runs[0]["blocks"]]
    xs = np.arange(len(names))
    for run in runs:
        by_name = {b["name"]: b for b in run["blocks"]}
        cka = [by_name.get(n, {}).get("cka") for n in names]
        change = [by_name.get(n, {}).get("weight_change") for n in names]
        top.plot(xs, [np.nan if v is None else v for v in cka], "o-", label=run["label"])
        bottom.plot(xs, [np.nan if v is None else v for v in change], "o-", label=run["label"])
    if floor:
        top.plot(xs, [np.nan if floor.get(n) is None else floor[n] for n in names], "--", color="gray",
                 label="noise floor: another pretraining seed")
    top.set_ylabel("linear CKA to the pretrained\n(1 = same representation)")
    lows = [b["cka"] for run in runs for b in run["blocks"] if b.get("cka") is not None] + list((floor or {}).values())
    top.set_ylim(max(0.0, min([v for v in lows if v is not None] + [1.0]) - 0.1), 1.02)  # zoom: CKA differences are small
    bottom.set_ylabel("relative weight change\n||W_ft - W_pre|| / ||W_pre||")
    bottom.set_xticks(xs, names, rotation=30, ha="right")
    bottom.set_xlabel("block (input -> output)")
    top.legend(fontsize=8)
    top.set_title("What fine-tuning changed, per block (test set)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def feature_map_plot(maps: dict[str, dict[str, Any]], labels: np.ndarray, method: str, path: Path,
                     class_names: Sequence[str] | None = None) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(maps), figsize=(4.6 * len(maps), 4.4))
    axes = np.atleast_1d(axes)
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab10")
    for ax, (title, m) in zip(axes, maps.items()):
        for i, c in enumerate(classes):
            sel = labels == c
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            ax.scatter(m["xy"][sel, 0], m["xy"][sel, 1], s=7, color=cmap(i % 10), label=name, alpha=0.75)
        ax.set_title(f"{title}\nk-NN acc {100 * m['knn_acc']:.1f} % (5-fold, k=10)", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[-1].legend(title="class", fontsize=8, markerscale=2, loc="best")
    fig.suptitle(f"Backbone features of the test set ({method.upper() if method == 'pca' else method})", fontsize=11, y=1.04)
    return _save(fig, path)


def attribution_plot(x: np.ndarray, attr: np.ndarray, labels: np.ndarray, preds: np.ndarray, method: str, path: Path,
                     class_names: Sequence[str] | None = None, decode: Callable[[int], str] | None = None,
                     pad_id: int | None = None) -> Path:
    """One panel per example (rows: classes): signal curves, images or tokens, coloured by attribution."""
    plt = _pyplot()
    classes = list(dict.fromkeys(labels.tolist()))
    per_class = max(int((labels == c).sum()) for c in classes)
    text = decode is not None
    width = 7.0 if text else 3.2
    fig, axes = plt.subplots(len(classes), per_class, figsize=(width * per_class, (1.6 if text else 2.2) * len(classes)),
                             squeeze=False)

    def name(c: int) -> str:
        return class_names[c] if class_names is not None and c < len(class_names) else str(c)

    slots = {c: 0 for c in classes}
    for xi, ai, yi, pi in zip(x, attr, labels.tolist(), preds.tolist()):
        ax = axes[classes.index(yi), slots[yi]]
        slots[yi] += 1
        scale = float(np.abs(ai).max()) or 1.0
        if text:
            _draw_tokens(ax, xi, ai / scale, decode, pad_id)
        elif xi.ndim == 2:  # (C, L) signal
            for ch in range(xi.shape[0]):
                ax.plot(xi[ch], color="0.6", lw=1)
                ax.scatter(np.arange(xi.shape[1]), xi[ch], c=ai[ch] / scale, cmap="coolwarm", vmin=-1, vmax=1, s=16, zorder=3)
            ax.set_yticks([])
            ax.set_xlabel("position", fontsize=7)
        else:  # (C, H, W) image
            ax.imshow(xi.mean(0), cmap="gray")
            ax.imshow(ai.sum(0) / scale, cmap="coolwarm", vmin=-1, vmax=1, alpha=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(f"true {name(yi)}, pred {name(pi)}", fontsize=8, color="black" if yi == pi else "red")
    for r, c in enumerate(classes):  # a class with fewer test examples than the others leaves empty panels
        for ax in axes[r, slots[c]:]:
            ax.axis("off")
    fig.suptitle(f"{method.replace('_', ' ')} of the true class (red = raises it, blue = lowers it)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _draw_tokens(ax, ids: np.ndarray, scores: np.ndarray, decode: Callable[[int], str], pad_id: int | None,
                 max_tokens: int = 48, per_line: int = 12) -> None:
    import matplotlib

    cmap = matplotlib.colormaps["coolwarm"]
    shown = [(int(t), float(s)) for t, s in zip(ids, scores) if pad_id is None or int(t) != pad_id][:max_tokens]
    for i, (tok, score) in enumerate(shown):
        word = decode(tok) or "·"
        ax.text((i % per_line) / per_line, 1 - (i // per_line + 1) / (max_tokens // per_line + 1), word[:10], fontsize=7,
                bbox=dict(facecolor=cmap((score + 1) / 2), edgecolor="none", pad=1.0), transform=ax.transAxes)
    ax.axis("off")
