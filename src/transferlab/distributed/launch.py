"""Launching DDP ranks from a Hydra app: make Lightning's DDP launcher safe under Hydra.

Lightning's DDP launcher (`strategy=ddp`, start method popen) starts the other local ranks by
re-running this program's command line. Under Hydra multirun (`-m`) that line is the whole
sweep, so each child would re-run every job and make stray sweep folders; and a second job
in the same process would find the first job's process group (and children) gone or busy.
`prepare_launch` runs just before each Trainer is built and fixes both: the children get the
command line of this one job, writing into this job's folder, and a new job starts a new
process group. Under torchrun or SLURM (LOCAL_RANK / SLURM variables set by the launcher)
every rank is started from outside and nothing here launches anything.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

from omegaconf import DictConfig, OmegaConf, read_write

from transferlab.distributed.rank_watch import stop_ranks
from transferlab.errors import ConfigError, UserError
from transferlab.utils.hydra import hydra_job_dir, task_overrides

log = logging.getLogger("transferlab")

# Variables Lightning's launcher sets in the launching process (and gives its children).
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
# Command-line flags of a Hydra app that select the config (kept for the children); all else is an override.
CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
# Hydra overrides a child must not inherit: they describe the sweep, not the job.
SWEEP_KEYS = ("hydra.sweep", "hydra.sweeper", "hydra/sweeper", "hydra.launcher", "hydra/launcher", "hydra.mode",
              "hydra.run", "hydra.output_subdir", "hydra.job.name")

_original_env: dict[str, str | None] | None = None
_launched_for: str | None = None


def launched_externally() -> bool:
    """True when torchrun, SLURM or another launcher started this process as one rank of many."""
    env = _snapshot()
    return env.get("LOCAL_RANK") is not None or os.environ.get("SLURM_NTASKS", "1") not in ("", "1")


def _snapshot() -> dict[str, str | None]:
    """The launch variables as they were before any Trainer in this process set them."""
    global _original_env
    if _original_env is None:
        _original_env = {k: os.environ.get(k) for k in LAUNCH_ENV}
    return _original_env


def prepare_launch(cfg: DictConfig) -> None:
    """Call right before building a Trainer: one job's command line for DDP children, a fresh group per job."""
    _snapshot()
    # transferlab's epoch metrics are torchmetrics objects, synced across ranks in compute(): Lightning's
    # advice to add sync_dist=True to those self.log calls does not apply
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
    if launched_externally():
        check_external_world(cfg)
        check_shared_run_dir()
        return
    check_start_method(cfg.trainer)
    job = hydra_job_dir()
    if _launched_for is not None and job != _launched_for:
        _end_previous_launch()
    if not spawns_script_copies(cfg.trainer):
        return
    if job is None:
        raise UserError("trainer.strategy (DDP, start method popen) starts copies of this program's command line, "
                        "which only works from the command line (`python -m transferlab.train ...`); from Python "
                        "(tests, notebooks) use trainer=ddp_fork (CPU) or trainer=ddp_spawn (GPUs), or start the ranks "
                        "with torchrun")
    _refuse_process_pool_launcher()
    _set_job_command_line(job)
    _remember_launch(job)


def _refuse_process_pool_launcher() -> None:
    """A joblib worker's command line is joblib's, not transferlab's: DDP children cannot be started from it."""
    from hydra.core.hydra_config import HydraConfig

    launcher = str(HydraConfig.get().get("launcher", {}).get("_target_", ""))
    if "joblib" in launcher.lower():
        raise ConfigError("hydra/launcher", "parallel (joblib)",
                          "DDP jobs (trainer.devices > 1) need the default launcher, which runs jobs one after "
                          "another, or hydra/launcher=slurm; or use trainer.devices=1 for parallel jobs")


def _remember_launch(job: str) -> None:
    global _launched_for
    _launched_for = job


def check_start_method(trainer_cfg: DictConfig) -> None:
    """Spawned CPU ranks receive the model through shared memory: every rank would update the same tensors."""
    strategy = trainer_cfg.get("strategy")
    if isinstance(strategy, (DictConfig, dict)) and strategy.get("start_method") == "spawn" \
            and trainer_cfg.get("accelerator") == "cpu":
        raise ConfigError("trainer.strategy.start_method", "spawn",
                          "on CPU spawned ranks share the model's tensors (torch.multiprocessing) and train wrong: "
                          "use trainer=ddp_cpu from the command line or trainer=ddp_fork from Python")


