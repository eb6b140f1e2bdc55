"""Hydra multirun through the real CLI: grid sweeps, failures, joblib, Optuna on submitit_local, summaries."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import proc_helpers
import pytest
import yaml
from conftest import CONF, ROOT
from wandb_helpers import read_offline_run

TINY = [
    "trainer.enable_progress_bar=false",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]
FAKE_KEY = "tlsecret-0123456789abcdef0123456789abcdef"


def _cli(args: list[str], env: dict | None) -> tuple[list[str], dict]:
    """The command line and environment of a `transferlab.train` run from the repository root."""
    base = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the jobs' thread share is under test
    return [sys.executable, "-m", "transferlab.train", *args], {**base, "HYDRA_FULL_ERROR": "0", **(env or {})}


def run_cli(args: list[str], env: dict | None = None, timeout: int = 400) -> subprocess.CompletedProcess:
    command, full_env = _cli(args, env)
    return proc_helpers.run(command, cwd=ROOT, env=full_env, timeout=timeout)


def start_cli(args: list[str], folder: Path, env: dict | None = None):
    """`run_cli` started in the background (`proc_helpers.in_background`: output in `folder`); yields `finish(timeout)`."""
    command, full_env = _cli(args, env)
    return proc_helpers.in_background(command, folder, cwd=ROOT, env=full_env)


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def files_containing(folder: Path, needle: str) -> list[Path]:
    hits = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and needle.encode() in path.read_bytes():
            hits.append(path)
    return hits


@pytest.fixture(scope="module")
def optuna_sweep(tmp_path_factory):
    """3 Optuna trials as submitit jobs, lr drawn from {1e-3, 1e30}: started by the grid test, which runs
    alongside it (each sweep is mostly imports, one after another with a core idle), read by the Optuna test."""
    sweep = tmp_path_factory.mktemp("optuna") / "sweep"
    with start_cli(["hparams_search=optuna", "task=supervised", "optimizer.lr=choice(0.001,1e30)",
                    "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=3", "hydra/launcher=submitit_local",
                    *TINY, f"hydra.sweep.dir={sweep}"], sweep.parent / "log") as finish:
        yield sweep, finish


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory):
    """joblib (2 processes): lr {1e-3, 1e30} x devices {1, 99}; started by the grid test like `optuna_sweep`."""
    sweep = tmp_path_factory.mktemp("joblib") / "sweep"
    with start_cli(["-m", "task=supervised", "optimizer.lr=1e-3,1e30", "trainer.devices=1,99", *TINY,
                    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"], sweep.parent / "log") as finish:
        yield sweep, finish


@pytest.mark.slow
def test_grid_multirun_end_to_end(tmp_path, optuna_sweep, joblib_sweep):
    """2x2 sweep (peft x seed) with csv + tensorboard + W&B: four run folders, the summary, compare, one W&B group."""
    from transferlab.compare import main as compare_main

    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", "task=finetune", "peft=full,linear_probe", "seed=0,1", "data.labels_per_class=5",
                    "logger=many", *TINY, f"hydra.sweep.dir={sweep}"],
                   env={"WANDB_MODE": "offline", "WANDB_API_KEY": FAKE_KEY})
    assert proc.returncode == 0, proc.stderr[-3000:]

    jobs = {}
    for num in range(4):
        job = sweep / str(num)
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        jobs[num] = (overrides, json.loads((job / "metrics.json").read_text()))
    pairs = {(m["peft"], m["seed"]) for _, m in jobs.values()}
    # one job at a time (basic launcher): every job may use every core
    assert {m["threads/torch"] for _, m in jobs.values()} == {len(os.sched_getaffinity(0))}
    assert pairs == {("full", 0), ("full", 1), ("linear_probe", 0), ("linear_probe", 1)}
    for overrides, m in jobs.values():
        assert f"peft={m['peft']}" in overrides and f"seed={m['seed']}" in overrides
        assert m["task"] == "finetune" and 1 <= m["steps"] <= 2  # limit_train_batches=2

    # the sweep's own table: every job, the swept keys as columns, seed means
    rows = read_csv(sweep / "summary.csv")
    assert [r["run"] for r in rows] == ["0", "1", "2", "3"] and {r["status"] for r in rows} == {"ok"}
    for r in rows:
        assert float(r["test/acc"]) == pytest.approx(jobs[int(r["run"])][1]["test/acc"])
        assert r["peft"] == jobs[int(r["run"])][1]["peft"]
    assert "| peft | seed |" in (sweep / "summary.md").read_text().replace("| run | status ", "")
    assert not (sweep / "metrics.json").exists()

    # compare: sorted table, mean ± std over seeds, a plot
    assert compare_main([str(sweep), "--sort", "test/acc"]) == 0
    table = read_csv(sweep / "compare.csv")
    accs = [float(r["test/acc"]) for r in table]
    assert accs == sorted(accs, reverse=True) and len(table) == 4
    seeds = {r["peft"]: r for r in read_csv(sweep / "compare_seeds.csv")}
    for peft, r in seeds.items():
        values = [m["test/acc"] for _, m in jobs.values() if m["peft"] == peft]
        assert int(r["n"]) == 2 and float(r["test/acc_mean"]) == pytest.approx(sum(values) / 2)
    assert float(seeds["linear_probe"]["trainable_pct_mean"]) < float(seeds["full"]["trainable_pct_mean"]) == 100.0
    assert (sweep / "compare.png").stat().st_size > 1000
    assert "±" in (sweep / "compare.md").read_text()

    # W&B: one group for the whole sweep, name = the overrides that differ, job_type = the task, the summary
    group = json.loads((sweep / "sweep.json").read_text())["group"]
    for num in (0, 3):
        rec = read_offline_run(sweep / str(num))
        overrides, m = jobs[num]
        assert rec["run"]["run_group"] == group
        assert rec["run"]["display_name"] == f"peft={m['peft']} seed={m['seed']}"
        assert rec["run"]["job_type"] == "finetune"
        assert rec["config"]["peft"]["name"] == m["peft"] and rec["config"]["data"]["labels_per_class"] == 5
        assert rec["summary"]["test/acc"] == pytest.approx(m["test/acc"])
        assert rec["summary"]["params/trainable_pct"] == pytest.approx(m["params/trainable_pct"])
    assert list((sweep / "2" / "tensorboard").glob("events.out.tfevents.*"))
    # the API key never lands in a saved config, log or W&B file
    assert files_containing(sweep, FAKE_KEY) == []


@pytest.mark.slow
def test_failing_jobs_are_recorded_and_the_sweep_exits_nonzero(joblib_sweep):
    """joblib (2 processes): a config error and a NaN divergence are recorded; the healthy job finishes."""
    sweep, finish = joblib_sweep
    proc = finish(400)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "3 of 4 sweep jobs failed" in proc.stderr

    rows = {r["run"]: r for r in read_csv(sweep / "summary.csv")}
    assert rows["0"]["status"] == "ok" and (sweep / "0" / "metrics.json").is_file()
    # two jobs at once: each trains with half the cores' threads (distributed/threads.py)
    cores = len(os.sched_getaffinity(0))
    assert json.loads((sweep / "0" / "metrics.json").read_text())["threads/torch"] == max(1, cores // 2)
    assert float(rows["0"]["test/acc"]) == pytest.approx(json.loads((sweep / "0" / "metrics.json").read_text())["test/acc"])
    for num in ("1", "3"):
        assert rows[num]["status"] == "failed" and rows[num]["reason"] == "user_error"
        assert "trainer.devices" in rows[num]["error"]
        assert "trainer.devices=99" in rows[num]["overrides"]
    assert rows["2"]["reason"] == "diverged" and "non-finite" in rows["2"]["error"]
    error = json.loads((sweep / "2" / "error.json").read_text())
    assert error["reason"] == "diverged" and "optimizer.lr=1e+30" in error["overrides"]
    assert not (sweep / "2" / "metrics.json").exists()
    assert "failed" in (sweep / "summary.md").read_text()


@pytest.mark.slow
def test_optuna_on_submitit_local_survives_a_diverged_trial(optuna_sweep):
    """3 Optuna trials as submitit jobs; the diverged trials count as the worst value, the study finishes."""
    sweep, finish = optuna_sweep
    proc = finish(400)
    rows = read_csv(sweep / "summary.csv")
    assert len(rows) == 3 and (sweep / ".submitit").is_dir()
    diverged = [r for r in rows if float(r["optimizer.lr"]) > 1]
    healthy = [r for r in rows if float(r["optimizer.lr"]) < 1]
    assert diverged and healthy, rows  # the seeded sampler draws both values
    assert all(r["status"] == "failed" and r["reason"] == "diverged" for r in diverged)
    assert all(r["status"] == "ok" for r in healthy)
    assert proc.returncode == 1 and f"{len(diverged)} of 3 sweep jobs failed" in proc.stderr

    # the study ran to its end: a trial that raised would have made the sweeper abort (max_failure_rate: 0.0)
    # before writing optimization_results.yaml and before the summary callback's final line above
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["best_params"]["optimizer.lr"] == pytest.approx(1e-3)
    assert result["best_value"] == pytest.approx(max(float(r["val/acc"]) for r in healthy))


def test_two_runs_in_the_same_second_get_different_folders():
    """Run and sweep folders carry microseconds, so two runs started in one second never share a folder."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    dirs = []
    for _ in range(2):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="train", return_hydra_config=True)
            dirs.append((str(cfg.hydra.run.dir), str(cfg.hydra.sweep.dir)))
    (run_a, sweep_a), (run_b, sweep_b) = dirs
    assert run_a != run_b and sweep_a != sweep_b
    assert run_a.rsplit("/", 1)[0] == run_b.rsplit("/", 1)[0]  # same day folder
    assert len(run_a.rsplit("-", 1)[-1]) == 6  # ...HH-MM-SS-<microseconds>
    GlobalHydra.instance().clear()


