"""How many torch intra-op threads this process may use: its share of the cores, not all of them.

torch starts one intra-op thread per visible core in every process. Two parallel sweep jobs (joblib)
or two DDP ranks on one machine then run 2 x cores threads on cores threads, and the threads spin
waiting for each other (on a 2-core machine a quick-start used 6x the CPU time it needs). So each
process takes

    cores it may use  //  jobs running at once on them  //  local ranks of its job   (at least 1)

- cores: the CPU affinity of this process (what a container, cgroup or `taskset` allows), or
  SLURM_CPUS_PER_TASK under SLURM (each rank is a task with its own cores: jobs = ranks = 1);
- jobs at once: `hydra.launcher.n_jobs` under the joblib launcher (`hydra/launcher=parallel`);
  `hydra.launcher.cpus_per_task` (cores per job) under submitit_local when set, otherwise one core
  per job (submitit_local starts every job of the sweep at once); 1 for the basic launcher;
- local ranks: the processes per node of the job's trainer (`trainer.devices`), 1 for one device.

`OMP_NUM_THREADS`, when set in the environment (by the user, torchrun or a scheduler), caps the share:
it is the process's own declared limit. The root key `threads` (`auto`, the default, or a number)
overrides the rule and the cap.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab.errors import ConfigError

log = logging.getLogger("transferlab")


def available_cores() -> int:
    """Cores this process may run on: its affinity mask, else the machine's count."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0 and os.environ.get("SLURM_JOB_ID"):
        return int(slurm)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def parallel_jobs(launcher: Any, cores: int) -> int:
    """Jobs of a Hydra sweep that run at the same time on this machine's cores (1: one at a time)."""
    if not launcher or os.environ.get("SLURM_JOB_ID"):
        return 1
    target = str(launcher.get("_target_", "")).lower()
    if "joblib" in target:
        n = int(launcher.get("n_jobs", -1) or 1)
        return max(1, cores + 1 + n if n < 0 else n)  # joblib: -1 = every core, -2 = all but one, ...
    if "submitit" in target and "local" in target:
        per_job = launcher.get("cpus_per_task")
        return max(1, cores // int(per_job)) if per_job else cores
    return 1


def local_ranks(trainer_cfg: Any) -> int:
    """Processes the job's trainer runs on this node (`trainer.devices`)."""
    devices = trainer_cfg.get("devices", 1) if trainer_cfg is not None else 1
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        return max(1, len(devices))
    if isinstance(devices, str) and "," in devices:
        return max(1, len([d for d in devices.split(",") if d.strip()]))
    try:
        n = int(devices)
    except (TypeError, ValueError):  # "auto"
        n = -1
    if n < 0:
        import torch

        return max(1, torch.cuda.device_count()) if trainer_cfg.get("accelerator") in ("gpu", "cuda", "auto") else 1
    return max(1, n)


def thread_share(cores: int, jobs: int, ranks: int) -> int:
    return max(1, cores // max(1, jobs) // max(1, ranks))


def omp_limit() -> int | None:
    """`OMP_NUM_THREADS` as a positive number, or None when unset or not one."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def _launcher() -> Any:
    from transferlab.utils.hydra import hydra_config, in_multirun

    hc = hydra_config()
    return hc.get("launcher") if hc is not None and in_multirun() else None


def set_torch_threads(cfg: DictConfig) -> int:
    """Set this process's torch intra-op threads from the root key `threads` (auto or a number); return it."""
    import torch

    setting = cfg.get("threads", "auto")
    if setting is None or setting == "auto":
        cores = available_cores()
        jobs, ranks = parallel_jobs(_launcher(), cores), local_ranks(cfg.get("trainer"))
        n = thread_share(cores, jobs, ranks)
        why = f"{cores} cores / {jobs} parallel jobs / {ranks} local ranks"
        limit = omp_limit()
        if limit is not None and limit < n:
            n, why = limit, f"{why}, capped by OMP_NUM_THREADS={limit}"
    elif isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        n, why = setting, "threads"
    else:
        raise ConfigError("threads", setting, "'auto' or a number of threads >= 1")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    log.info("torch intra-op threads: %d (%s)", n, why)
    return n
