"""The launch helpers of transferlab.distributed, in-process and without starting any process."""

import inspect
import sys

import proc_helpers
import pytest
from conftest import compose_cfg
from omegaconf import OmegaConf

from transferlab.distributed import launch as distributed
from transferlab.distributed.fsdp import block_wrap_policy
from transferlab.errors import ConfigError, UserError
from transferlab.runner.build import compile_backbone


def test_child_command_line_is_one_job_without_the_sweep():
    argv = ["/x/train.py", "-m", "--config-name", "train", "-cd=/my/conf", "peft=full,lora", "seed=0,1",
            "hydra.sweep.dir=/s", "hydra/launcher=parallel"]
    task = ["peft=lora", "seed=1"]
    hydra = ["hydra.sweep.dir=/s", "hydra/launcher=parallel", "hydra.job.chdir=false", "hydra.mode=MULTIRUN"]
    assert distributed.job_command_line(argv, task, hydra) == [
        "/x/train.py", "--config-name", "train", "-cd=/my/conf", "hydra.job.chdir=false", "peft=lora", "seed=1"]


@pytest.mark.parametrize("trainer,overrides,spawns", [
    ("ddp_cpu", [], True), ("ddp", [], True), ("ddp", ["trainer.devices=1"], False),
    ("ddp", ["trainer.devices=[0,1]"], True), ("ddp_spawn", [], False), ("ddp_fork", [], False), ("cpu", [], False),
    ("default", ["trainer.devices=2"], True), ("fsdp", [], False),
])
def test_which_trainers_rerun_the_command_line(trainer, overrides, spawns):
    cfg = compose_cfg([f"trainer={trainer}", *overrides])
    assert distributed.spawns_script_copies(cfg.trainer) is spawns


@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp", "ddp_cpu", "ddp_fork", "ddp_spawn", "fsdp"])
def test_trainer_configs_use_only_trainer_arguments(trainer):
    import pytorch_lightning as pl

    cfg = compose_cfg([f"trainer={trainer}"])
    valid = set(inspect.signature(pl.Trainer.__init__).parameters)
    assert set(cfg.trainer) - {"_target_"} <= valid
    assert cfg.trainer.precision in ("32-true", "bf16-mixed", "16-mixed", "bf16-true")


def test_ddp_from_python_without_hydra_is_refused_with_the_alternative(monkeypatch):
    """Lightning would re-run this process's own command line (here: pytest) in the child."""
    monkeypatch.setattr(distributed, "_original_env", {k: None for k in distributed.LAUNCH_ENV})
    with pytest.raises(UserError, match="ddp_fork"):
        distributed.prepare_launch(compose_cfg(["trainer=ddp_cpu"]))
    distributed.prepare_launch(compose_cfg(["trainer=ddp_fork"]))  # fork re-runs nothing
    distributed.prepare_launch(compose_cfg(["trainer=ddp_spawn"]))
    # spawned CPU ranks would share the model's tensors through torch.multiprocessing
    with pytest.raises(ConfigError, match="start_method"):
        distributed.prepare_launch(compose_cfg(["trainer=ddp_spawn", "trainer.accelerator=cpu"]))


def test_external_launcher_world_must_match_devices_times_nodes(monkeypatch):
    monkeypatch.setattr(distributed, "_original_env", {k: None for k in distributed.LAUNCH_ENV} | {"LOCAL_RANK": "0"})
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    with pytest.raises(ConfigError, match="trainer.num_nodes"):
        distributed.prepare_launch(compose_cfg(["trainer=ddp_cpu"]))  # 2 devices x 1 node != 2 nodes x 1
    distributed.prepare_launch(compose_cfg(["trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2"]))


def test_fsdp_wraps_each_transformer_block():
    from hydra.utils import instantiate

    from transferlab.backbones.transformer import Block

    cfg = compose_cfg(["trainer=fsdp"])
    assert instantiate(cfg.trainer.strategy.auto_wrap_policy) == {Block}
    with pytest.raises(ConfigError, match="block_classes"):
        block_wrap_policy(["os.system"])


def test_compile_keeps_checkpoint_keys():
    from transferlab.backbones.mlp import MLP

    plain = MLP(input_shape=[40], hidden=16, depth=2)
    keys = list(plain.state_dict())
    compiled = compile_backbone(MLP(input_shape=[40], hidden=16, depth=2), True)
    assert list(compiled.state_dict()) == keys
    assert OmegaConf.select(compose_cfg([]), "compile") is False


def test_rank_watcher_names_the_failed_rank_and_stops_the_others(tmp_path, monkeypatch):
    """A child rank exiting non-zero is named with its last logged error; the other children are stopped."""
    import subprocess
    import time

    from transferlab.distributed import rank_watch

    monkeypatch.setattr(rank_watch, "GRACE_S", 120.0)  # rank 0 (this test) stops the watch long before
    (tmp_path / "train_ddp_process_2.log").write_text(
        "[2026-11-28 10:00:00,000][transferlab][INFO] - fitting\n"
        "[2026-11-28 10:00:01,000][transferlab][ERROR] - data.path='x.csv' is invalid: no such file\n")
    healthy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], start_new_session=True)
    watcher = rank_watch.RankWatcher([healthy, failing], str(tmp_path))
    rank_watch._watcher = watcher
    watcher.start()
    try:
        deadline = time.monotonic() + 30
        while watcher.failure is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert watcher.failure == (f"DDP rank 2 of 3 exited with code 3: data.path='x.csv' is invalid: no such file "
                                   f"(log: {tmp_path / 'train_ddp_process_2.log'})")
        healthy.wait(timeout=15)
        assert healthy.returncode == -9  # the waiting rank was stopped, not left in a collective
    finally:
        assert rank_watch.stop_ranks() == watcher.failure
        for proc in (healthy, failing):
            proc_helpers.kill_group(proc.pid)
            proc_helpers.assert_no_group_left(proc.pid)
    assert rank_watch._watcher is None and not watcher.is_alive()


def test_train_loader_is_this_ranks_shard_and_the_knn_bank_is_the_whole_split(tmp_path):
    """Under DDP each rank trains on its half; the k-NN monitor's bank is the whole train split on every rank."""
    from types import SimpleNamespace

    from transferlab.runner.build import build_datamodule

    dm = build_datamodule(compose_cfg(["data=digits", "data.batch_size=64"], tmp_path))
    dm.setup("fit")
    n = len(dm.train_set)
    dm.trainer = SimpleNamespace(global_rank=1, world_size=2)
    shard = [int(i) for b in dm.train_dataloader() for i in b[1]]
    bank = [int(i) for b in dm.bank_dataloader() for i in b[1]]
    assert len(shard) == (n + 1) // 2 and len(bank) == n
    dm.trainer = None
    assert bank == [int(i) for b in dm.train_dataloader() for i in b[1]]  # a single process's epoch 0 order