def test_sweep_configs_compose():
    """hparams_search=optuna implies multirun with the Optuna sweeper; launcher configs exist for joblib/SLURM."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hparams_search=optuna"], return_hydra_config=True)
        assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
        assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.direction == "maximize"
        assert cfg.optimized_metric == "val/acc" and "optimizer.lr" in cfg.hydra.sweeper.params
        slurm = compose(config_name="train", overrides=["hydra/launcher=slurm", "trainer.devices=2"], return_hydra_config=True)
        assert slurm.hydra.launcher._target_.endswith("SlurmLauncher") and slurm.hydra.launcher.tasks_per_node == 2
        par = compose(config_name="train", overrides=["hydra/launcher=parallel"], return_hydra_config=True)
        assert par.hydra.launcher._target_.endswith("JoblibLauncher") and par.hydra.launcher.n_jobs == 2
        assert any(cb._target_ == "transferlab.sweeps.summary.SweepSummary" for cb in cfg.hydra.callbacks.values())
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("direction,worst", [("maximize", float("-inf")), ("minimize", float("inf"))])
def test_failed_job_returns_the_worst_value_for_the_direction(tmp_path, direction, worst):
    """In-process: what an Optuna trial sees for a diverged job, a job without its metric, and a good job."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from transferlab.errors import TrainingDiverged
    from transferlab.sweeps.job import sweep_job

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hparams_search=optuna", f"hydra.sweeper.direction={direction}",
                                                      "seed=3"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
        cfg.hydra.job.num = 7
        cfg.hydra.overrides.task = ["seed=3"]
    HydraConfig.instance().set_config(cfg)
    try:
        def diverges(_):
            raise TrainingDiverged("non-finite training loss (nan) at step 1")

        assert sweep_job(diverges)(cfg) == worst
        error = json.loads((tmp_path / "error.json").read_text())
        assert error["reason"] == "diverged" and error["overrides"] == ["seed=3"] and "nan" in error["error"]

        (tmp_path / "error.json").unlink()
        assert sweep_job(lambda _: None)(cfg) == worst  # optimized_metric missing from metrics.json
        assert json.loads((tmp_path / "error.json").read_text())["reason"] == "metric"

        assert (tmp_path / "error.json").is_file()  # a rerun that succeeds supersedes the earlier failure
        assert sweep_job(lambda _: 0.5)(cfg) == 0.5 and not (tmp_path / "error.json").exists()
        (tmp_path / "metrics.json").write_text('{"test/acc": 0.5}')
        from transferlab.analysis.runs import load_runs

        assert [r.status for r in load_runs([tmp_path])] == ["ok"]
    finally:
        HydraConfig.instance().cfg = None
    with pytest.raises(TrainingDiverged):  # a single run keeps its error (one line + exit code from the CLI)
        sweep_job(diverges)(cfg)
