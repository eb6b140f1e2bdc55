"""What a path is, in words, from its metadata only: a FIFO or a symlink to /dev/zero is never opened
(reading /dev/zero never ends; opening a FIFO waits for a writer)."""

import os
import stat
from pathlib import Path

KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file"))


def file_kind(mode: int) -> str:
    return next((name for test, name in KINDS if test(mode)), "not a file")


def describe(path: Path) -> str | None:
    """What `path` is in words ("a FIFO (named pipe)", "a character device (a symlink to '/dev/zero')",
    "a broken symlink (to 'x')"), from its metadata only; None when nothing is there."""
    link = f" (a symlink to {os.path.realpath(path)!r})" if os.path.islink(path) else ""  # islink never raises
    try:
        return file_kind(path.stat().st_mode) + link
    except FileNotFoundError:
        return f"a broken symlink (to {os.readlink(path)!r})" if link else None
    except NotADirectoryError:
        return None
    except OSError as e:
        return f"a path that cannot be examined ({e.strerror})" + link
