"""Plots of runs (matplotlib, imported only here)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from transferlab.analysis.runs import LARGEST, SEED_KEY, Run
from transferlab.analysis.tables import TRAINABLE, _float
from transferlab.utils.io import atomic_open


def plot(runs: Sequence[Run], keys: Sequence[str], metric: str, x: str, path: Path) -> Path | None:
    """`metric` vs `x` (an override key or a metrics.json key), one line per combination of the other
    differing overrides (seed excluded: points are seed means with std error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    line_keys = [k for k in keys if k not in (SEED_KEY, x)]
    lines: dict[str, dict[float, list[float]]] = {}
    names: dict[str, list[str]] = {}  # the run folders of each line (the table maps them to their overrides)
    for r in runs:
        if r.status != "ok":
            continue
        xv, yv = _float(r.value(x)), _float(r.metrics.get(metric))
        if xv is None or yv is None or not all(math.isfinite(v) and abs(v) <= LARGEST for v in (xv, yv)):
            continue  # NaN/Inf or absurd (an override such as data.labels_per_class=1e308): not drawable
        label = ", ".join(f"{k}={r.overrides.get(k)}" for k in line_keys) or "runs"
        lines.setdefault(label, {}).setdefault(xv, []).append(yv)
        names.setdefault(label, []).append(r.name)
    if not lines:
        return None
    xs_all = sorted({v for points in lines.values() for v in points})
    wide = max(len(label) for label in lines) > 30 or len(lines) > 6
    fig, ax = plt.subplots(figsize=(9 if wide else 6.5, 4 + 0.12 * max(0, len(lines) - 12)))
    if len(xs_all) == 1:  # x does not vary (e.g. every run trains 100 %): one bar per line, not one point
        labels = sorted(lines)
        means = [statistics.fmean(lines[label][xs_all[0]]) for label in labels]
        stds = [statistics.stdev(lines[label][xs_all[0]]) if len(lines[label][xs_all[0]]) > 1 else 0.0 for label in labels]
        ax.barh(range(len(labels)), means, xerr=stds, capsize=3, color="tab:blue", alpha=0.8)
        ticks = [_short_label(label) if len(label) <= 48 else _run_names(names[label]) for label in labels]
        ax.set_yticks(range(len(labels)), ticks, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(metric)
        ax.set_title(f"{_axis_name(x)} = {xs_all[0]:g} for every run", fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    else:
        for label, points in sorted(lines.items()):
            xs = sorted(points)
            means = [statistics.fmean(points[v]) for v in xs]
            stds = [statistics.stdev(points[v]) if len(points[v]) > 1 else 0.0 for v in xs]
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=_short_label(label))
        positive = [v for v in xs_all if v > 0]
        if positive and len(positive) == len(xs_all) and max(positive) / min(positive) >= 10:
            ax.set_xscale("log")
        ax.set_xlabel(_axis_name(x))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if len(lines) > 1:  # outside the axes, so it never covers a point
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    try:
        fig.tight_layout()
        with atomic_open(path, "wb") as f:  # a full disk leaves the old plot (or none), never half a PNG
            fig.savefig(f, format="png", dpi=120)
    finally:
        plt.close(fig)
    return path


def _run_names(names: list[str]) -> str:
    """A bar whose overrides are too long to read: its run folder(s), as the table names them."""
    return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} seeds)"


def _axis_name(x: str) -> str:
    return {TRAINABLE: "trainable parameters (%)"}.get(x, x)


def _short_label(label: str, limit: int = 48) -> str:
    """A legend entry: its overrides with long values (paths) shortened, at most `limit` characters."""
    from transferlab.analysis.tables import short_value

    parts = [f"{k}={short_value(v, 20)}" if sep else k for k, sep, v in (p.partition("=") for p in label.split(", "))]
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"
