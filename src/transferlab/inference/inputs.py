"""New inputs, read in batches so memory stays constant however large the file is.

`read_batches(path, batch_size)` yields (ids, items, kind) per batch, `kind` saying what the items
are for `Preprocessor.encode`:

- a table (.csv .tsv .jsonl .ndjson .parquet): rows as dicts ("row"); ids from `id_column`, else the row number
- a text file (.txt): one example per line ("text"); ids are line numbers
- a folder of images (flat, no class subfolders): files in sorted order ("image"); ids are file names
- an .npz: the array `x` (or its only array), read row block by row block from the archive ("array")
"""

import contextlib
import csv
import json
import math
import zipfile
import zlib
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.data.user_files import member_size
from transferlab.errors import InputError, UserError
from transferlab.utils.file_kind import describe

TABLES = {".csv": ",", ".tsv": "\t", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
IMAGES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
Batch = tuple[list[Any], list[Any], str]


def input_kind(path: str | Path) -> str:
    """"table", "text", "images" or "npz"; anything else is a one-line error naming the forms read."""
    p = Path(str(path)).expanduser()
    what = describe(p)  # from metadata only: a FIFO or /dev/zero is never opened
    if what is None:
        raise InputError(f"input={str(path)!r}: no such file or folder")
    if what.startswith("a directory"):
        return "images"
    if not what.startswith("a regular file"):
        raise InputError(f"input={str(path)!r}: not a regular file or a folder but {what}")
    suffix = p.suffix.lower()
    if suffix in TABLES:
        kind = "table"
    elif suffix == ".txt":
        kind = "text"
    elif suffix == ".npz":
        kind = "npz"
    else:
        raise InputError(f"input={str(path)!r}: read are tables ({', '.join(TABLES)}), .txt (one example per line), "
                         ".npz, or a folder of images")
    if p.stat().st_size == 0:
        raise InputError(f"input={str(path)!r}: the file is empty")
    return kind


def read_batches(path: str | Path, batch_size: int, id_column: str | None = None) -> Iterator[Batch]:
    p = Path(str(path)).expanduser()
    kind = input_kind(p)
    if kind == "table":
        yield from _table(p, batch_size, id_column)
    elif kind == "text":
        yield from _text(p, batch_size)
    elif kind == "images":
        yield from _images(p, batch_size)
    else:
        yield from _npz(p, batch_size)


def count_items(path: str | Path) -> int | None:
    """How many items a folder or .npz holds (cheap to know); None for tables and text (streamed)."""
    p = Path(str(path)).expanduser()
    kind = input_kind(p)  # never opens what is not a regular file or a folder (a symlink to /dev/zero)
    if kind == "images":
        return len(image_files(p))
    if kind == "npz":
        with _npz_array(p) as (_, shape, _):
            return int(shape[0]) if shape else 1
    return None


# -- tables -----------------------------------------------------------------------------------------
def _table(p: Path, batch_size: int, id_column: str | None) -> Iterator[Batch]:
    how = TABLES[p.suffix.lower()]
    rows = _parquet_rows(p, batch_size) if how == "parquet" else _jsonl_rows(p) if how == "jsonl" else _csv_rows(p, how)
    start, seen = 0, False
    while batch := list(islice(rows, batch_size)):
        seen = True
        if id_column is not None and id_column not in batch[0]:
            raise InputError(f"id_column={id_column!r} is not a column of {p} (columns: {list(batch[0])})")
        ids = [r.get(id_column) for r in batch] if id_column else list(range(start, start + len(batch)))
        start += len(batch)
        yield ids, batch, "row"
    if not seen:
        raise InputError(f"input={str(p)!r}: the table has no rows")


def _csv_rows(p: Path, delimiter: str) -> Iterator[dict[str, Any]]:
    with open(p, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f, delimiter=delimiter):
            yield {k: v for k, v in row.items() if k is not None}


def _jsonl_rows(p: Path) -> Iterator[dict[str, Any]]:
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"input={str(p)!r}: line {i} is not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"input={str(p)!r}: line {i} is not a JSON object")
            yield row


def _parquet_rows(p: Path, batch_size: int) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("reading Parquet needs pyarrow: pip install 'transferlab[data]'") from None
    for record_batch in pq.ParquetFile(p).iter_batches(batch_size=batch_size):
        yield from record_batch.to_pylist()


# -- text lines -------------------------------------------------------------------------------------
def _text(p: Path, batch_size: int) -> Iterator[Batch]:
    def lines() -> Iterator[tuple[int, str]]:
        with open(p, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if line.strip():
                    yield i, line.rstrip("\r\n")

    it, seen = lines(), False
    while batch := list(islice(it, batch_size)):
        seen = True
        yield [i for i, _ in batch], [t for _, t in batch], "text"
    if not seen:
        raise InputError(f"input={str(p)!r}: the file has no non-empty line")


# -- images -----------------------------------------------------------------------------------------
def image_files(p: Path) -> list[Path]:
    subfolders = [d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGES)
    if not files:
        hint = f" (it has subfolders {sorted(subfolders)[:5]}: give a flat folder of images)" if subfolders else ""
        raise InputError(f"input={str(p)!r}: no images ({', '.join(IMAGES)}){hint}")
    return files


def _images(p: Path, batch_size: int) -> Iterator[Batch]:
    files = image_files(p)
    for i in range(0, len(files), batch_size):
        chunk = files[i : i + batch_size]
        yield [f.name for f in chunk], chunk, "image"


# -- .npz -------------------------------------------------------------------------------------------
def _npz_member(z: zipfile.ZipFile, p: Path) -> str:
    names = [n for n in z.namelist() if n.endswith(".npy")]
    if "x.npy" in names:
        return "x.npy"
    if len(names) == 1:
        return names[0]
    raise InputError(f"input={str(p)!r}: an .npz needs an array named x (or a single array); it has {[n[:-4] for n in names]}")


def _npy_header(f, p: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except (ValueError, EOFError) as e:  # numpy's words for a bad magic string or header
        raise InputError(f"input={str(p)!r}: x is not a valid .npy array ({(str(e).splitlines() or [''])[0]})") from None
    if fortran or dtype.hasobject or dtype.kind not in "biuf":
        raise InputError(f"input={str(p)!r}: x must be a C-ordered numeric array")
    return shape, fortran, dtype


@contextlib.contextmanager
def _npz_array(p: Path) -> Iterator[tuple[Any, tuple[int, ...], np.dtype]]:
    """The archive's x member, read up to its data, with its shape and dtype. The sizes the archive and the
    header claim must be the bytes the file holds (data/user_files.py), so a truncated or edited file, or a
    zip bomb claiming 10**12 rows, is one line before a row is read."""
    where = f"input={str(p)!r}"
    try:
        with zipfile.ZipFile(p) as z:
            info = z.getinfo(_npz_member(z, p))
            try:
                nbytes = member_size(z, info, p.stat().st_size, f"{where} array x", "an .npz with an array x")
            except UserError as e:
                raise InputError(str(e)) from None
            with z.open(info) as f:
                shape, fortran, dtype = _npy_header(f, p)
                need = math.prod(shape) * dtype.itemsize
                if need != nbytes - f.tell():
                    raise InputError(f"{where}: x's header says shape {list(shape)} of {dtype} ({need:,} bytes), but the "
                                     f"archive holds {nbytes - f.tell():,} bytes of data (truncated or edited?)")
                yield f, shape, dtype
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise InputError(f"{where}: not a readable .npz archive ({str(e) or type(e).__name__})") from None


def _npz(p: Path, batch_size: int) -> Iterator[Batch]:
    """Row blocks straight from the (possibly compressed) archive member: never the whole array in memory."""
    with _npz_array(p) as (f, shape, dtype):
        if len(shape) < 2 or shape[0] == 0:
            raise InputError(f"input={str(p)!r}: x has shape {list(shape)}; expected (N, *input shape) with N > 0")
        row_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        for start in range(0, shape[0], batch_size):
            n = min(batch_size, shape[0] - start)
            data = f.read(n * row_bytes)
            if len(data) != n * row_bytes:
                raise InputError(f"input={str(p)!r}: x ends after {start + len(data) // row_bytes} of {shape[0]} rows")
            block = np.frombuffer(data, dtype=dtype).reshape(n, *shape[1:])
            yield list(range(start, start + n)), list(block), "array"
