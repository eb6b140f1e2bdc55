"""DDP on 2 CPU processes (gloo): the same numbers as 1 process, written once, test set counted once;
inside a Hydra multirun; under torchrun on 2 loopback "nodes"; bf16-mixed; the launch helpers."""

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import proc_helpers
import pytest
from conftest import compose_cfg

# digits: 1295 train / 143 val / 359 test, all odd, so a padding sampler would show in the counts
DIGITS_TEST = 359
SMALL = ["task=finetune", "data=digits", "model=mlp", "model.hidden=64", "model.depth=2", "model.dropout=0.0",
         "trainer.enable_progress_bar=false", "trainer.max_epochs=2", "callbacks.step_stats=null"]
STEPS = 2 * 21
# global batch 64 either way: 2 processes x 32, or 1 process x 64
DDP = [*SMALL, "trainer=ddp_cpu", "data.batch_size=32"]


# Per-test budget of a DDP subprocess: generous, because on a loaded 2-core machine two ranks plus gloo
# start-up can take minutes; when it runs out the whole process group (every rank) is killed, none left behind.
DDP_BUDGET_S = float(os.environ.get("TRANSFERLAB_TEST_DDP_BUDGET_S", "600"))


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of every CLI run here: unbuffered output, one OpenMP thread a process."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


