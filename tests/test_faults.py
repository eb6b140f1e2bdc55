"""Faults: SIGKILL/SIGTERM and resume=auto give the uninterrupted run's exact metrics; NaN stops cleanly;
checkpoints are atomic; secrets never reach what a run writes."""

import csv
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import proc_helpers
import pytest
import torch
from conftest import ROOT, compose_cfg

SECRET = "wandb-test-secret-0123456789abcdef"
STEPS_PER_EPOCH, EPOCHS, EVERY = 8, 3, 3
RUN = [
    "task=supervised", "data=digits", "model=cnn", "trainer.enable_progress_bar=false",
    f"trainer.max_epochs={EPOCHS}", f"trainer.limit_train_batches={STEPS_PER_EPOCH}", "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2", "trainer.log_every_n_steps=2", f"callbacks.fault_tolerance.every_n_train_steps={EVERY}",
    "allowed_targets=[transferlab.,torch.optim.,pytorch_lightning.,fault_helpers.]",
    "+callbacks.pace._target_=fault_helpers.Pace",
]


def _overrides(folder: Path, pace: float = 0.0) -> list[str]:
    return RUN + [f"+callbacks.pace.progress_file={folder / 'progress'}", f"+callbacks.pace.seconds={pace}"]


def _start(folder: Path, *extra: str, pace: float = 0.1) -> subprocess.Popen:
    """The CLI run in its own process group; `pace` seconds a step give a test time to kill it mid-epoch."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src")]), "WANDB_API_KEY": SECRET}
    args = [sys.executable, "-m", "transferlab.train", *_overrides(folder, pace=pace), f"hydra.run.dir={folder}", *extra]
    log = open(folder.parent / f"{folder.name}.log", "w")  # a file, not a pipe: a full pipe would stall the run
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_step(proc: subprocess.Popen, folder: Path, step: int, timeout: float = 240) -> int:
    progress, deadline = folder / "progress", time.monotonic() + timeout
    while time.monotonic() < deadline:
        if progress.is_file() and progress.read_text().strip() and int(progress.read_text()) >= step:
            return int(progress.read_text())
        if proc.poll() is not None:
            raise AssertionError(f"run ended before step {step}:\n{(folder.parent / f'{folder.name}.log').read_text()[-3000:]}")
        time.sleep(0.02)
    proc_helpers.kill_group(proc.pid)
    raise AssertionError(f"step {step} not reached in {timeout}s (process group killed)")


def _ckpt(folder: Path) -> dict:
    return torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _in_process(folder: Path, *extra: str) -> dict:
    from transferlab.analysis.runs import read_summary
    from transferlab.runner.run import train

    train(compose_cfg(_overrides(folder) + list(extra), folder))
    return read_summary(folder)


@pytest.mark.slow
def test_sigkill_then_sigterm_then_resume_matches_uninterrupted(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    rnd = random.Random()
    kill_at = rnd.randint(EVERY + 1, STEPS_PER_EPOCH - 1)  # after the first mid-epoch checkpoint, in epoch 0
    term_at = rnd.randint(STEPS_PER_EPOCH + 1, 2 * STEPS_PER_EPOCH - 2)  # mid epoch 1
    run = tmp_path / "interrupted"

    # 1. SIGKILL mid-epoch: only the last checkpoint survives, written mid-epoch
    proc = _start(run)
    _wait_for_step(proc, run, kill_at)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc_helpers.assert_no_group_left(proc.pid)
    saved = _ckpt(run)
    assert saved["global_step"] % EVERY == 0 and saved["global_step"] % STEPS_PER_EPOCH != 0, (kill_at, saved["global_step"])
    assert saved["global_step"] <= kill_at
    run_id = (run / "wandb_id").read_text()

    # 2. resume=auto, then SIGTERM (preemption; in-process, Lightning's own handler): a checkpoint at that step
    from transferlab.errors import Preempted

    with pytest.raises(Preempted) as err:
        _in_process(run, "resume=auto", "+callbacks.term._target_=fault_helpers.SendSignal", f"+callbacks.term.at_step={term_at}")
    assert err.value.exit_code == 143 and "\n" not in str(err.value)
    assert f"SIGTERM at step {term_at}:" in str(err.value) and "rerun with resume=auto" in str(err.value)
    assert _ckpt(run)["global_step"] == term_at

    # 3. resume=auto to the end, in-process; and the uninterrupted reference
    resumed = _in_process(run, "resume=auto")
    reference = _in_process(tmp_path / "reference")
    for key in ("test/acc", "test/loss", "test/f1", "test/ece", "val/acc", "val/loss", "steps", "epochs"):
        assert resumed[key] == reference[key], (key, resumed[key], reference[key], kill_at, term_at)
    assert resumed["steps"] == EPOCHS * STEPS_PER_EPOCH
    # time/* cover the resumed process only, and say from which step
    assert (resumed["time/from_step"], reference["time/from_step"]) == (term_at, 0)
    assert (resumed["time/train_steps"], reference["time/train_steps"]) == (EPOCHS * STEPS_PER_EPOCH - term_at, resumed["steps"])

    # every step after a resume saw the batch and the random state the uninterrupted run saw
    def trace(folder):
        return {int(line.split()[0]): line for line in (folder / "progress.trace").read_text().splitlines()}

    assert trace(run) == trace(tmp_path / "reference")
    # the tracker run continues (same id), the CSV log spans the whole run
    assert (run / "wandb_id").read_text() == run_id
    def losses(folder):
        with open(folder / "csv" / "metrics.csv") as f:
            return sorted((int(r["step"]), r["train/loss_step"]) for r in csv.DictReader(f) if r.get("train/loss_step"))

    logged, expected = losses(run), losses(tmp_path / "reference")
    assert len({step for step, _ in logged}) == len(logged)  # no step logged twice
    assert set(logged) <= set(expected)  # the same values at the same steps
    # at most the row of the batch a SIGKILLed checkpoint was taken at is missing (it is logged after the save)
    assert len(logged) >= len(expected) - 1 and logged[0][0] < saved["global_step"]

    # the secret given through the environment is nowhere in what the runs wrote
    leaks = [p for p in run.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaks


def test_secrets_redacted_from_saved_config_and_checkpoint(tmp_path, monkeypatch):
    from transferlab.runner.stage import run_stage
    from transferlab.tracking.redact import redact_files

    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    hydra_dir = tmp_path / ".hydra"
    hydra_dir.mkdir()
    (hydra_dir / "overrides.yaml").write_text(f"- logger.wandb.api_key={SECRET}\n- +hf_token=abcdefgh\n- seed=1\n")
    (hydra_dir / "config.yaml").write_text(f"note: uses {SECRET}\nwandb:\n  api_key: literal-key\n  project: p\n")
    assert len(redact_files(tmp_path)) == 2
    text = (hydra_dir / "overrides.yaml").read_text() + (hydra_dir / "config.yaml").read_text()
    assert SECRET not in text and "literal-key" not in text and "abcdefgh" not in text
    assert "seed=1" in text and "project: p" in text

    cfg = compose_cfg(["task=supervised", "data=digits", "model=mlp", "trainer.enable_progress_bar=false",
                       "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                       "trainer.limit_test_batches=1", "+extra.api_key=${oc.env:WANDB_API_KEY}",
                       "+extra.note=key is ${oc.env:WANDB_API_KEY}"], tmp_path)
    run_stage(cfg, tmp_path)
    stored = _ckpt(tmp_path)["hyper_parameters"]["config"]
    assert stored["extra"] == {"api_key": "***", "note": "key is ***"}
    written = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not written


@pytest.mark.slow
def test_ddp_sigkill_then_resume_matches_uninterrupted(tmp_path):
    """DDP on 2 processes: every rank resumes at its own position in its shard with its own RNG state."""
    ddp = ["trainer=ddp_cpu", "data.batch_size=32"]
    kill_at = random.Random().randint(EVERY + 1, STEPS_PER_EPOCH - 1)
    run, reference = tmp_path / "interrupted", tmp_path / "reference"
    reference.mkdir()
    # the uninterrupted reference depends on nothing: it runs alongside the interrupted run (a DDP launch is
    # mostly two imports one after the other, one core idle), which saves one launch's wall time
    background = _start(reference, *ddp, pace=0.0)
    try:
        proc = _start(run, *ddp)
        _wait_for_step(proc, run, kill_at)
        os.killpg(proc.pid, signal.SIGKILL)  # rank 0 and the rank it started
        proc.wait()
        proc_helpers.kill_group(proc.pid)
        proc_helpers.assert_no_group_left(proc.pid)
        saved = _ckpt(run)["global_step"]
        assert 0 < saved <= kill_at and saved % EVERY == 0
        for folder, proc in ((run, _start(run, *ddp, "resume=auto", pace=0.0)), (reference, background)):
            try:
                code = proc.wait(timeout=600)  # budget on a loaded 2-core machine; the group is killed either way
            finally:
                proc_helpers.kill_group(proc.pid)
            assert code == 0, (folder.parent / f"{folder.name}.log").read_text()[-3000:]
            proc_helpers.assert_no_group_left(proc.pid)
    finally:
        proc_helpers.kill_group(background.pid)
    from transferlab.analysis.runs import read_summary

    resumed, expected = read_summary(run), read_summary(reference)
    for key in ("test/acc", "test/loss", "val/acc", "val/loss", "steps", "test/samples"):
        assert resumed[key] == expected[key], (key, resumed[key], expected[key], kill_at)

    def trace(path):
        return {int(line.split()[0]): line for line in path.read_text().splitlines()}

    for name in ("progress.trace", "progress.rank1.trace"):  # each rank's batches and RNG state, step by step
        assert trace(run / name) == trace(reference / name), name
    ranks = [trace(reference / name) for name in ("progress.trace", "progress.rank1.trace")]
    assert all(ranks[0][step].split()[2] != ranks[1][step].split()[2] for step in ranks[0])  # disjoint shards


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path):
    from transferlab.errors import TrainingDiverged, UserError
    from transferlab.runner.run import train

    cfg = compose_cfg(["task=supervised", "data=digits", "model=mlp", "trainer.enable_progress_bar=false",
                       "trainer.max_epochs=2", "trainer.limit_train_batches=6", "trainer.limit_val_batches=1",
                       "callbacks.fault_tolerance.every_n_train_steps=2",
                       "allowed_targets=[transferlab.,torch.optim.,pytorch_lightning.,fault_helpers.]",
                       "+callbacks.poison._target_=fault_helpers.PoisonWeights", "+callbacks.poison.at_step=5"], tmp_path)
    with pytest.raises(TrainingDiverged) as err:
        train(cfg)
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    assert "non-finite training loss (nan) at step 5" in str(err.value)
    saved = _ckpt(tmp_path)
    assert saved["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())


def test_nan_guard_is_task_independent():
    """The callback stops any task before its backward pass (self-supervised tasks included)."""
    from transferlab.callbacks.fault_tolerance import FaultTolerance

    class T:
        global_step, current_epoch = 7, 1

    guard = FaultTolerance()
    guard.on_before_backward(T(), None, torch.tensor(1.5))
    for bad in (torch.tensor(math.nan), torch.tensor(math.inf), torch.tensor([1.0, -math.inf])):
        with pytest.raises(FloatingPointError, match="at step 7, epoch 1"):
            guard.on_before_backward(T(), None, bad)
    FaultTolerance(check_finite=False).on_before_backward(T(), None, torch.tensor(math.nan))


def test_checkpoint_write_is_atomic(tmp_path):
    """A save that dies half-way leaves the previous checkpoint whole and no stray file."""
    from transferlab.callbacks.fault_tolerance import AtomicCheckpointIO
    from transferlab.utils.checkpoint import load_checkpoint

    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"backbone.w": torch.ones(3)}, "global_step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"state_dict": {"backbone.w": torch.zeros(1000)}, "x": Unpicklable()}, path)
    assert load_checkpoint(path)["global_step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_rng_state_round_trips_through_weights_only_checkpoint(tmp_path):
    import random as pyrandom

    import numpy as np

    from transferlab.callbacks.fault_tolerance import rng_state, set_rng_state

    torch.manual_seed(3), np.random.seed(3), pyrandom.seed(3)
    torch.save({"rng": rng_state()}, tmp_path / "s.ckpt")
    expected = (torch.rand(3), np.random.rand(3), pyrandom.random())
    torch.rand(5), np.random.rand(5), pyrandom.random()
    set_rng_state(torch.load(tmp_path / "s.ckpt", weights_only=True)["rng"])
    again = (torch.rand(3), np.random.rand(3), pyrandom.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_resumable_sampler_skips_consumed_samples():
    from transferlab.data.resumable import EpochShuffleSampler

    def sampler(seed=5, epoch=2):
        s = EpochShuffleSampler(10, seed=seed)
        s.set_epoch(epoch)
        return s

    interrupted = sampler()
    it = iter(interrupted)
    first = [next(it) for _ in range(4)]
    resumed = sampler(seed=0)  # the seed comes from the saved state
    resumed.load_state_dict(interrupted.state_dict())
    resumed.set_epoch(2)
    assert first + list(resumed) == list(sampler())
    assert sorted(sampler()) == list(range(10)) and list(sampler(epoch=3)) != list(sampler())
    resumed.set_epoch(3)  # a new epoch forgets the skip
    assert list(resumed) == list(sampler(epoch=3))
    untold = EpochShuffleSampler(10, seed=5)  # wrapped (DDP): nobody calls set_epoch, each pass is a new epoch
    assert [list(untold) for _ in range(3)] == [list(sampler(epoch=e)) for e in range(3)]


def test_resumable_sampler_shards_ranks_and_resumes_each_shard():
    """Under DDP the ranks' shards cover the epoch's permutation (padded to equal length) and resume mid-shard."""
    from torch.utils.data import DistributedSampler

    from transferlab.data.resumable import EpochShuffleSampler

    whole = list(EpochShuffleSampler(11, seed=3))
    shards = [EpochShuffleSampler(11, seed=3, rank=r, world=3) for r in range(3)]
    assert all(isinstance(s, DistributedSampler) for s in shards)  # Lightning keeps it instead of wrapping it
    assert [len(s) for s in shards] == [4, 4, 4]
    drawn = [list(s) for s in shards]
    assert sorted(sum(drawn, [])) == sorted(whole + whole[:1])  # every sample once, one padded repeat
    assert drawn[1] == (whole + whole[:1])[1::3]
    shards[2].set_epoch(0)  # the same epoch again (Lightning calls set_epoch before each)
    it = iter(shards[2])
    first = [next(it), next(it)]
    resumed = EpochShuffleSampler(11, seed=0, rank=2, world=3)
    resumed.load_state_dict(shards[2].state_dict())
    assert first + list(resumed) == drawn[2]


def test_run_id_persists(tmp_path):
    from transferlab.tracking.run_id import persistent_run_id

    first = persistent_run_id(tmp_path)
    assert len(first) == 8 and persistent_run_id(tmp_path) == first == (tmp_path / "wandb_id").read_text().strip()


# -- overwrite=true, full disk, unwritable folders, step time (audit) -----------------------------------------

TINY = ["task=supervised", "model=mlp", "data=digits", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false"]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _write(folder: Path, names: list[str]) -> None:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}" if name.endswith(".json") else "x")


def test_overwrite_removes_the_old_runs_files_and_nothing_else(tmp_path):
    import json

    from omegaconf import OmegaConf

    from transferlab.runner.run_folder import clear_for_overwrite

    overwrite = OmegaConf.create({"overwrite": True, "resume": None})
    kept = [".hydra/config.yaml", ".lock", "train.log", "notes.md", "supervised.md", "data/table.csv",
            "pretrain/notes.txt", "csv/metrics.csv"]
    old = ["transfer.md", "transfer.csv", "checkpoints/last.ckpt", "checkpoints/last.merged.pt",
           "checkpoints/.last.ckpt.99999999.tmp", "checkpoints/export/adapter.pt", "pretrain/metrics.json",
           "pretrain/checkpoints/best.ckpt", "pretrain/checkpoints/last.merged.pt", "finetune/checkpoints/last.ckpt"]
    pipeline = tmp_path / "pipeline"
    _write(pipeline, kept + old)
    (pipeline / "metrics.json").write_text(json.dumps({"task": "transfer", "pretrain/test/acc": 0.5, "test/acc": 0.7}))
    clear_for_overwrite(overwrite, pipeline)
    assert _files(pipeline) == sorted(kept)
    # a single-stage run: its task's name is no table of its own (the user's supervised.md stays)
    single = tmp_path / "single"
    _write(single, kept + ["checkpoints/last.ckpt", "checkpoints/model.merged.pt"])
    (single / "metrics.json").write_text(json.dumps({"task": "supervised", "test/acc": 0.7}))
    clear_for_overwrite(overwrite, single)
    assert _files(single) == sorted(kept)
    # a checkpoints/ that is a link leads out of the run folder: what it holds besides *.ckpt is not emptied
    elsewhere, linked = tmp_path / "elsewhere", tmp_path / "linked"
    _write(elsewhere, ["mine.pt"])
    linked.mkdir()
    (linked / "checkpoints").symlink_to(elsewhere)
    clear_for_overwrite(overwrite, linked)
    assert _files(elsewhere) == ["mine.pt"]
    clear_for_overwrite(OmegaConf.create({"overwrite": False, "resume": None}), pipeline / "pretrain")  # no-op
    # a pipeline replacing a folder without a root metrics.json (its last run was killed): its own tables go too
    killed = tmp_path / "killed"
    _write(killed, ["transfer.md", "transfer.csv", "notes.md", "pretrain/checkpoints/last.ckpt"])
    clear_for_overwrite(OmegaConf.create({"overwrite": True, "resume": None,
                                          "task": {"name": "transfer", "stages": {"pretrain": {}}}}), killed)
    assert _files(killed) == ["notes.md"]


def test_overwrite_run_leaves_no_stale_export_or_table(tmp_path):
    import json

    from transferlab.analysis.runs import read_summary
    from transferlab.runner.run import train

    _write(tmp_path, ["checkpoints/last.ckpt", "checkpoints/last.merged.pt", "transfer.md", "transfer.csv",
                      "pretrain/metrics.json", "pretrain/checkpoints/last.ckpt", "notes.md"])
    (tmp_path / "metrics.json").write_text(json.dumps({"task": "transfer", "pretrain/test/acc": 0.5}))
    train(compose_cfg(TINY + ["overwrite=true"], tmp_path))
    files = _files(tmp_path)
    assert "checkpoints/last.merged.pt" not in files and "transfer.md" not in files and "transfer.csv" not in files
    assert not [f for f in files if f.startswith("pretrain/")]
    assert {"checkpoints/last.ckpt", "metrics.json", "notes.md"} <= set(files)
    assert read_summary(tmp_path)["task"] == "supervised"


def test_torch_write_failure_is_one_line_naming_the_run_folder(tmp_path, monkeypatch, capsys):
    from transferlab.runner.entry import report_user_errors, torch_write_failed
    from transferlab.runner.run import train

    if Path("/dev/full").exists():  # torch's own wording for a short write (guards the match against a new torch)
        with pytest.raises(RuntimeError) as real:
            torch.save({"w": torch.zeros(100_000)}, "/dev/full")
        assert torch_write_failed(real.value) is not None
    assert torch_write_failed(RuntimeError("some other runtime error")) is None

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:858] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(SystemExit) as end:
        report_user_errors(train)(compose_cfg(TINY, tmp_path))
    assert end.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: disk full while writing {tmp_path} (PytorchStreamWriter failed writing file data/0: file "
                   "write failed); free space or set hydra.run.dir elsewhere, then rerun with resume=auto")
    assert not (tmp_path / ".lock").exists() and not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(RuntimeError, match="other"):  # any other RuntimeError keeps its traceback
        report_user_errors(lambda: (_ for _ in ()).throw(RuntimeError("other")))()


def test_a_full_disk_advises_resume_auto_only_where_the_entry_point_resumes(monkeypatch, capsys):
    """eval, export and predict cannot resume: their full-disk line says to rerun, train's says resume=auto."""
    import errno

    from transferlab.runner import entry

    advice, real = {}, entry.report_user_errors
    for name in ("train", "eval", "export", "predict"):
        monkeypatch.setattr(entry, "report_user_errors",
                            lambda job, text, name=name: real(job, advice.setdefault(name, text)))
        entry.hydra_entry(name)(lambda cfg: None)
    assert advice["train"] == "free space or set hydra.run.dir elsewhere, then rerun with resume=auto"
    assert advice["eval"] == "free space or set hydra.run.dir elsewhere, then rerun"
    assert advice["export"] == advice["predict"] == "free space or choose another out=, then rerun"

    def full():
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/e/metrics.json")

    with pytest.raises(SystemExit) as end:
        real(full, advice["eval"])()
    assert end.value.code == 2
    assert capsys.readouterr().err == ("error: disk full while writing /runs/e/metrics.json (No space left on device); "
                                       "free space or set hydra.run.dir elsewhere, then rerun\n")


