"""A 4-job sweep run 2 jobs at a time (joblib) against 1 at a time: wall time and total CPU time.

Each configuration is one real `python -m transferlab.train -m seed=0,1,2,3 ...` command, started
in its own session; every process of that session (the launcher, joblib's workers, the jobs) is
sampled from /proc every 0.2 s and its last seen user+system CPU time summed (a process's last
<0.2 s can be missed). The configurations run interleaved, `--repeats` times:

- sequential: the basic launcher, one job after another (each job: threads=auto = every core);
- parallel: `hydra/launcher=parallel hydra.launcher.n_jobs=2` (threads=auto = cores / 2 per job);
- parallel_all_threads: the same with `threads=<cores>` (every job takes every core: the old behaviour).

Target (issue 19): parallel wall <= 0.65x sequential. Writes results/sweep_threads.json.

    python experiments/benchmarks/sweep_threads.py --repeats 3   # ~8 min on the idle machine
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, bootstrap_median_ci, load_averages, machine, median, write_results

# a default supervised job (20 epochs, ~12 s of training here): long enough that training, not the ~6 s import
# of torch and Lightning every joblib worker pays once, decides the wall time; the first version used
# 2-epoch jobs, where the import was half of each job and parallel could not win (RESULTS.md in git history)
JOB = ["task=supervised", "data=mnist1d", "model=cnn", "trainer.enable_progress_bar=false", "seed=0,1,2,3"]
CORES = len(os.sched_getaffinity(0))
CONFIGS = {
    "sequential": [],
    "parallel": ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"],
    "parallel_all_threads": ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2", f"threads={CORES}"],
}
TICK = os.sysconf("SC_CLK_TCK")


def session_cpu(sid: int) -> dict[tuple[int, int], float]:
    """CPU seconds (user+system) of every live process in session `sid`, keyed by (pid, start time)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state is fields[0]
        if int(fields[3]) == sid:  # field 6 of stat: session id
            out[(int(entry.name), int(fields[19]))] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def run_sweep(extra: list[str], sweep_dir: Path, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "HYDRA_FULL_ERROR": "1"}
    cmd = [sys.executable, "-m", "transferlab.train", "-m", *JOB, *extra, f"hydra.sweep.dir={sweep_dir}"]
    before = load_averages()
    t0 = time.perf_counter()
    log = sweep_dir.with_suffix(".log")
    sweep_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err:  # a file, not a pipe: a full pipe would stall the sweep
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    seen: dict[tuple[int, int], float] = {}
    wall = None
    try:
        while True:
            seen.update(session_cpu(proc.pid))
            if wall is None and proc.poll() is not None:
                wall = time.perf_counter() - t0
            if wall is not None and (not session_cpu(proc.pid) or time.perf_counter() - t0 - wall > 10):
                break  # the launcher and every worker it left have ended (or had 10 s to)
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"sweep over {timeout} s: {' '.join(cmd)}")
            time.sleep(0.2)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # nothing of this sweep outlives the measurement
        except ProcessLookupError:
            pass
        proc.wait()
    if proc.returncode:
        raise SystemExit(f"sweep failed ({proc.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    threads = []
    for job in sorted(p for p in sweep_dir.iterdir() if p.name.isdigit()):
        threads.append(json.loads((job / "metrics.json").read_text()).get("threads/torch"))
    return {"wall_s": wall, "cpu_s": sum(seen.values()), "processes": len(seen), "job_threads": threads,
            "load_before": before, "load_after": load_averages()}


def summarize(runs: dict[str, list[dict]]) -> dict:
    summary = {}
    for name, recs in runs.items():
        if name == "sequential" or not recs or not runs.get("sequential"):
            continue
        ratios = [r["wall_s"] / s["wall_s"] for r, s in zip(recs, runs["sequential"])]
        summary[name] = {"wall_ratio_median": median(ratios), "wall_ratios": ratios,
                         "ci95": list(bootstrap_median_ci(ratios)) if len(ratios) > 1 else None,
                         "cpu_ratio_median": median([r["cpu_s"] / s["cpu_s"] for r, s in zip(recs, runs["sequential"])])}
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    names = args.configs.split(",")
    started, load0, t0 = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), load_averages(), time.perf_counter()
    runs: dict[str, list[dict]] = {n: [] for n in names}
    command = "python experiments/benchmarks/sweep_threads.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="tl_sweep_threads_") as tmp:
        for i in range(args.repeats):
            for name in (names if i % 2 == 0 else names[::-1]):
                rec = run_sweep(CONFIGS[name], Path(tmp) / f"{name}_{i}", args.timeout)
                runs[name].append(rec)
                print(f"{name} #{i + 1}: wall {rec['wall_s']:.1f} s, cpu {rec['cpu_s']:.1f} s, job threads {rec['job_threads']} "
                      f"(load {rec['load_before'][0]}->{rec['load_after'][0]})", file=sys.stderr, flush=True)
                summary = summarize(runs)
                # written after every sweep, so an interrupted measurement keeps what it measured
                write_results("sweep_threads", {
                    "command": command, "machine": machine(), "started": started, "cores": CORES,
                    "wall_s": time.perf_counter() - t0, "load_start": load0, "load_end": load_averages(),
                    "job_overrides": JOB, "configs": {n: CONFIGS[n] for n in names if runs[n]}, "target": 0.65,
                    "runs": {n: r for n, r in runs.items() if r}, "summary": summary}, args.out)
    for name, s in summary.items():
        ci = f" (95% CI {s['ci95'][0]:.3f}-{s['ci95'][1]:.3f})" if s["ci95"] else f" ({len(s['wall_ratios'])} pair, no interval)"
        print(f"sweep {name} / sequential: wall ratio {s['wall_ratio_median']:.3f}{ci}, cpu ratio {s['cpu_ratio_median']:.3f}")


if __name__ == "__main__":
    main()
