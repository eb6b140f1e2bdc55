"""Shared plumbing of the generalization studies: launch CLI runs in parallel, read metrics.json,
aggregate over seeds, write tables and plots.

Every run is a real `python -m transferlab.train ...` command (the user's path), one thread each,
niced, skipped when its metrics.json already exists (an interrupted study resumes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transferlab.analysis.tables import markdown, write_csv

ROOT = Path(__file__).resolve().parents[1]

# `peft=linear_probe` as it was before experiments/probe_defaults chose its defaults (2026-12-07): a bare linear head
# and no method defaults, so the groups' own apply (the CLS token, the optimizer group's lr 3e-3 and the trainer
# group's 20 epochs; a pipeline stage's 1e-2 and 60). A study whose committed results used it gives these overrides
# (before its own keys), so a rerun configures the probe as its raw files were made; what the study types itself
# (`optimizer.lr`, `trainer.max_epochs`, `model.pool`) still wins. Deleting the defaults rather than typing the old
# values: a typed method default that nothing reads (the study sets `trainer.max_epochs`, the CNN has no pool) is refused.
PROBE_BEFORE_20261207 = ["peft.feature_norm=none", "~peft.optimizer", "~peft.trainer", "~peft.model"]
# both online probes of an SSL pretraining on (task=masked has them off by default; studies report them)
ONLINE_PROBES_ON = ["task.probe.linear.enabled=true", "task.probe.knn.enabled=true"]
# `task=masked` as it was before issue 21's recipe (session 12): 20 epochs, no augmentation, both online probes on
# (a 3-epoch run with these keys gave the same metrics to every digit as commit e1932d3's defaults)
MASKED_BEFORE_RECIPE = ["task.trainer.max_epochs=20", "task.augment.signal=null", *ONLINE_PROBES_ON]


@dataclass
class Job:
    """One run: its folder name, CLI overrides and descriptive tags (copied into the results rows)."""

    name: str
    overrides: list[str]
    tags: dict[str, Any] = field(default_factory=dict)


def downstream_trainer(k: int | None, per_class: int, steps: int, batch: int = 64) -> list[str]:
    """Trainer overrides for a fixed number of optimizer steps whatever the label budget
    (`k` labels per class of 5 classes, or `per_class` when k is None); validate ~4 times."""
    batches = math.ceil(5 * (k or per_class) / batch)
    epochs = math.ceil(steps / batches)
    return ["trainer.max_epochs=-1", f"trainer.max_steps={steps}", f"trainer.check_val_every_n_epoch={max(1, epochs // 4)}"]


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--workdir", default=None, help="run folders (default: outputs/studies/<study>)")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (one CPU thread each)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--report-only", action="store_true", help="only rebuild the table/plot from results.json")
    p.add_argument("--smoke", action="store_true", help="tiny runs (checks the script, not the science)")
    p.add_argument("--override", nargs="*", default=[], help="overrides added to every run, e.g. trainer=gpu")
    p.add_argument("--collect", action="store_true", help="run nothing new: tabulate the runs already finished in --workdir")
    p.add_argument("--inprocess", action="store_true",
                   help="run the jobs one after another inside this process (no interpreter start per run; ignores --jobs)")
    return p


def output_dir(here: Path) -> Path:
    """Where a study writes results, table and plot: its folder, or for `--smoke` runs a scratch folder
    (a smoke run checks the script; it must not overwrite the committed results)."""
    if "--smoke" not in sys.argv[1:]:
        return here
    out = ROOT / "outputs" / "studies" / here.name / "smoke_results"
    out.mkdir(parents=True, exist_ok=True)
    return out


def workdir(args: argparse.Namespace, study: str) -> Path:
    return Path(args.workdir) if args.workdir else ROOT / "outputs" / "studies" / study


def run_jobs(jobs: Sequence[Job], work: Path, parallel: int, extra: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Run every job (skipping finished ones); return {name: metrics} of those that succeeded.
    A failed run is reported with its log's path and the end of the log, and the study goes on."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p)
    # each run's share of the cores: transferlab's `threads: auto` sees one job per process (a study's
    # parallel runs are separate processes, not a Hydra sweep) and would take every core in each of them
    share = f"threads={max(1, len(os.sched_getaffinity(0)) // max(1, parallel))}"

    def one(job: Job) -> tuple[str, dict[str, Any] | None]:
        out = work / job.name
        metrics = out / "metrics.json"
        if not metrics.is_file():
            out.mkdir(parents=True, exist_ok=True)
            threads = [] if any(o.startswith("threads=") for o in [*job.overrides, *extra]) else [share]
            cmd = ["nice", "-n", "10", sys.executable, "-m", "transferlab.train", *job.overrides, *extra, *threads,
                   "trainer.enable_progress_bar=false", f"hydra.run.dir={out}"]
            with open(out / "study.log", "w") as log:
                log.write(" ".join(cmd) + "\n")
                log.flush()
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
            if rc != 0 or not metrics.is_file():
                tail = (out / "study.log").read_text().strip().splitlines()[-3:]
                print(f"  FAILED {job.name} (exit {rc}); {out / 'study.log'}:\n    " + "\n    ".join(tail), flush=True)
                return job.name, None
            print(f"  done {job.name}", flush=True)
        return job.name, json.loads(metrics.read_text())

    if parallel <= 0:
        return {name: m for name, m in map(lambda j: _in_process(j, work, extra), jobs) if m is not None}
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return {name: m for name, m in pool.map(one, jobs) if m is not None}


def run_stages(pre: Sequence[Job], down: Sequence[Job], work: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Pretraining jobs, then the downstream jobs that read their checkpoints (or only collect finished runs).

    A downstream override `...=PRETRAIN:<run>` names that pretraining run's folder under `work`.
    """
    for job in down:
        job.overrides = [o.replace("PRETRAIN:", f"{work}/") for o in job.overrides]
    if args.collect:
        return collect(list(pre) + list(down), work)
    parallel = 0 if args.inprocess else args.jobs
    results = run_jobs(pre, work, parallel, args.override)
    results.update(run_jobs(down, work, parallel, args.override))
    return results


def collect(jobs: Sequence[Job], work: Path) -> dict[str, dict[str, Any]]:
    """{name: metrics} of the jobs already finished in `work` (for a partial study)."""
    return {j.name: json.loads((work / j.name / "metrics.json").read_text()) for j in jobs if (work / j.name / "metrics.json").is_file()}


def compose_train(overrides: Sequence[str], out: Path):
    """The train config with `overrides`, writing into `out`, through Hydra's compose API (no run folder of Hydra's).
    The checks a CLI run makes on its command line run here on `overrides` (compose mode records none), so an
    in-process study refuses what the same study run with `--jobs` refuses."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from transferlab.config.validate import check_method_defaults_read, check_pipeline_root

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.output_dir={out}"])
    check_pipeline_root(cfg, list(overrides))
    check_method_defaults_read(cfg, list(overrides))
    return cfg


def train_once(overrides: Sequence[str], out: Path) -> dict[str, Any]:
    """One run in this process, skipped when `out/metrics.json` exists (a study resumes); its metrics."""
    from transferlab.runner.run import train

    if not (out / "metrics.json").is_file():
        train(compose_train([*overrides, "trainer.enable_progress_bar=false"], out))
    return json.loads((out / "metrics.json").read_text())


def _in_process(job: Job, work: Path, extra: Sequence[str]) -> tuple[str, dict[str, Any] | None]:
    """The same run through Hydra's compose API and run.train, in this process."""
    out = work / job.name
    metrics = out / "metrics.json"
    if not metrics.is_file():
        import traceback

        from transferlab.runner.run import train

        overrides = [*job.overrides, *extra, "trainer.enable_progress_bar=false"]
        cfg = compose_train(overrides, out)
        # what Hydra writes for a CLI run: `python -m transferlab.compare <workdir>` then groups study runs too
        (out / ".hydra").mkdir(parents=True, exist_ok=True)
        (out / ".hydra" / "overrides.yaml").write_text("".join(f"- {json.dumps(o)}\n" for o in overrides))
        try:
            train(cfg)
        except Exception:  # noqa: BLE001 - a failed run is reported and the study goes on
            print(f"  FAILED {job.name}:\n{traceback.format_exc()[-800:]}", flush=True)
            return job.name, None
        print(f"  done {job.name}", flush=True)
    return job.name, json.loads(metrics.read_text())


def rows_of(jobs: Sequence[Job], results: dict[str, dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One flat row per run: its tags plus the metrics.json keys asked for (prefix match with a trailing '*')."""
    rows = []
    for job in jobs:
        if job.name not in results:
            continue
        m = results[job.name]
        row = {"run": job.name, **job.tags}
        for k in keys:
            if k.endswith("*"):
                row.update({mk: mv for mk, mv in m.items() if mk.startswith(k[:-1]) and isinstance(mv, (int, float))})
            elif k in m:
                row[k] = m[k]
        rows.append(row)
    return rows


def save_rows(rows: list[dict[str, Any]], here: Path, meta: dict[str, Any], name: str = "results") -> None:
    """<name>.json (rows + how they were made) and <name>.csv (the same rows)."""
    (here / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str) + "\n")
    write_csv(here / f"{name}.csv", rows)


def save_study(here: Path, rows: list[dict[str, Any]], args: argparse.Namespace, seconds: float, steps: int,
               name: str = "results", **extra: Any) -> None:
    """save_rows with the metadata every study records: seeds, jobs, wall time, command."""
    save_rows(rows, here, name=name, meta={"seeds": args.seeds, "jobs": args.jobs, "wall_s": round(seconds, 1), "smoke": args.smoke, **extra,
                           "steps": 20 if args.smoke else steps, "command": " ".join(sys.argv), "override": args.override})


def write_table(here: Path, report) -> None:
    """Render the saved rows with the study's `report(rows, meta)` into table.md and print it."""
    rows, meta = load_rows(here)
    table = report(rows, meta)
    how = f"`python {meta['command']}`" if meta.get("command") else f"--jobs {meta['jobs']}"
    (here / "table.md").write_text(table + f"\n\nWall time: {meta['wall_s']} s of {how}. {meta.get('note', '')}\n")
    print(table)


def load_rows(here: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    data = json.loads((here / "results.json").read_text())
    return data["rows"], data["meta"]


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Print one result row and append it to a JSON-lines file (a study that runs piece by piece)."""
    print(json.dumps(row), flush=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every row of a JSON-lines file, in the order written."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def ci95(values: Sequence[float]) -> float:
    """Half-width of the 95 % t-interval of the mean (nan for one value)."""
    t = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}.get(len(values), 1.96)
    return t * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")


def fmt(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    m, s = mean_std(values)
    if m != m:
        return "-"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def group(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[tuple, list[dict[str, Any]]]:
    out: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out


def markdown_table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    """A header and rows of cells, through the package's one table writer."""
    return markdown([{h: str(c) for h, c in zip(header, row)} for row in body])


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
