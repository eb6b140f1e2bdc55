"""Watching the DDP ranks Lightning starts, for one job at a time (so a failed job does not end a sweep).

Lightning's popen launcher starts the other local ranks and a thread that SIGKILLs this whole
process as soon as any of them exits non-zero. It never stops watching: under a Hydra multirun
the next job is killed for the previous job's child, and a job that failed in rank 0 (Lightning
does not stop the children then) ends the sweep a few seconds later, without its summary.

`JobScopedLauncher` starts the ranks the same way and watches them with `RankWatcher`:
- a rank that exits non-zero is named (its last error line and its log file) and the other
  children are stopped; rank 0, waiting in a collective for the dead rank, then fails with an
  error (gloo and NCCL report a closed peer) and `failed_ranks_named` turns that into one line
  saying which rank failed and why; only if rank 0 is still stuck after `GRACE_S` is it killed,
  as Lightning does, so nothing hangs forever;
- `stop_ranks()` ends the watch and the children when a job fails in rank 0, so the next job
  of the sweep starts clean.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lightning_fabric.utilities.distributed import _set_num_threads_if_needed
from pytorch_lightning.strategies.launchers.subprocess_script import (
    _SubprocessScriptLauncher,
)

from transferlab.errors import RankFailed, UserError
from transferlab.utils.hydra import hydra_job_dir

log = logging.getLogger("transferlab")

# Seconds rank 0 gets to fail by itself after another rank died, before it is killed (Lightning: 0).
GRACE_S = 60.0
POLL_S = 0.5
# Seconds rank 0, failing with an error of its own kind, waits to learn whether a child rank failed first.
CHILD_EXIT_S = 10.0

_watcher: RankWatcher | None = None


class RankWatcher(threading.Thread):
    """Polls the child ranks of one job; on a failure names it, stops the others, and bounds rank 0's wait."""

    def __init__(self, procs: list[subprocess.Popen], log_dir: str | None):
        super().__init__(daemon=True, name="transferlab-rank-watcher")
        self.procs = procs
        self.log_dir = log_dir
        self.failure: str | None = None
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(POLL_S):
            codes, failed = self._poll()
            if failed:
                self._rank_failed(*failed)
                return
            if all(code == 0 for code in codes):
                return

    def _poll(self) -> tuple[list[int | None], tuple[int, int] | None]:
        """The children's exit codes (None: running) and the first (rank, code) that failed."""
        codes = [p.poll() for p in self.procs]
        return codes, next(((rank, code) for rank, code in enumerate(codes, start=1) if code), None)

    def _rank_failed(self, rank: int, code: int) -> None:
        self.failure = describe_failure(rank, len(self.procs) + 1, code, self.log_dir)
        log.error("%s; stopping the other ranks", self.failure)
        kill_children(self.procs)
        if not self._stopped.wait(GRACE_S):
            log.error("rank 0 did not fail within %.0f s after %s: killing it", GRACE_S, self.failure)
            os.kill(os.getpid(), signal.SIGKILL)

    def child_failure(self, wait_s: float) -> str | None:
        """The first child rank that exited non-zero, waiting up to `wait_s` for one to (None: none did)."""
        deadline = time.monotonic() + wait_s
        while self.failure is None:
            codes, failed = self._poll()
            if failed:
                return describe_failure(failed[0], len(self.procs) + 1, failed[1], self.log_dir)
            if None not in codes or time.monotonic() > deadline:
                return None
            time.sleep(0.1)
        return self.failure

    def stop(self) -> None:
        self._stopped.set()


class JobScopedLauncher(_SubprocessScriptLauncher):
    """Lightning's popen DDP launcher, watched by a RankWatcher that `stop_ranks()` ends with the job."""

    def launch(self, function: Callable, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        global _watcher
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            self._call_children_scripts()
            _watcher = RankWatcher(self.procs, hydra_job_dir())
            _watcher.start()
        _set_num_threads_if_needed(num_processes=self.num_processes)
        return function(*args, **kwargs)


def watch_ranks(trainer: Any) -> None:
    """Give a Trainer whose strategy re-runs the command line (DDP/FSDP, popen) the job-scoped launcher."""
    launcher = trainer.strategy.launcher
    if type(launcher) is _SubprocessScriptLauncher:
        trainer.strategy._launcher = JobScopedLauncher(launcher.cluster_environment, launcher.num_processes,
                                                       launcher.num_nodes)


def stop_ranks() -> str | None:
    """End this job's watch and its remaining child ranks; return the child failure seen, if any."""
    global _watcher
    watcher, _watcher = _watcher, None
    if watcher is None:
        return None
    watcher.stop()
    kill_children(watcher.procs)
    watcher.join(timeout=5)
    return watcher.failure


@contextlib.contextmanager
def failed_ranks_named() -> Iterator[None]:
    """Around a stage: if it fails, stop the other ranks; if a child rank failed first, say so in one line."""
    try:
        yield
    except Exception as e:
        # rank 0's own mistake (a UserError) is its reason; anything else may be a collective that lost a
        # peer, and that peer can still be shutting down when rank 0 sees its socket close
        failure = None if isinstance(e, UserError) or _watcher is None else _watcher.child_failure(CHILD_EXIT_S)
        stop_ranks()
        if failure is not None:
            log.debug("rank 0 failed after a child rank", exc_info=True)
            raise RankFailed(failure) from None
        raise


def kill_children(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=10)


def describe_failure(rank: int, world: int, code: int, log_dir: str | None) -> str:
    """'rank 1 of 2 exited with code 2: <its last error line> (log: <file>)'."""
    text = f"DDP rank {rank} of {world} exited with code {code}"
    logfile = Path(log_dir) / f"train_ddp_process_{rank}.log" if log_dir else None
    if logfile is not None and logfile.is_file():
        errors = [line.split("[ERROR]", 1)[1].strip().lstrip("- ") for line in logfile.read_text(errors="replace").splitlines()
                  if "[ERROR]" in line]
        if errors:
            text += f": {errors[-1]}"
        text += f" (log: {logfile})"
    return text
