"""One run folder, one run: never overwrite a finished run, never write into the weights a fine-tune
starts from, never let two live runs share a folder, never resume silently with another config.

`claim(cfg, out)` is called by `runner.run.train` after validation and before anything is written;
`release(out)` when the run ends (the lock of a process that died is taken over by the next run).
DDP ranks other than 0 share rank 0's claim.
"""

import atexit
import json
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab.errors import ConfigError, UserError

log = logging.getLogger("transferlab")
LOCK = ".lock"
# data keys that change how data is loaded, not which data (a resume may change them)
LOADER_KEYS = ("num_workers", "pin_memory", "persistent_workers", "eval_batch_size")
_held: set[Path] = set()


def _get(cfg: DictConfig, key: str) -> Any:
    """A value before validation: an interpolation that does not resolve reads as None (validation reports it)."""
    return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)


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
            pid = _live_holder(out)
            if pid is not None:
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
    pretrained = _get(cfg, "task.pretrained")
    if not pretrained:
        return
    source, folder = Path(str(pretrained)).expanduser().resolve(), out.resolve()
    if source == folder or folder in source.parents:
        raise ConfigError("task.pretrained", str(pretrained),
                          f"a checkpoint outside this run's folder {out} (the fine-tune would overwrite the weights it "
                          "starts from): pick another hydra.run.dir")


def _holds_a_run(out: Path, found: list[Path]) -> UserError:
    return UserError(f"{out} already holds a run ({found[0].relative_to(out)}): rerun with resume=auto to continue it, "
                     "overwrite=true to replace it, or pick another hydra.run.dir")


def check_not_finished(cfg: DictConfig, out: Path) -> None:
    if _get(cfg, "resume") or _get(cfg, "overwrite") is True:
        return
    found = finished_files(out)
    if found:
        raise _holds_a_run(out, found)


# `.hydra/*.yaml` of a folder that holds a run, read before Hydra rewrote them for this command: put back if the
# command is refused before it trains, so a refused rerun does not relabel the finished run (compare reads them)
_hydra_before: dict[Path, dict[Path, str]] = {}


