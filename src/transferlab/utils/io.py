"""The one atomic writer: write to a temporary file in the same folder, fsync, rename."""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """A file object whose content appears at `path` only when the block ends without error.

    A reader sees the old file or the whole new one, never half; a failed write leaves no
    temporary file behind (a killed process can: `.NAME.PID.tmp`, cleaned by `remove_stale_tmp`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_tmp(folder: str | Path) -> list[Path]:
    """Delete `.NAME.PID.tmp` files (from `atomic_open`) under `folder` whose process is gone."""
    import re

    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    pattern = re.compile(r"^\..+\.(\d+)\.tmp$")
    for path in folder.rglob(".*.tmp"):
        m = pattern.match(path.name)
        if m and path.is_file() and not _alive(int(m.group(1))):
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed
