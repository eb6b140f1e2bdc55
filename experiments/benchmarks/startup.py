"""Start-up: wall time from the command to the first training step, against `import torch, pytorch_lightning`.

Both sides are timed to the same event, a timestamp the process writes to a file, and both then
leave with `os._exit(0)`, so interpreter teardown (4-5 s of module finalizers here) counts for neither:
- floor: `python -c "import torch, pytorch_lightning; <write time>; os._exit(0)"` (a plain script's
  first step can start no earlier than its imports end)
- cli: `python -m transferlab.train` (the default run: task=transfer, first stage = pretraining),
  stopped at its first training step by a benchmark callback (steptimer.FirstStep)
Floor and cli run in interleaved pairs; the ratio is the median of the per-pair ratios with a 95 %
bootstrap interval (target: at most 1.3).
- breakdown: the same first stage built step by step in a fresh interpreter
  (imports, config, data, model, trainer, fit -> first step)
- imports: which heavy optional packages the default run has in sys.modules, and what
  `import pytorch_lightning` itself costs through torchmetrics (it imports `transformers` when installed)

    python experiments/benchmarks/startup.py [--repeats 5]   # ~12 min here under load 12 (3 repeats)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    ALLOWED,
    ROOT,
    bootstrap_median_ci,
    load_averages,
    machine,
    median,
    print_table,
    write_results,
)

HERE = Path(__file__).resolve().parent
WATCHED = ("peft", "transformers", "tokenizers", "wandb", "matplotlib", "tensorboard", "datasets", "optuna", "sklearn",
           "pandas", "scipy", "PIL", "rich", "tqdm")


def env(cache: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(HERE), e.get("PYTHONPATH", "")])
    e["TRANSFERLAB_CACHE"] = str(cache)
    e.setdefault("HF_HUB_OFFLINE", "1")
    e.setdefault("WANDB_MODE", "offline")
    return e


def run(cmd: list[str], e: dict[str, str]) -> None:
    proc = subprocess.run(cmd, env=e, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")


def timed(cmd: list[str], e: dict[str, str]) -> float:
    t0 = time.perf_counter()
    run(cmd, e)
    return time.perf_counter() - t0


FLOOR = ("import os, sys, time, torch, pytorch_lightning\n"
         "open(sys.argv[1], 'w').write(repr(time.time()))\n"
         "os._exit(0)")


def floor_first_step(e: dict[str, str], tmp: Path) -> float:
    marker = tmp / f"floor_{time.monotonic_ns()}"
    t0 = time.time()
    run([sys.executable, "-c", FLOOR, str(marker)], e)
    return float(marker.read_text()) - t0


def cli_first_step(e: dict[str, str], tmp: Path, extra: list[str]) -> float:
    marker = tmp / f"first_{time.monotonic_ns()}"
    e = {**e, "BENCH_FIRST_STEP_OUT": str(marker)}
    cmd = [sys.executable, "-m", "transferlab.train", f"hydra.run.dir={tmp / (marker.name + '_run')}", ALLOWED,
           "+callbacks.first_step._target_=steptimer.FirstStep", *extra]
    t0 = time.time()
    run(cmd, e)
    return float(marker.read_text()) - t0


def breakdown(e: dict[str, str], tmp: Path, extra: list[str]) -> dict:
    out = tmp / f"breakdown_{time.monotonic_ns()}.json"
    t0 = time.time()
    run([sys.executable, str(Path(__file__).resolve()), "--child", str(out), "--t0", repr(t0), "--extra", *extra], e)
    return json.loads(out.read_text())


def child(out: str, t0: float, extra: list[str]) -> None:
    """Build the default run's first stage the way run_stage does, timing each phase."""
    marks = {"interpreter": time.time()}
    import pytorch_lightning as pl
    import torch  # noqa: F401

    marks["import torch+lightning"] = time.time()
    floor_modules = set(sys.modules)
    from common import compose

    from transferlab.config.stages import stage_config
    from transferlab.config.validate import validate
    from transferlab.runner.build import (
        build_backbone,
        build_callbacks,
        build_datamodule,
        build_loggers,
        build_task,
        build_trainer,
    )
    from transferlab.runner.stage import run_stage  # noqa: F401  (what train() imports)

    marks["import hydra+transferlab"] = time.time()
    run_dir = Path(out).with_suffix("")
    cfg = compose(list(extra), run_dir)
    validate(cfg)
    if "stages" in cfg.task:
        cfg = stage_config(cfg, next(iter(cfg.task.stages)), run_dir)
    marks["config (compose+validate)"] = time.time()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    marks["data"] = time.time()
    backbone = build_backbone(cfg, dm.spec)
    task = build_task(cfg, backbone, dm.spec)
    marks["model+task"] = time.time()
    callbacks, loggers = build_callbacks(cfg), build_loggers(cfg)
    trainer = build_trainer(cfg, run_dir, callbacks, loggers)
    marks["trainer"] = time.time()

    class Stop(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            marks["fit -> first step"] = time.time()
            new = set(sys.modules) - floor_modules
            record = {"t0": t0, "marks": marks,
                      "present": sorted(m for m in WATCHED if m in sys.modules),
                      "new_after_floor": sorted({m.split(".")[0] for m in new} & set(WATCHED)),
                      "new_top_level": sorted({m.split(".")[0] for m in new})}
            Path(out).write_text(json.dumps(record))
            os._exit(0)

    trainer.callbacks.append(Stop())
    trainer.fit(task, datamodule=dm)


def import_costs(e: dict[str, str]) -> dict[str, float]:
    """Cumulative import time (s) of packages inside `import torch, pytorch_lightning` (python -X importtime)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import torch, pytorch_lightning"], env=e,
                          capture_output=True, text=True, check=True)
    costs: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)", line)
        if m and "." not in m.group(4):
            costs.setdefault(m.group(4), int(m.group(2)) / 1e6)
    keep = ("torch", "pytorch_lightning", "lightning_fabric", "torchmetrics", "transformers", "tokenizers", "matplotlib",
            "scipy", "rich", "numpy")
    return {k: costs[k] for k in keep if k in costs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="interleaved floor/cli pairs")
    p.add_argument("--breakdowns", type=int, default=3, help="phase-by-phase runs (one after each of the first pairs)")
    p.add_argument("--override", nargs="*", default=[], help="overrides of the measured run (default: none)")
    p.add_argument("--out", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--extra", nargs="*", default=[], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.t0, args.extra)
    load0, t_start, started = load_averages(), time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="tl_startup_") as tmpname:
        tmp = Path(tmpname)
        e = env(tmp / "cache")
        cold = cli_first_step(e, tmp, args.override)  # also generates the MNIST-1D cache
        floor, cli, parts, loads, exit_floor = [], [], [], [], []
        for i in range(args.repeats):  # interleaved (ABBA), so load drifts hit both alike
            before = load_averages()
            if i % 2 == 0:
                floor.append(floor_first_step(e, tmp))
                cli.append(cli_first_step(e, tmp, args.override))
            else:
                cli.append(cli_first_step(e, tmp, args.override))
                floor.append(floor_first_step(e, tmp))
            loads.append({"before": before, "after": load_averages()})
            if i < args.breakdowns:
                parts.append(breakdown(e, tmp, args.override))
        # for reference only (not the ratio): the same imports timed to process exit, teardown included
        exit_floor = [timed([sys.executable, "-c", "import torch, pytorch_lightning"], e)]
        costs = import_costs(e)
    phases: dict[str, list[float]] = {}
    for rec in parts:
        prev = rec["t0"]
        for name, t in rec["marks"].items():
            phases.setdefault(name, []).append(t - prev)
            prev = t
    ratios = [c / f for c, f in zip(cli, floor)]
    ratio, ci = median(ratios), bootstrap_median_ci(ratios)
    rows = [{"what": "floor: import torch, pytorch_lightning -> timestamp (no teardown)", "seconds": median(floor)},
            {"what": "python -m transferlab.train -> first step (warm data cache)", "seconds": median(cli)},
            {"what": "same, cold data cache (first run, MNIST-1D generated)", "seconds": cold},
            {"what": "floor timed to process exit (teardown included; reference only)", "seconds": median(exit_floor)},
            {"what": "ratio cli / floor (median of pairs)", "seconds": ratio}]
    rows += [{"what": f"breakdown: {k}", "seconds": median(v)} for k, v in phases.items()]
    rows += [{"what": f"import cost inside the floor: {k} (-X importtime, cumulative)", "seconds": v} for k, v in costs.items()]
    table = print_table(rows)
    print("heavy optional packages in sys.modules at the first step:", parts[-1]["present"])
    print("of those, imported by transferlab's run (not by torch/lightning):", parts[-1]["new_after_floor"])
    print(f"startup: ratio {ratio:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f})")
    write_results("startup", {"command": "python experiments/benchmarks/startup.py " + " ".join(sys.argv[1:]),
                              "machine": machine(), "started": started,
                              "wall_s": time.perf_counter() - t_start, "load_start": load0, "load_end": load_averages(),
                              "override": args.override, "floor_s": floor, "cli_s": cli, "pair_loads": loads,
                              "ratios": ratios, "ratio_median": ratio, "ci95": list(ci), "target": 1.3,
                              "exit_floor_s": exit_floor, "cold_s": cold, "phases_s": phases, "import_costs_s": costs,
                              "present_at_first_step": parts[-1]["present"], "imported_by_transferlab": parts[-1]["new_after_floor"],
                              "new_top_level_after_floor": parts[-1]["new_top_level"], "rows": rows, "table": table}, args.out)


if __name__ == "__main__":
    main()