def cli(args: list[str], cwd: Path, timeout: float = DDP_BUDGET_S, module: tuple[str, ...] = ("-m", "transferlab.train")):
    proc = proc_helpers.run([sys.executable, *module, *args], cwd=cwd, env=cli_env(), timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def failed_sweep(tmp_path_factory):
    """A 3-job DDP multirun whose rank 1 diverges in job 0 and rank 0 in job 1 (see the test that reads it).

    Started before `sweep` and left running alongside it: a DDP job is mostly two imports one after the
    other (rank 0, then the rank it launches) with one core idle, so the two sweeps overlap well.
    """
    cwd = tmp_path_factory.mktemp("ddp_failed")
    env = cli_env(PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    args = [sys.executable, "-m", "transferlab.train", "-m", *DDP, "trainer.max_epochs=1",
            "allowed_targets=[transferlab.,torch.optim.,pytorch_lightning.,fault_helpers.]",
            "+callbacks.poison._target_=fault_helpers.PoisonWeights", "+callbacks.poison.at_step=3",
            "+callbacks.poison.rank=1,0,-1", f"hydra.sweep.dir={cwd / 'sweep'}"]
    with proc_helpers.in_background(args, cwd, cwd=cwd, env=env) as finish:
        yield cwd / "sweep", finish


@pytest.fixture(scope="module")
def contrastive_sweep(tmp_path_factory):
    """SimCLR under DDP with and without gathered negatives (2 jobs), started by `sweep` like `failed_sweep`."""
    cwd = tmp_path_factory.mktemp("ddp_contrastive")
    args = [sys.executable, "-m", "transferlab.train", "-m", "task=contrastive", "model=mlp", "model.hidden=64",
            "trainer=ddp_cpu", "data.batch_size=32", "trainer.enable_progress_bar=false", "trainer.max_epochs=1",
            "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
            "trainer.log_every_n_steps=1", "callbacks.step_stats=null", "task.gather_negatives=true,false",
            f"hydra.sweep.dir={cwd / 'sweep'}"]
    with proc_helpers.in_background(args, cwd, cwd=cwd, env=cli_env()) as finish:
        yield cwd / "sweep", finish


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, failed_sweep, contrastive_sweep) -> Path:
    """A 3-job multirun (linear probe, full, LoRA) from the command line, each job DDP on 2 processes (Lightning launches the second)."""
    cwd = tmp_path_factory.mktemp("ddp")
    cli(["-m", *DDP, "peft=linear_probe,full,lora", f"hydra.sweep.dir={cwd / 'sweep'}"], cwd)
    return cwd


@pytest.mark.slow
def test_ddp_inside_multirun_one_folder_per_job(sweep):
    """Each job's child re-runs that job only, in its folder; frozen params need no unused-parameter search."""
    assert sorted(p.name for p in sweep.iterdir()) == ["sweep"]  # no outputs/ from a child re-running the sweep
    jobs = sorted(p for p in (sweep / "sweep").iterdir() if p.is_dir())
    assert [j.name for j in jobs] == ["0", "1", "2"]
    for job, peft in zip(jobs, ["linear_probe", "full", "lora"]):
        m = metrics(job)
        assert m["peft"] == peft and m["steps"] == STEPS and m["test/samples"] == DIGITS_TEST
        # written once, by rank 0, into the job's folder; rank 1 ran this job there too (its own log file)
        assert (job / "checkpoints" / "last.ckpt").is_file() and (job / "checkpoints" / "best.ckpt").is_file()
        assert (job / "train_ddp_process_1.log").is_file()
        assert not [p for p in job.iterdir() if p.is_dir() and p.name not in ("checkpoints", "csv", ".hydra")]
    assert metrics(jobs[0])["params/trainable"] < metrics(jobs[2])["params/trainable"] < metrics(jobs[1])["params/trainable"]
    assert metrics(jobs[2])["params/adapter"] > 0  # LoRA under DDP: frozen base weights, no unused-parameter error


@pytest.mark.slow
def test_ddp_matches_one_process_with_the_same_global_batch(sweep, tmp_path):
    from transferlab.runner.stage import run_stage

    ddp = metrics(sweep / "sweep" / "1")
    single = run_stage(compose_cfg([*SMALL, "peft=full", "trainer=cpu", "data.batch_size=64"], tmp_path), tmp_path)
    assert ddp["steps"] == single["steps"] == STEPS  # 1295 samples: 21 steps of 64 = 21 of 2 x 32 (padded to 1296)
    assert ddp["val/loss"] == pytest.approx(single["val/loss"], abs=0.05)
    assert ddp["test/acc"] == pytest.approx(single["test/acc"], abs=0.04)
    # every test sample once: torchmetrics counts summed over both ranks = the test split's size
    assert ddp["test/samples"] == single["test/samples"] == DIGITS_TEST


@pytest.mark.slow
def test_a_failed_ddp_job_does_not_end_the_sweep(failed_sweep):
    """Rank 1 diverges in job 0, rank 0 in job 1: both recorded as failed, job 2 runs, no rank left behind.

    (Lightning's own child watcher SIGKILLs the whole process when any child exits non-zero, even
    a job later; a failure in rank 0 left its child waiting in a collective.)
    """
    sweep, finish = failed_sweep
    proc = finish(DDP_BUDGET_S)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "error: 2 of 3 sweep jobs failed" in proc.stderr
    first, second = (json.loads((sweep / job / "error.json").read_text()) for job in ("0", "1"))
    assert first["reason"] == "rank_failed" and "\n" not in first["error"]
    assert first["error"].startswith("RankFailed: DDP rank 1 of 2 exited with code 2: training diverged")
    assert "non-finite training loss (nan) at step 3" in first["error"] and "train_ddp_process_1.log" in first["error"]
    assert second["reason"] == "diverged" and "at step 3" in second["error"]
    last = metrics(sweep / "2")
    assert last["steps"] == 21 and last["test/samples"] == DIGITS_TEST
    summary = (sweep / "summary.csv").read_text().splitlines()
    assert [row.split(",")[1] for row in summary[1:]] == ["failed", "failed", "ok"]
    leftovers = [p for p in Path("/proc").glob("[0-9]*") if _cmdline(p).count(str(sweep))]
    assert not leftovers, [_cmdline(p) for p in leftovers]


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_nodes_on_loopback_matches_local_ddp(sweep, tmp_path):
    """torchrun --nnodes=2 --nproc_per_node=1: the same numbers as Lightning's 2 local processes."""
    port, run = free_port(), tmp_path / "run"
    env = cli_env()
    with contextlib.ExitStack() as stack:
        nodes = [stack.enter_context(proc_helpers.started(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
             f"--node_rank={rank}", "--master_addr=127.0.0.1", f"--master_port={port}",
             "-m", "transferlab.train", *DDP, "peft=full", "trainer.devices=1", "trainer.num_nodes=2",
             f"hydra.run.dir={run}"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)) for rank in (0, 1)]
        outputs = [n.communicate(timeout=DDP_BUDGET_S)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    local, elastic = metrics(sweep / "sweep" / "1"), metrics(run)
    for key in ("steps", "val/loss", "test/acc", "test/loss", "test/samples"):
        assert elastic[key] == pytest.approx(local[key], rel=1e-5), key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.slow
def test_bf16_mixed_one_tiny_step(tmp_path):
    from transferlab.runner.stage import run_stage

    cfg = compose_cfg([*SMALL, "peft=full", "trainer=cpu", "trainer.precision=bf16-mixed", "trainer.max_epochs=1",
                       "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                       "data.eval_batch_size=64"], tmp_path)
    summary = run_stage(cfg, tmp_path)
    assert summary["steps"] == 1 and summary["test/samples"] == 64
    assert 0.0 < summary["test/loss"] < 10.0
    assert (tmp_path / "metrics.json").is_file()


@pytest.mark.slow
def test_contrastive_under_ddp_takes_negatives_from_every_rank(contrastive_sweep):
    """SimCLR under DDP: 2 x 32 examples gathered give each view 126 negatives (loss ~ log 127), not 62 (~ log 63)."""
    import csv

    sweep, finish = contrastive_sweep
    proc = finish(DDP_BUDGET_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first = []
    for job in ("0", "1"):
        rows = list(csv.DictReader((sweep / job / "csv" / "metrics.csv").open()))
        first.append(float(next(r["train/loss_step"] for r in rows if r["step"] == "0" and r["train/loss_step"])))
        assert metrics(sweep / job)["steps"] == 2
    gathered, local = first  # the same weights and views at step 0: only the number of negatives differs
    assert gathered - local > 0.4, first
