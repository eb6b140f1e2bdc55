"""Tables of runs: rows, seed groups (mean ± std), Markdown and CSV. The one table writer."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transferlab.analysis.runs import (
    SEED_KEY,
    Run,
    differing_keys,
    upstream_without_seed,
)
from transferlab.utils.io import atomic_open, atomic_write_text

DEFAULT_METRICS = ("test/acc", "test/f1", "test/loss", "test/ece")
TRAINABLE = "params/trainable_pct"
WALL = "time/wall_s"
LOWER_IS_BETTER = ("loss", "ece", "nll", "error", "time/", "memory/")


def default_metrics(runs: Sequence[Run], first: Sequence[str] = ()) -> list[str]:
    present = {k for r in runs for k in r.metrics}
    metrics = [m for m in first if m]
    metrics += [m for m in DEFAULT_METRICS if m in present and m not in metrics]
    return metrics


def lower_is_better(metric: str) -> bool:
    return any(tag in metric for tag in LOWER_IS_BETTER)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}" if abs(v) >= 1000 else f"{v:.4f}".rstrip("0").rstrip(".") if v != 0 else "0"
    return str(v)


def _float(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):  # text, a list, an integer of hundreds of digits
        return None
    return f


MAX_KEY_COLUMNS = 6   # more differing overrides than this go into one `overrides` column
MAX_VALUE = 28        # longer override values are shortened (paths keep their last two parts)


def short_value(value: Any, limit: int = MAX_VALUE) -> Any:
    """`outputs/2026-12-01/10-22-33/pretrain` -> `…/10-22-33/pretrain`; other long values cut with `…`."""
    if not isinstance(value, str) or len(value) <= limit:
        return value
    if "/" in value.strip("/"):
        tail = "/".join(value.rstrip("/").split("/")[-2:])
        if len(tail) + 2 <= limit:
            return "…/" + tail
    return value[: limit - 1] + "…"


def key_columns(keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """(keys shown as their own columns, keys grouped into the `overrides` column), grouped by config group."""
    ordered = sorted(keys, key=lambda k: (k == SEED_KEY, k.split(".")[0], k))
    if len(ordered) <= MAX_KEY_COLUMNS:
        return list(keys), []
    own = [k for k in ordered if k == SEED_KEY]
    return own, [k for k in ordered if k not in own]


def run_rows(runs: Sequence[Run], keys: Sequence[str], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One row per run: name, status, differing overrides, metrics, trainable %, wall time, error."""
    rows = []
    any_failed = any(r.status != "ok" for r in runs)
    own, grouped = key_columns(keys)
    for r in runs:
        row: dict[str, Any] = {"run": r.name, "status": r.status}
        row.update({k: short_value(r.overrides.get(k)) for k in own})
        if grouped:
            row["overrides"] = " ".join(f"{k}={short_value(r.overrides[k])}" for k in grouped if k in r.overrides) or "-"
        row.update({m: _float(r.metrics.get(m)) for m in metrics})
        row["trainable_pct"] = _float(r.metrics.get(TRAINABLE))
        row["wall_s"] = _float(r.metrics.get(WALL))
        if any_failed:
            row["reason"] = r.reason
            row["error"] = r.error
        rows.append(row)
    return rows


