"""Plots of runs (matplotlib, imported only here)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from transferlab.analysis.runs import SEED_KEY, Run
from transferlab.analysis.tables import TRAINABLE, _float


def plot(runs: Sequence[Run], keys: Sequence[str], metric: str, x: str, path: Path) -> Path | None:
    """`metric` vs `x` (an override key or a metrics.json key), one line per combination of the other
    differing overrides (seed excluded: points are seed means with std error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    line_keys = [k for k in keys if k not in (SEED_KEY, x)]
    lines: dict[str, dict[float, list[float]]] = {}
    for r in runs:
        if r.status != "ok":
            continue
        xv, yv = _float(r.value(x)), _float(r.metrics.get(metric))
        if xv is None or yv is None or not math.isfinite(yv):
            continue
        label = ", ".join(f"{k}={r.overrides.get(k)}" for k in line_keys) or "runs"
        lines.setdefault(label, {}).setdefault(xv, []).append(yv)
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    xs_all = []
    for label, points in sorted(lines.items()):
        xs = sorted(points)
        xs_all += xs
        means = [statistics.fmean(points[v]) for v in xs]
        stds = [statistics.stdev(points[v]) if len(points[v]) > 1 else 0.0 for v in xs]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
    positive = [v for v in xs_all if v > 0]
    if positive and len(positive) == len(xs_all) and max(positive) / min(positive) >= 10:
        ax.set_xscale("log")
    ax.set_xlabel({TRAINABLE: "trainable parameters (%)"}.get(x, x))
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