def test_an_unwritable_typed_run_or_sweep_folder_is_refused_before_hydra(tmp_path, monkeypatch, capsys):
    from transferlab.errors import UserError
    from transferlab.runner.run_folder import check_command_line_folder

    readonly = tmp_path / "readonly"
    readonly.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != readonly and real_access(p, mode, **kw))
    check_command_line_folder([f"hydra.run.dir={tmp_path / 'fine' / 'run'}"])  # a writable parent: no error
    with pytest.raises(UserError) as err:
        check_command_line_folder([f"hydra.run.dir={readonly / 'a' / 'run'}"])
    assert str(err.value) == (f"hydra.run.dir={readonly / 'a' / 'run'}: the folder {readonly} is not writable "
                              "(read-only file system or no permission); pick a writable hydra.run.dir")
    with pytest.raises(UserError, match=f"hydra.sweep.dir={readonly}: the folder {readonly} is not writable"):
        check_command_line_folder(["-m", "seed=0,1", f"hydra.sweep.dir={readonly}"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=f"{tmp_path / 'file'} is a file, not a folder"):
        check_command_line_folder([f"hydra.run.dir={tmp_path / 'file' / 'run'}"])
    # the train entry point refuses it before Hydra writes anything: one line, exit 2
    from transferlab import train

    monkeypatch.setattr(sys, "argv", ["train", *TINY, f"hydra.run.dir={readonly / 'run'}"])
    with pytest.raises(SystemExit) as end:
        train.main()
    assert end.value.code == 2 and capsys.readouterr().err.startswith(f"error: hydra.run.dir={readonly / 'run'}: the")
    assert not (readonly / "run").exists()


def test_step_time_is_per_optimizer_step_and_leaves_out_checkpoint_saves(tmp_path, monkeypatch):
    import json

    from transferlab.callbacks.fault_tolerance import FaultTolerance
    from transferlab.callbacks.step_stats import StepStats
    from transferlab.runner.build import build_callbacks

    cfg = compose_cfg(TINY + ["trainer.limit_train_batches=4", "trainer.accumulate_grad_batches=2",
                              "callbacks.fault_tolerance.every_n_train_steps=1"], tmp_path)
    assert next(iter(cfg.callbacks)) == "step_stats" and isinstance(build_callbacks(cfg)[0], StepStats)
    timing_open, saves = [], []
    save_at_step = FaultTolerance.on_train_batch_end

    def spy(self, trainer, *args):
        stats = next(cb for cb in trainer.callbacks if isinstance(cb, StepStats))
        timing_open.append(stats._t0 is not None)  # StepStats still timing while the checkpoint is written?
        saves.append(trainer.global_step)
        save_at_step(self, trainer, *args)

    monkeypatch.setattr(FaultTolerance, "on_train_batch_end", spy)
    from transferlab.runner.run import train

    train(cfg)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert saves == [0, 1, 1, 2] and timing_open == [False] * 4
    assert m["steps"] == 2 and m["time/train_steps"] == 2 and m["time/step_ms"] > 0
