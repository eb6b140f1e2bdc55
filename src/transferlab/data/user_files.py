"""Files a user points a data config at are untrusted input: checked before they are read.

- A path that is not a regular file (a FIFO, a device such as a symlink to /dev/zero, a directory,
  a broken symlink) is one line saying what it is, and is never opened for reading: reading
  /dev/zero never ends, and opening a FIFO waits for a writer. `open_regular` also opens without
  blocking and checks the opened descriptor, so a path swapped after the check is caught too.
- .npy arrays (alone or inside an .npz) are read with numpy's public header readers. Object
  (pickled) arrays are refused, and a header whose shape x dtype size differs from the bytes the
  file holds (a truncated file, an edited header, a zip bomb claiming 10**12 rows) is refused
  before anything is allocated.
"""

import logging
import math
import os
import stat
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np

from transferlab.errors import UserError
from transferlab.utils.file_kind import describe, file_kind

log = logging.getLogger("transferlab")

# deflate cannot expand data more than ~1032:1; a member whose recorded size is larger lies about it
MAX_DEFLATE_RATIO = 1100
def _not_regular(key: str, path: str, what: str | None, valid: str) -> UserError:
    if what is None:
        return UserError(f"{key}={path!r}: no such file; expected {valid}")
    return UserError(f"{key}={path!r}: not a regular file but {what}; expected {valid}")


def require_file(path: str | Path, key: str, valid: str) -> Path:
    """`path` (user-expanded) if it is a regular file (or a symlink to one), else a one-line UserError saying what it is."""
    p = Path(str(path)).expanduser()
    what = describe(p)
    if what is None or not what.startswith("a regular file"):
        raise _not_regular(key, str(path), what, valid)
    return p


def require_folder(path: str | Path, key: str, valid: str) -> Path:
    """`path` (user-expanded) if it is a directory (or a symlink to one), else a one-line UserError saying what it is."""
    p = Path(str(path)).expanduser()
    what = describe(p)
    if what is None:
        raise UserError(f"{key}={str(path)!r}: no such folder; expected {valid}")
    if not what.startswith("a directory"):
        raise UserError(f"{key}={str(path)!r}: not a folder but {what}; expected {valid}")
    return p


def open_regular(path: str | Path, key: str, valid: str) -> BinaryIO:
    """The regular file at `path`, opened for binary reading; anything else is a one-line UserError."""
    p = require_file(path, key, valid)
    nonblock = getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in after the check must not block the open
    try:
        fd = os.open(p, os.O_RDONLY | nonblock | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise _not_regular(key, str(path), describe(p), valid) from None
    except OSError as e:
        raise UserError(f"{key}={str(path)!r}: cannot be opened ({e.strerror}); expected {valid}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(key, str(path), file_kind(mode), valid)
        if nonblock:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_size(f: IO) -> int:
    return os.fstat(f.fileno()).st_size


# -- .npy / .npz ---------------------------------------------------------------------------------
def read_npy(f: IO, nbytes: int, where: str, valid: str) -> np.ndarray:
    """One .npy array from `f`, which holds exactly `nbytes` bytes from its current position (header included).

    The header is read with numpy's public `read_magic` / `read_array_header_*`; the data only after
    its size (shape x itemsize) is found equal to what the file holds.
    """
    start = f.tell()
    try:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"format version {version[0]}.{version[1]} (read are 1.0 and 2.0)")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
    except (ValueError, OSError, EOFError) as e:  # numpy reports a bad magic/header as ValueError
        raise UserError(f"{where}: not a valid .npy array ({str(e).splitlines()[0]}); expected {valid}") from None
    if dtype.hasobject:
        raise UserError(f"{where}: holds Python objects (pickled data), which are never loaded; expected {valid}")
    if dtype.kind not in "biuf":
        raise UserError(f"{where}: has dtype {dtype}; expected {valid}")
    data = nbytes - (f.tell() - start)
    need = math.prod(shape) * dtype.itemsize  # Python ints: a claimed 10**12 rows cannot overflow
    if need != data:
        raise UserError(f"{where}: its header says shape {list(shape)} of {dtype} ({need:,} bytes), but the file holds "
                        f"{data:,} bytes of data (truncated or edited?); expected {valid}")
    out = np.empty(math.prod(shape), dtype=dtype)
    view = memoryview(out).cast("B")
    done = 0
    while done < need:
        n = f.readinto(view[done:])
        if not n:
            raise UserError(f"{where}: ends after {done:,} of {need:,} bytes of data (truncated?); expected {valid}")
        done += n
    return out.reshape(shape[::-1]).transpose() if fortran else out.reshape(shape)


def member_size(z: zipfile.ZipFile, info: zipfile.ZipInfo, archive_size: int, where: str, valid: str) -> int:
    """The member's uncompressed size, if the archive's numbers are possible; else a UserError."""
    possible = info.header_offset + info.compress_size <= archive_size and (
        info.file_size == info.compress_size if info.compress_type == zipfile.ZIP_STORED
        else info.file_size <= MAX_DEFLATE_RATIO * max(info.compress_size, 1))
    if not possible:
        raise UserError(f"{where}: the archive records {info.file_size:,} bytes from {info.compress_size:,} compressed "
                        f"in a {archive_size:,}-byte file, which is not possible (a zip bomb or a damaged file); expected {valid}")
    return info.file_size


def read_npz(path: str | Path, key: str, valid: str, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz (`names`, or all of them) or of an .npy (under the name ""), each checked as `read_npy`.

    Never unpickles (object arrays are refused) and never allocates more than the file can hold.
    """
    with open_regular(path, key, valid) as f:
        size, where = file_size(f), f"{key}={str(path)!r}"
        if f.read(6) == b"\x93NUMPY":
            f.seek(0)
            return {"": read_npy(f, size, where, valid)}
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as z:
                members = {n[:-4]: n for n in z.namelist() if n.endswith(".npy")}
                wanted = list(members) if names is None else list(names)
                missing = [n for n in wanted if n not in members]
                if missing:
                    raise UserError(f"{where}: has no array named {missing[0]!r} (it has {sorted(members)}); expected {valid}")
                arrays = {}
                for name in wanted:
                    info = z.getinfo(members[name])
                    nbytes = member_size(z, info, size, f"{where} array {name!r}", valid)
                    with z.open(info) as member:
                        arrays[name] = read_npy(member, nbytes, f"{where} array {name!r}", valid)
                return arrays
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as e:
            raise UserError(f"{where}: not a readable .npz archive ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                            f"expected {valid}") from None


def read_cached_npz(path: Path, names: Sequence[str]) -> dict[str, np.ndarray] | None:
    """Arrays of a cache file under `data.cache_dir`, or None when it is absent or unreadable (the caller
    regenerates and rewrites it). Something other than a regular file there is an error: it is not ours to replace.
    """
    what = describe(path)
    if what is None:
        return None
    if not what.startswith("a regular file"):
        raise UserError(f"cache file {str(path)!r}: not a regular file but {what}; remove it, or set data.cache_dir "
                        "to a folder of your own")
    try:
        return read_npz(path, "cache file", "an .npz written by transferlab", names)
    except UserError as e:
        log.warning("%s; rebuilding it", e)
        return None
