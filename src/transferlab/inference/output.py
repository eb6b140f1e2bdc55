"""The file that `predict` and `export` write where `out=` says (no run folder of their own).

`check_out` runs before any work: an existing file is replaced only with `overwrite=true`, and a
run's own record is never replaced. `writing` turns a full disk or an unwritable folder during the
write into one line that names `out` and the file (not the hidden temporary one beside it).
"""

import contextlib
import errno
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transferlab.errors import ConfigError, UserError

# What a run folder's record is made of: the summary that compare/sweeps read, the checkpoints that eval,
# resume and task.pretrained read (Lightning's *.ckpt), and the adapter file (adaptation/artifact.py).
RUN_RECORD_NAMES = ("metrics.json", "adapter.pt")
NO_SPACE = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded"}
NOT_WRITABLE = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "not permitted"}


def overwrite_flag(cfg: Any) -> bool:
    """The root key `overwrite`: true or false (`overwrite=yes` would read as a string, and a string is truthy)."""
    value = cfg.get("overwrite", False)
    if not isinstance(value, bool):
        raise ConfigError("overwrite", value, "true or false")
    return value


def is_run_record(path: Path) -> bool:
    return path.name in RUN_RECORD_NAMES or path.suffix == ".ckpt"


def check_out(target: Path, overwrite: bool, out: str | None) -> None:
    """Refuse writing `target` (what `out=` names, or export's default beside the checkpoint)."""
    key = f"out={out}" if out else f"out=null (writes {target})"
    # A run's record is refused even with overwrite=true: eval, resume, compare and task.pretrained trust these
    # files as what the run measured and saved, and a CSV or an export under their name breaks them silently and
    # for good (the run cannot write them again). No prediction or export is meant to carry these names, so this
    # is always a slip of `out=`; whoever really wants the file gone deletes it by hand.
    if is_run_record(target):
        raise UserError(f"{key}: {target.name} is a run's own record ({', '.join(RUN_RECORD_NAMES)}, *.ckpt) and is never "
                        "replaced, even with overwrite=true: choose another out=")
    if target.is_dir():
        raise UserError(f"{key}: {target} is a folder: name a file")
    if target.exists() and not overwrite:
        raise UserError(f"{key}: {target} already exists: set overwrite=true to replace it, or choose another out=")


@contextlib.contextmanager
def writing(target: Path, key: str | None = None) -> Iterator[None]:
    """A full disk or a read-only/unwritable folder while writing `target` (or a file beside it): one line naming
    the file (not its hidden `.NAME.PID.tmp`) and the setting that chose it (`key`, e.g. `out=preds.csv`);
    runner/entry.py's generic message advises hydra.run.dir / resume=auto, which an `out=` file has nothing to do with."""
    try:
        yield
    except OSError as e:
        what = NO_SPACE.get(e.errno) or NOT_WRITABLE.get(e.errno)
        if what is None:
            raise
        hint = "free space there" if e.errno in NO_SPACE else "make that folder writable"
        where = f" ({key})" if key else ""
        raise UserError(f"{what} while writing {real_file(e.filename, target)}{where}: {hint} or choose another out="
                        ) from None


def real_file(filename: str | None, target: Path) -> Path:
    """The file a failed write was for: `NAME` for the temporary `.NAME.PID.tmp` (utils/io.py), else `target`."""
    if not filename:
        return target
    path = Path(filename)
    temporary = re.fullmatch(r"\.(.+)\.\d+\.tmp", path.name)
    return path.with_name(temporary.group(1)) if temporary else path