def check_command_line_folder(args: list[str]) -> None:
    """Before Hydra writes `.hydra/` (or `multirun.yaml`): a `hydra.run.dir` (with -m, `hydra.sweep.dir`) typed on
    the command line that cannot be written (`check_writable`) is refused; one that holds a run is refused unless
    `resume=` or `overwrite=true` is typed too; a folder a live run holds is refused always. With resume/overwrite,
    its `.hydra/` files are kept to put back on a refusal."""
    from transferlab.runner.cli_guard import typed_overrides

    if not _rank_zero():  # a DDP child rank runs the same command line in its rank 0's (locked) folder
        return
    values = {str(o.key_or_group).lstrip("+"): str(o.value()) for _, o in typed_overrides(args)
              if not o.is_sweep_override() and not o.is_delete()}
    multirun = "-m" in args or "--multirun" in args
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    folder = values.get(key)
    if not folder or "${" in folder:
        return
    check_writable(key, Path(folder))
    if not Path(folder).is_dir():
        return
    folder = Path(folder)
    outs = [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")] if multirun else [folder]
    for out in outs:
        holder = _live_holder(out)
        if holder is not None:
            raise UserError(f"{out} is in use by another live run (PID {holder}, lock file {out / LOCK}): "
                            f"wait for it to end or pick another {'hydra.sweep.dir' if multirun else 'hydra.run.dir'}")
    control = values.get("resume", values.get("ckpt_path", "")) not in ("", "null", "None") or values.get("overwrite") == "True"
    found = [f for out in outs for f in finished_files(out)]
    if not found:
        return
    if not control:
        if multirun:
            raise UserError(f"{folder} already holds a sweep ({found[0].relative_to(folder)}): rerun with resume=auto to "
                            "continue it (finished jobs are kept), overwrite=true to replace its jobs, or pick another "
                            "hydra.sweep.dir")
        raise _holds_a_run(folder, found)
    for out in outs:
        _hydra_before[out.resolve()] = {p: p.read_text() for p in sorted((out / ".hydra").glob("*.yaml"))}


def check_writable(key: str, folder: Path) -> None:
    """Hydra creates `folder` (and `.hydra/` in it) before any job code: its nearest existing folder must let us write
    (`os.access`; root passes permission bits, a read-only file system it does not)."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{key}={folder}: {existing} is a file, not a folder; pick another {key}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{key}={folder}: the folder {existing} is not writable (read-only file system or no "
                        f"permission); pick a writable {key}")


def _live_holder(out: Path) -> int | None:
    try:
        pid = int((out / LOCK).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid != os.getpid() and _alive(pid) else None


def hydra_files_replaced(out: Path) -> None:
    """This command now writes its own run into `out` (training started, or the old run was removed):
    the `.hydra/` files Hydra wrote for it are the folder's from now on."""
    _hydra_before.pop(out.resolve(), None)


def put_back_hydra_files(out: Path) -> None:
    """A refused command: the folder's `.hydra/` files as they were before Hydra rewrote them."""
    from transferlab.utils.io import atomic_write_text

    for path, text in _hydra_before.pop(out.resolve(), {}).items():
        atomic_write_text(path, text)


def _plain(node: Any) -> Any:
    from transferlab.config.instantiate import to_plain
    from transferlab.tracking.redact import redact

    return redact(to_plain(node))


def check_resume_matches(cfg: DictConfig, out: Path) -> None:
    """The checkpoint `resume` names is a readable training checkpoint of the same experiment: for
    `resume=auto` the same seed, model, data, task and peft; for an explicit file the same model (its
    weights must fit). `resume_force=true` skips the comparison (never the readability check)."""
    resume = cfg.get("resume") or cfg.get("ckpt_path")  # ckpt_path: lightning-hydra-template's name for it
    if not resume:
        return
    from transferlab.errors import CheckpointError
    from transferlab.utils.checkpoint import load_checkpoint, resolve_checkpoint

    if resume == "auto":
        file = out / "checkpoints" / "last.ckpt"
        if not file.is_file():
            return
        sections: tuple[str, ...] = ("seed", "model", "data", "task", "peft")
    else:
        file, sections = resolve_checkpoint(resume), ("model",)
    ckpt = load_checkpoint(file)
    if not isinstance(ckpt.get("state_dict"), dict) or "optimizer_states" not in ckpt:
        raise CheckpointError(f"resume={resume!r}: {file} is not a training checkpoint (no optimizer state): resume needs "
                              "a run's checkpoints/last.ckpt; to start from weights use task=finetune task.pretrained=...")
    if cfg.get("resume_force") is True:
        return
    stored = (ckpt.get("hyper_parameters") or {}).get("config") or {}
    if not isinstance(stored, dict):
        return
    now = _plain(cfg)
    for section in sections:
        if section not in stored:
            continue
        before, after = stored.get(section), now.get(section)
        if section == "data" and isinstance(before, dict) and isinstance(after, dict):
            before = {k: v for k, v in before.items() if k not in LOADER_KEYS}
            after = {k: v for k, v in after.items() if k not in LOADER_KEYS}
        if before != after:
            if isinstance(before, dict) and isinstance(after, dict):
                keys = sorted({k for k in before.keys() | after.keys() if before.get(k) != after.get(k)})
                detail = ", ".join(f"{section}.{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in keys[:3])
            else:
                detail = f"{section}: {before!r} -> {after!r}"
            raise UserError(f"resume={resume}: this run's config differs from the checkpoint {file} ({detail}); "
                            "set resume_force=true to continue anyway, or pick another hydra.run.dir")


def finished_summary(cfg: DictConfig, out: Path) -> dict[str, Any] | None:
    """`resume=auto` on a folder whose run finished with the same recipe (metrics.json's `provenance/config_sha`):
    that run's summary, with nothing retrained, retested or rewritten. Another recipe is not finished: the caller's
    `check_resume_matches` refuses it (naming the keys) or, where the checkpoint's sections agree, continues it
    (e.g. more epochs)."""
    path = out / "metrics.json"
    if cfg.get("resume") != "auto" or not path.is_file():
        return None
    from transferlab.config.instantiate import to_plain
    from transferlab.runner.provenance import config_sha

    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("provenance/config_sha") != config_sha(to_plain(cfg)):
        return None
    log.info("resume=auto: %s already finished with this config; its metrics.json is kept", out)
    return stored


def claim(cfg: DictConfig, out: Path, pipeline: bool = False) -> None:
    """The run-folder checks the config alone decides, then the lock (rank 0 only; other ranks share its
    folder). `check_resume_matches` comes after validation (it reads the checkpoint)."""
    if not _rank_zero():
        return
    if not pipeline:
        check_not_pretrained_folder(cfg, out)
    check_not_finished(cfg, out)
    take_lock(out)


def _pipeline_tables(out: Path) -> list[Path]:
    """The old pipeline's `<task name>.md/.csv` (runner/pipeline.py): the name is its root metrics.json's `task`,
    and it was a pipeline when that file holds results of a stage folder beside it (`<stage>/...` keys)."""
    try:
        stored = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        return []
    name = stored.get("task") if isinstance(stored, dict) else None
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        return []
    stages = {str(k).split("/", 1)[0] for k in stored if "/" in str(k)}
    if not any(Path(s).name == s and s not in (".", "..") and finished_files(out / s) for s in stages):
        return []
    return [out / f"{name}.md", out / f"{name}.csv"]


def overwritten_files(out: Path) -> list[Path]:
    """What `overwrite=true` removes: the run's record (`finished_files`), every file under the root's and the
    stage folders' `checkpoints/` (exports, `.tmp` files), the pipeline's tables. Nothing else (the folder may
    hold the user's own files); `.hydra/`, `.lock` and the log file stay."""
    found = _pipeline_tables(out) + finished_files(out)
    for folder in [out / "checkpoints", *sorted(out.glob("*/checkpoints"))]:
        if not folder.is_dir() or folder.is_symlink():  # a link leads outside the run folder: not ours to empty
            continue
        for root, _dirs, files in os.walk(folder):  # does not follow links to folders
            found += [Path(root) / f for f in sorted(files)]
    return [p for p in dict.fromkeys(found) if p.is_file() or p.is_symlink()]


def clear_for_overwrite(cfg: DictConfig, out: Path) -> None:
    """`overwrite=true`, after validation passed: the old run's files (`overwritten_files`) go first, so a replaced
    run that then fails or is killed leaves nothing stale beside its own files (and Lightning writes no
    `best-v1.ckpt` beside the old one)."""
    if _rank_zero() and _get(cfg, "overwrite") is True and not _get(cfg, "resume"):
        name = _get(cfg, "task.name")
        own = [out / f"{name}.md", out / f"{name}.csv"] if "stages" in (_get(cfg, "task") or {}) and name else []
        for old in overwritten_files(out) + own:  # own: the tables this pipeline writes at its end (replaced anyway)
            old.unlink(missing_ok=True)
        hydra_files_replaced(out)