def spawns_script_copies(trainer_cfg: DictConfig) -> bool:
    """Whether this trainer config makes Lightning re-run the command line (DDP, popen, >1 local device)."""
    strategy = trainer_cfg.get("strategy", "auto")
    if isinstance(strategy, (DictConfig, dict)):
        target = str(strategy.get("_target_", ""))
        if not target.endswith("DDPStrategy") or strategy.get("start_method", "popen") != "popen":
            return False
    elif str(strategy) not in ("auto", "ddp", "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true"):
        return False
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, str) and devices not in ("auto", "-1"):
        devices = [d for d in devices.split(",") if d.strip()] if "," in devices else int(devices)
    if devices in ("auto", "-1", -1):
        return True
    count = len(devices) if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices) else int(devices)
    return count > 1


def job_command_line(argv: list[str], task_overrides: list[str], hydra_overrides: list[str]) -> list[str]:
    """argv for a child rank: the program, its config flags, this job's overrides; no `-m`, no sweep."""
    keep: list[str] = [argv[0]]
    args = argv[1:]
    i = 0
    while i < len(args):
        arg = args[i]
        flag = arg.split("=", 1)[0]
        if flag in CONFIG_FLAGS:
            keep.append(arg)
            if "=" not in arg and i + 1 < len(args):
                keep.append(args[i + 1])
                i += 1
        i += 1
    hydra_kept = [o for o in hydra_overrides if not _override_key(o).startswith(SWEEP_KEYS)]
    return keep + hydra_kept + list(task_overrides)


def _override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def _set_job_command_line(job: str) -> None:
    """Point Lightning's Hydra-aware child command at this job: its overrides, its folder."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    # the task overrides as typed: a `${oc.env:VAR}` override reaches the children as the reference (resolved, the
    # secret's value would be on their command line, which the children's guard refuses)
    sys.argv[:] = job_command_line(sys.argv, task_overrides(hydra), list(hydra.overrides.hydra))
    # Lightning appends hydra.run.dir=<HydraConfig run.dir>; under -m that is not the job's folder.
    root = HydraConfig.instance().cfg
    with read_write(root.hydra.run):
        root.hydra.run.dir = job
    log.debug("DDP children will run: %s (in %s)", " ".join(sys.argv), job)


def _end_previous_launch() -> None:
    """A new job in this process (multirun): close the last job's process group and forget its port."""
    import torch.distributed as dist

    global _launched_for
    stop_ranks()  # children a failed job left behind (waiting in a collective) end with their job
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in _snapshot().items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _launched_for = None


def check_external_world(cfg: DictConfig) -> None:
    """Under torchrun/SLURM: trainer.devices = processes per node, trainer.num_nodes = nodes started."""
    world = os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS")
    local = os.environ.get("LOCAL_WORLD_SIZE") or (os.environ.get("SLURM_NTASKS_PER_NODE") or "").split("(")[0]
    devices, nodes = cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1)
    if not world or not isinstance(devices, int) or not isinstance(nodes, int):
        return
    world_n, local_n = int(world), int(local) if local.isdigit() else None
    expected = (local_n, world_n // local_n) if local_n else None
    if (expected and (devices, nodes) != expected) or devices * nodes != world_n:
        want = f"trainer.devices={expected[0]} trainer.num_nodes={expected[1]}" if expected else \
            f"trainer.devices x trainer.num_nodes = {world_n}"
        raise ConfigError("trainer.devices / trainer.num_nodes", f"{devices} / {nodes}",
                          f"the launcher started {world_n} processes ({local or '?'} per node): use {want}")


def check_shared_run_dir() -> None:
    """Ranks started from outside each compose their own config: a timestamped run folder would differ per rank."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1) <= 1:
        return
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.RUN and not any(_override_key(o) == "hydra.run.dir" for o in hydra.overrides.hydra):
        raise ConfigError("hydra.run.dir", "the default (a timestamp per process)",
                          "under torchrun/SLURM every rank must name the same run folder, "
                          "e.g. hydra.run.dir=outputs/run_$SLURM_JOB_ID (or a sweep via a Hydra launcher)")
