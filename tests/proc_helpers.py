"""Every subprocess a test starts goes through here: its own session (process group), the whole group
killed on timeout or when the test is done, and an assertion that no process of the group is left.

`run(...)` is `subprocess.run` for tests; `started(...)` is a context manager around `Popen` for tests
that interact with a live process (send it signals, wait for a step); `in_background(...)` starts a
command now and hands back `finish(timeout)`, so that independent CLI runs (each mostly imports, one
core idle) overlap instead of queueing.
"""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def kill_group(pgid: int, grace: float = 5.0) -> None:
    """SIGTERM the group, then SIGKILL whatever is still there after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not group_members(pgid):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and group_members(pgid):
            time.sleep(0.1)


def assert_no_group_left(pgid: int) -> None:
    left = group_members(pgid)
    if left:
        kill_group(pgid, grace=0)
        raise AssertionError(f"processes {left} of the test's process group {pgid} were left running")


def run(args: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(args, capture_output=True, text=True)` in a new session; the group is killed on timeout."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    kwargs.setdefault("text", True)
    proc = subprocess.Popen(args, start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, grace=2)
        out, err = proc.communicate()
        raise AssertionError(f"timed out after {timeout:g} s (process group killed): {args}\n{(err or '')[-3000:]}") from None
    finally:
        kill_group(proc.pid, grace=2)  # children the finished process left behind
    assert_no_group_left(proc.pid)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@contextlib.contextmanager
def started(args: list[str], **kwargs) -> Iterator[subprocess.Popen]:
    """`Popen(args)` in a new session; on exit (or error) its whole group is killed and checked gone."""
    proc = subprocess.Popen(args, start_new_session=True, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            kill_group(proc.pid, grace=5)
            proc.wait(timeout=10)
        kill_group(proc.pid, grace=2)
        assert_no_group_left(proc.pid)


@contextlib.contextmanager
def in_background(args: list[str], folder: Path, **kwargs) -> Iterator[Callable[[float], subprocess.CompletedProcess]]:
    """Start `args` now in a new session, output to `folder`/stdout.log and stderr.log (a pipe nobody reads
    would fill and stall it). Yields `finish(timeout)`: wait, kill what the process left, check the group is
    gone, return the CompletedProcess (text output); past `timeout` the group is killed and the test fails.
    On exit the group is killed whether or not `finish` was called."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "stdout.log", "w") as out, open(folder / "stderr.log", "w") as err, \
            started(args, stdout=out, stderr=err, **kwargs) as proc:

        def finish(timeout: float) -> subprocess.CompletedProcess:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc.pid, grace=2)
                raise AssertionError(f"timed out after {timeout:g} s (process group killed): {args}") from None
            kill_group(proc.pid, grace=2)
            assert_no_group_left(proc.pid)
            return subprocess.CompletedProcess(args, proc.returncode, (folder / "stdout.log").read_text(),
                                               (folder / "stderr.log").read_text())

        yield finish
