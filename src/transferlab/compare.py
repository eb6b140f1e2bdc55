"""`python -m transferlab.compare <multirun folder | run folders...>`: one table of runs.

Reads only each run's `metrics.json`, `.hydra/overrides.yaml` and (for failed sweep jobs)
`error.json`, so it is fast and never imports torch or a model. Columns: the overrides that
differ between runs, the key metrics, trainable %, wall time. Runs that differ only by `seed`
are also aggregated to mean ± std. Writes `<stem>.csv`, `<stem>.md` and a PNG plot.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from transferlab.summary import SUMMARY_FILE, atomic_write_text

ERROR_FILE = "error.json"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
SEED_KEY = "seed"
DEFAULT_METRICS = ("test/acc", "test/f1", "test/loss", "test/ece")
TRAINABLE = "params/trainable_pct"
WALL = "time/wall_s"
# folders inside a run that are never runs themselves
SKIP_DIRS = {"checkpoints", "csv", "tensorboard", "wandb", ".hydra", ".submitit"}
LOWER_IS_BETTER = ("loss", "ece", "nll", "error", "time/", "memory/")


@dataclass
class Run:
    """One run folder as compare sees it."""

    path: Path
    name: str = ""
    overrides: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"  # ok | failed | incomplete
    reason: str | None = None
    error: str | None = None

    def value(self, key: str) -> Any:
        """An override (as written on the command line) or a metrics.json value."""
        if key in self.overrides:
            return _number(self.overrides[key])
        return self.metrics.get(key)


def _number(text: Any) -> Any:
    try:
        return int(text)
    except (TypeError, ValueError):
        try:
            return float(text)
        except (TypeError, ValueError):
            return text


def parse_overrides(lines: Iterable[str]) -> dict[str, str]:
    """`key=value` lines (Hydra's overrides.yaml) -> {key: value}; `+`/`++` prefixes dropped, `~key` kept as deleted."""
    out: dict[str, str] = {}
    for line in lines:
        line = str(line)
        if line.startswith("~"):
            key, _, value = line[1:].partition("=")
            out[key] = "<deleted>"
            continue
        key, _, value = line.lstrip("+").partition("=")
        out[key] = value
    return out


def is_run(folder: Path) -> bool:
    return any((folder / f).is_file() for f in (SUMMARY_FILE, ERROR_FILE, OVERRIDES_FILE))


def find_run_folders(paths: Sequence[str | Path], max_depth: int = 4) -> list[Path]:
    """Each given run folder, or every run folder under a given sweep/parent folder (not inside a run)."""
    found: list[Path] = []

    def walk(folder: Path, depth: int) -> None:
        if is_run(folder):
            found.append(folder)
            return
        if depth >= max_depth:
            return
        subdirs = [d for d in folder.iterdir() if d.is_dir() and d.name not in SKIP_DIRS and not d.name.startswith(".")]
        for d in sorted(subdirs, key=lambda d: (0, int(d.name), "") if d.name.isdigit() else (1, 0, d.name)):
            walk(d, depth + 1)

    for p in paths:
        p = Path(p)
        if not p.is_dir():
            raise FileNotFoundError(f"{p}: not a folder (give a run folder or a multirun folder)")
        walk(p, 0)
    return found


def read_run(folder: Path, root: Path | None = None) -> Run:
    import yaml

    run = Run(path=folder)
    if root is not None:
        try:
            run.name = str(folder.resolve().relative_to(root.resolve())) or folder.name
        except ValueError:
            run.name = str(folder)
    run.name = run.name if run.name not in ("", ".") else folder.name
    over = folder / OVERRIDES_FILE
    if over.is_file():
        run.overrides = parse_overrides(yaml.safe_load(over.read_text()) or [])
    if (folder / SUMMARY_FILE).is_file():
        run.metrics = json.loads((folder / SUMMARY_FILE).read_text())
    if (folder / ERROR_FILE).is_file():
        err = json.loads((folder / ERROR_FILE).read_text())
        run.status, run.reason, run.error = "failed", err.get("reason"), err.get("error")
    elif not run.metrics:
        run.status = "incomplete"
    return run


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    folders = find_run_folders(paths)
    if not folders:
        return []
    root = Path(_common_root(folders))
    return [read_run(f, root) for f in folders]


def _common_root(folders: Sequence[Path]) -> str:
    import os

    resolved = [str(f.resolve()) for f in folders]
    if len(resolved) == 1:
        return str(Path(resolved[0]).parent)
    return os.path.commonpath(resolved)


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value is not the same in every run (absent counts as a value), in first-seen order."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.overrides if k not in keys]
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


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
    except (TypeError, ValueError):
        return None
    return f


def run_rows(runs: Sequence[Run], keys: Sequence[str], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One row per run: name, status, differing overrides, metrics, trainable %, wall time, error."""
    rows = []
    any_failed = any(r.status != "ok" for r in runs)
    for r in runs:
        row: dict[str, Any] = {"run": r.name, "status": r.status}
        row.update({k: r.overrides.get(k) for k in keys})
        row.update({m: _float(r.metrics.get(m)) for m in metrics})
        row["trainable_pct"] = _float(r.metrics.get(TRAINABLE))
        row["wall_s"] = _float(r.metrics.get(WALL))
        if any_failed:
            row["reason"] = r.reason
            row["error"] = r.error
        rows.append(row)
    return rows


def seed_groups(runs: Sequence[Run], keys: Sequence[str], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Mean ± std over seeds: runs grouped by every differing override except `seed` (finished runs only)."""
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
        row: dict[str, Any] = dict(zip(group_keys, gk))
        row["n"] = len(members)
        row["failed"] = failed.get(gk, 0)
        for m in [*metrics, TRAINABLE, WALL]:
            vals = [v for v in (_float(r.metrics.get(m)) for r in members) if v is not None]
            name = {TRAINABLE: "trainable_pct", WALL: "wall_s"}.get(m, m)
            row[f"{name}_mean"] = statistics.fmean(vals) if vals else None
            row[f"{name}_std"] = statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None)
        rows.append(row)
    return rows


def upstream_without_seed(value: str | None) -> str | None:
    """A value naming another run's folder (`task.pretrained=<run>`) -> that run's overrides minus its seed.

    Seed k's fine-tuning starts from seed k's pretraining: the two paths differ, the pretraining
    recipes do not, so seeds group under the recipe, e.g. `run(task=supervised data.classes=[0,1,2,3,4])`.
    """
    import yaml

    if not value:
        return value
    try:
        over = Path(value) / OVERRIDES_FILE
        if not over.is_file():
            return value
        upstream = parse_overrides(yaml.safe_load(over.read_text()) or [])
    except (OSError, ValueError, yaml.YAMLError):
        return value
    recipe = " ".join(f"{k}={v}" for k, v in upstream.items() if k != SEED_KEY and not k.startswith(("paths.", "hydra.")))
    return f"run({recipe})"


def sort_rows(rows: list[dict[str, Any]], metric: str | None, ascending: bool | None = None) -> list[dict[str, Any]]:
    """Best first by `metric` (descending, or ascending for loss-like metrics); rows without it last."""
    if not metric:
        return rows
    col = metric if any(metric in r for r in rows) else f"{metric}_mean"
    if not any(col in r for r in rows):
        raise KeyError(f"--sort {metric}: not a column of the table (columns: {sorted({k for r in rows for k in r})})")
    asc = lower_is_better(metric) if ascending is None else ascending
    have = [r for r in rows if _float(r.get(col)) is not None and math.isfinite(_float(r.get(col)))]
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
            out[m] = None if mean is None else f"{_fmt(mean)} ± {_fmt(std)}"
        shown.append(out)
    return markdown(shown)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    header: list[str] = []
    for r in rows:
        header += [k for k in r if k not in header]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows([{k: ("" if r.get(k) is None else r.get(k)) for k in header} for r in rows])
    tmp.replace(path)


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
        text += "\n\nMean ± std over seeds:\n\n" + seed_markdown(groups, [k for k in keys if k != SEED_KEY], metrics)
    atomic_write_text(out_dir / f"{stem}.md", text + "\n")
    return text, rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m transferlab.compare", description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", help="a multirun folder, a parent of run folders, or run folders")
    p.add_argument("--metrics", nargs="+", default=None, help=f"metrics.json keys to show (default: {' '.join(DEFAULT_METRICS)})")
    p.add_argument("--sort", default=None, metavar="METRIC", help="sort best first by this metric (loss-like ascending)")
    p.add_argument("--ascending", action=argparse.BooleanOptionalAction, default=None, help="force the sort direction")
    p.add_argument("--x", default=TRAINABLE, help="plot x axis: an override key (e.g. data.labels_per_class) or metrics.json key")
    p.add_argument("--y", default=None, help="plot y axis metric (default: --sort or the first metric)")
    p.add_argument("--out", default=None, help="folder for compare.csv/.md/.png (default: the one folder given, else .)")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)

    try:
        runs = load_runs(args.paths)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not runs:
        print(f"error: no run folders (with {SUMMARY_FILE} or {OVERRIDES_FILE}) under {' '.join(args.paths)}", file=sys.stderr)
        return 2
    metrics = args.metrics or default_metrics(runs, [args.sort] if args.sort else [])
    out = Path(args.out) if args.out else (Path(args.paths[0]) if len(args.paths) == 1 and not is_run(Path(args.paths[0])) else Path("."))
    try:
        text, _ = write_tables(runs, out, "compare", metrics, args.sort, args.ascending)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    print(text)
    written = [out / "compare.csv", out / "compare.md"]
    if not args.no_plot:
        y = args.y or args.sort or (metrics[0] if metrics else "test/acc")
        keys = differing_keys(runs)
        if args.x not in keys and not any(args.x in r.metrics for r in runs):
            print(f"error: --x {args.x}: neither an override that differs between runs ({keys}) nor a metrics.json key",
                  file=sys.stderr)
            return 2
        png = plot(runs, keys, y, args.x, out / "compare.png")
        if png is not None:
            written.append(png)
    failed = sum(r.status != "ok" for r in runs)
    print(f"\n{len(runs)} runs ({failed} failed or incomplete); wrote {', '.join(str(w) for w in written)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
