"""Torch intra-op threads per process: the share of the cores (distributed/threads.py)."""

import pytest
import torch
from conftest import compose_cfg
from omegaconf import OmegaConf

from transferlab.distributed.threads import (
    local_ranks,
    parallel_jobs,
    set_torch_threads,
    thread_share,
)
from transferlab.errors import ConfigError


@pytest.mark.parametrize("cores,jobs,ranks,expected", [
    (2, 1, 1, 2), (2, 2, 1, 1), (2, 1, 2, 1), (8, 2, 2, 2), (16, 3, 1, 5), (2, 4, 1, 1), (1, 2, 2, 1),
])
def test_thread_share(cores, jobs, ranks, expected):
    assert thread_share(cores, jobs, ranks) == expected


@pytest.mark.parametrize("launcher,cores,expected", [
    (None, 8, 1),
    ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 8, 1),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}, 8, 2),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1}, 8, 8),
    ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -2}, 8, 7),
    ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", "cpus_per_task": 4}, 8, 2),
    ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", "cpus_per_task": None}, 8, 8),
])
def test_parallel_jobs(launcher, cores, expected, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert parallel_jobs(OmegaConf.create(launcher) if launcher else None, cores) == expected


@pytest.mark.parametrize("devices,expected", [(1, 1), (2, 2), ([0, 1, 2], 3), ("0,1", 2), ("2", 2)])
def test_local_ranks(devices, expected):
    assert local_ranks(OmegaConf.create({"devices": devices, "accelerator": "cpu"})) == expected


def test_the_config_key_sets_this_process_threads(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert set_torch_threads(compose_cfg(["threads=1"], tmp_path)) == 1
        assert torch.get_num_threads() == 1
        cfg = compose_cfg(["trainer=ddp_cpu"], tmp_path)  # 2 local ranks, no sweep: half the cores each
        from transferlab.distributed.threads import available_cores

        assert set_torch_threads(cfg) == max(1, available_cores() // 2) == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_omp_num_threads_caps_auto_but_not_an_explicit_number(tmp_path, monkeypatch):
    from transferlab.distributed.threads import available_cores

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_torch_threads(compose_cfg([], tmp_path)) == 1 == torch.get_num_threads()
        assert set_torch_threads(compose_cfg(["threads=3"], tmp_path)) == 3 == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "64")  # above the share: the share stands
        assert set_torch_threads(compose_cfg([], tmp_path)) == available_cores() == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "")  # empty = unset
        assert set_torch_threads(compose_cfg([], tmp_path)) == available_cores()
    finally:
        torch.set_num_threads(before)


def test_bad_threads_value_is_refused_naming_the_key(tmp_path):
    from transferlab.config.validate import validate

    with pytest.raises(ConfigError, match="threads"):
        validate(compose_cfg(["threads=0"], tmp_path))
    with pytest.raises(ConfigError, match="threads"):
        set_torch_threads(compose_cfg(["threads=many"], tmp_path))
