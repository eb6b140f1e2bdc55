"""`python -m transferlab.compare <multirun folder | run folders...> [sort=METRIC] [x=KEY] ...`: one table of runs.

Reads only each run's `metrics.json`, `.hydra/overrides.yaml` and (for failed sweep jobs)
`error.json`, so it is fast and never imports torch or a model. Columns: the overrides that
differ between runs, the key metrics, trainable %, wall time. Runs that differ only by `seed`
are also aggregated to mean ± std. Writes `<stem>.csv`, `<stem>.md` and a PNG plot.

Options are written `key=value` like every other entry point (`sort=test/acc no_plot=true`);
the `--sort test/acc` flag spelling is accepted too. Folders are the positional arguments:
compare reads run folders, not a config tree, so it does not start Hydra.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from transferlab.analysis.plots import plot
from transferlab.analysis.runs import (
    OVERRIDES_FILE,
    SUMMARY_FILE,
    differing_keys,
    is_run,
    load_runs,
)
from transferlab.analysis.tables import (
    DEFAULT_METRICS,
    TRAINABLE,
    default_metrics,
    write_tables,
)
from transferlab.errors import UserError
from transferlab.inference.output import writing

OPTIONS = ("metrics", "sort", "ascending", "x", "y", "out", "no_plot")


def flag_style(argv: Sequence[str]) -> list[str]:
    """`key=value` options (the entry points' style) -> argparse flags; folder arguments pass unchanged."""
    out: list[str] = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or arg.startswith("-") or key not in OPTIONS:
            out.append(arg)
        elif key == "metrics":
            out += ["--metrics", *value.strip("[]").split(",")]
        elif key in ("no_plot", "ascending"):
            on = value.lower() in ("true", "1", "yes")
            out.append(f"--{key.replace('_', '-')}" if on else ("--no-ascending" if key == "ascending" else ""))
        else:
            out += [f"--{key}", value]
    return [a for a in out if a]


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
    args = p.parse_args(flag_style(sys.argv[1:] if argv is None else argv))

    try:
        runs = load_runs(args.paths)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not runs:
        print(f"error: no run folders (with {SUMMARY_FILE} or {OVERRIDES_FILE}) under {' '.join(args.paths)}", file=sys.stderr)
        return 2
    known = sorted({k for r in runs for k, v in r.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    if args.sort and args.sort not in known and not any(args.sort in r.overrides for r in runs):
        print(f"error: sort={args.sort} is not a metric of these runs; valid: {', '.join(known)}", file=sys.stderr)
        return 2
    metrics = args.metrics or default_metrics(runs, [args.sort] if args.sort else [])
    one_parent = len(args.paths) == 1 and not is_run(Path(args.paths[0]))
    out = Path(args.out) if args.out else (Path(args.paths[0]) if one_parent else Path("."))
    try:
        with writing(out / "compare.*"):
            text, _ = write_tables(runs, out, "compare", metrics, args.sort, args.ascending)
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(text)
    written = [out / "compare.csv", out / "compare.md"]
    if not args.no_plot:
        y = args.y or args.sort or (metrics[0] if metrics else "test/acc")
        keys = differing_keys(runs)
        if args.x not in keys and not any(args.x in r.metrics for r in runs):
            print(f"error: --x {args.x}: neither an override that differs between runs ({keys}) nor a metrics.json key",
                  file=sys.stderr)
            return 2
        try:
            with writing(out / "compare.png"):
                png = plot(runs, keys, y, args.x, out / "compare.png")
        except UserError as e:  # the tables above are written; the old plot (if any) is left whole
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
        if png is not None:
            written.append(png)
    failed = sum(r.status != "ok" for r in runs)
    print(f"\n{len(runs)} runs ({failed} failed or incomplete); wrote {', '.join(str(w) for w in written)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