def seed_groups(runs: Sequence[Run], keys: Sequence[str], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Mean ± std over seeds: runs grouped by every differing override except `seed` (finished runs only).

    `n` counts the group's finished runs; `<metric>_n` the values each mean averages (fewer when a
    finished run lacks that metric).
    """
    group_keys = [k for k in keys if k != SEED_KEY]
    groups: dict[tuple, list[Run]] = {}
    failed: dict[tuple, int] = {}
    for r in runs:
        gk = tuple(upstream_without_seed(r.overrides.get(k)) for k in group_keys)
        groups.setdefault(gk, [])
        if r.status == "ok":
            groups[gk].append(r)
        else:
            failed[gk] = failed.get(gk, 0) + 1
    rows = []
    for gk, members in groups.items():
        if len(group_keys) > MAX_KEY_COLUMNS:
            row: dict[str, Any] = {"overrides": " ".join(f"{k}={short_value(v)}" for k, v in zip(group_keys, gk)
                                                         if v is not None) or "-"}
        else:
            row = {k: short_value(v) for k, v in zip(group_keys, gk)}
        row["n"] = len(members)
        row["failed"] = failed.get(gk, 0)
        for m in [*metrics, TRAINABLE, WALL]:
            vals = [v for v in (_float(r.metrics.get(m)) for r in members) if v is not None]
            name = {TRAINABLE: "trainable_pct", WALL: "wall_s"}.get(m, m)
            row[f"{name}_mean"] = statistics.fmean(vals) if vals else None
            row[f"{name}_std"] = statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None)
            row[f"{name}_n"] = len(vals)
        rows.append(row)
    return rows


def sort_rows(rows: list[dict[str, Any]], metric: str | None, ascending: bool | None = None) -> list[dict[str, Any]]:
    """Best first by `metric` (descending, or ascending for loss-like metrics); rows without it, and failed
    runs (whose values may be the invalid ones that failed them), last."""
    if not metric:
        return rows
    col = metric if any(metric in r for r in rows) else f"{metric}_mean"
    if not any(col in r for r in rows):
        raise KeyError(f"--sort {metric}: not a column of the table (columns: {sorted({k for r in rows for k in r})})")
    asc = lower_is_better(metric) if ascending is None else ascending
    have = [r for r in rows if _float(r.get(col)) is not None and math.isfinite(_float(r.get(col)))
            and r.get("status", "ok") == "ok"]
    rest = [r for r in rows if r not in have]
    return sorted(have, key=lambda r: _float(r[col]), reverse=not asc) + rest


def markdown(rows: Sequence[dict[str, Any]], max_cell: int = 120) -> str:
    if not rows:
        return "(no runs)"
    header = list(rows[0])
    for r in rows[1:]:
        header += [k for k in r if k not in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [_fmt(r.get(h)).replace("|", "\\|").replace("\n", " ") for h in header]
        lines.append("| " + " | ".join(c if len(c) <= max_cell else c[: max_cell - 3] + "..." for c in cells) + " |")
    return "\n".join(lines)


def seed_markdown(rows: Sequence[dict[str, Any]], group_keys: Sequence[str], metrics: Sequence[str]) -> str:
    """The seed table with `mean ± std` cells."""
    shown = []
    for r in rows:
        out: dict[str, Any] = {k: r.get(k) for k in group_keys}
        out["n"], out["failed"] = r["n"], r["failed"]
        for m in [*metrics, "trainable_pct", "wall_s"]:
            mean, std = r.get(f"{m}_mean"), r.get(f"{m}_std")
            count = "" if r.get(f"{m}_n", r["n"]) == r["n"] else f" (n={r[f'{m}_n']})"
            out[m] = None if mean is None else f"{_fmt(mean)} ± {_fmt(std)}{count}"
        shown.append(out)
    return markdown(shown)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    header: list[str] = []
    for r in rows:
        header += [k for k in r if k not in header]
    with atomic_open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows([{k: ("" if r.get(k) is None else r.get(k)) for k in header} for r in rows])


def write_tables(runs: Sequence[Run], out_dir: Path, stem: str, metrics: Sequence[str],
                 sort: str | None = None, ascending: bool | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Write `<stem>.csv` and `<stem>.md` (plus `<stem>_seeds.csv` when seeds vary); return the Markdown and rows."""
    keys = differing_keys(runs)
    rows = sort_rows(run_rows(runs, keys, metrics), sort, ascending)
    write_csv(out_dir / f"{stem}.csv", rows)
    text = markdown(rows)
    if SEED_KEY in keys:
        groups = sort_rows(seed_groups(runs, keys, metrics), sort, ascending)
        write_csv(out_dir / f"{stem}_seeds.csv", groups)
        group_keys = [k for k in keys if k != SEED_KEY]
        shown_keys = ["overrides"] if len(group_keys) > MAX_KEY_COLUMNS else group_keys
        text += "\n\nMean ± std over seeds:\n\n" + seed_markdown(groups, shown_keys, metrics)
    atomic_write_text(out_dir / f"{stem}.md", text + "\n")
    return text, rows
