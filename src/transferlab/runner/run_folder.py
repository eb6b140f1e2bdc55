"""One run folder, one run: never overwrite a finished run, never write into the weights a fine-tune
starts from, never let two live runs share a folder, never resume silently with another config.

`claim(cfg, out)` is called by `runner.run.train` after validation and before anything is written;
`release(out)` when the run ends (the lock of a process that died is taken over by the next run).
DDP ranks other than 0 share rank 0's claim.
"""

import atexit
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab.errors import ConfigError, UserError

LOCK = ".lock"
# data keys that change how data is loaded, not which data (a resume may change them)
LOADER_KEYS = ("num_workers", "pin_memory", "persistent_workers", "eval_batch_size")
_held: set[Path] = set()


def _rank_zero() -> bool:
    return all(os.environ.get(k, "0") in ("", "0") for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def finished_files(out: Path) -> list[Path]:
    """What marks a run folder as holding a run: metrics.json or checkpoints (its own or its stages')."""
    found = [p for pattern in ("metrics.json", "*/metrics.json", "checkpoints/*.ckpt", "*/checkpoints/*.ckpt")
             for p in sorted(out.glob(pattern))]
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def take_lock(out: Path) -> Path:
    """Create `out/.lock` with this PID; a live holder is a one-line error, a dead one's lock is taken over."""
    lock = out / LOCK
    out.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pid = None
            if pid is not None and pid != os.getpid() and _alive(pid):
                raise UserError(f"{out} is in use by another live run (PID {pid}, lock file {lock}): "
                                "wait for it to end or pick another hydra.run.dir") from None
            try:
                lock.unlink()  # a stale lock (its process is gone) or our own: take it over
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        _held.add(lock)
        return lock
    raise UserError(f"could not take the lock {lock} (another run keeps creating it)")


def release(out: Path) -> None:
    lock = out / LOCK
    if lock in _held:
        _held.discard(lock)
        try:
            if lock.read_text().split()[0] == str(os.getpid()):
                lock.unlink()
        except (OSError, IndexError):
            pass


@atexit.register
def _release_all() -> None:
    for lock in list(_held):
        release(lock.parent)


def check_not_pretrained_folder(cfg: DictConfig, out: Path) -> None:
    pretrained = OmegaConf.select(cfg, "task.pretrained", default=None)
    if not pretrained:
        return
    source, folder = Path(str(pretrained)).expanduser().resolve(), out.resolve()
    if source == folder or folder in source.parents:
        raise ConfigError("task.pretrained", str(pretrained),
                          f"a checkpoint outside this run's folder {out} (the fine-tune would overwrite the weights it "
                          "starts from): pick another hydra.run.dir")


def check_not_finished(cfg: DictConfig, out: Path) -> None:
    if cfg.get("resume") or cfg.get("overwrite"):
        return
    found = finished_files(out)
    if found:
        raise UserError(f"{out} already holds a run ({found[0].relative_to(out)}): rerun with resume=auto to continue it, "
                        "overwrite=true to replace it, or pick another hydra.run.dir")


def _plain(node: Any) -> Any:
    from transferlab.config.instantiate import to_plain
    from transferlab.tracking.redact import redact

    return redact(to_plain(node))


def check_resume_matches(cfg: DictConfig, out: Path) -> None:
    """`resume=auto` continues only the same experiment: seed, model, data, task and peft as the checkpoint's."""
    if cfg.get("resume") != "auto" or cfg.get("resume_force"):
        return
    last = out / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return
    from transferlab.utils.checkpoint import load_checkpoint

    stored = ((load_checkpoint(last).get("hyper_parameters") or {}).get("config")) or {}
    if not isinstance(stored, dict):
        return
    now = _plain(cfg)
    for section in ("seed", "model", "data", "task", "peft"):
        if section not in stored:
            continue
        before, after = stored.get(section), now.get(section)
        if section == "data" and isinstance(before, dict) and isinstance(after, dict):
            before = {k: v for k, v in before.items() if k not in LOADER_KEYS}
            after = {k: v for k, v in after.items() if k not in LOADER_KEYS}
        if before != after:
            detail = section
            if isinstance(before, dict) and isinstance(after, dict):
                keys = sorted({k for k in before.keys() | after.keys() if before.get(k) != after.get(k)})
                detail = ", ".join(f"{section}.{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in keys[:3])
            else:
                detail = f"{section}: {before!r} -> {after!r}"
            raise UserError(f"resume=auto: this run's config differs from the checkpoint {last} ({detail}); "
                            "set resume_force=true to continue anyway, or pick another hydra.run.dir")


def claim(cfg: DictConfig, out: Path, pipeline: bool = False) -> None:
    """Every run-folder check, then the lock (rank 0 only; other ranks share its folder)."""
    if not _rank_zero():
        return
    if not pipeline:
        check_not_pretrained_folder(cfg, out)
    check_not_finished(cfg, out)
    take_lock(out)
    if not pipeline:
        check_resume_matches(cfg, out)
    if cfg.get("overwrite"):
        for old in [out / "metrics.json", *out.glob("*/metrics.json")]:
            old.unlink(missing_ok=True)  # a replaced run that then fails leaves no stale result behind
