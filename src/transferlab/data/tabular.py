"""The user's own table: CSV/TSV, JSON Lines/JSON or Parquet, with a label column and either a text
column (-> tokenized text) or numeric feature columns (-> tabular features).

Labels map to sorted ids (numerically when every label is a number, else as strings), so the
same file always gives the same ids. Without `text_column`, every numeric column but the label
is a feature unless `feature_columns` names them. A separate `test_path` is the test set;
otherwise a fixed stratified `test_fraction` (`test_seed`) is held out, the same for every seed.
"""

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from transferlab.data.splits import HeldOutTestSplit
from transferlab.data.text import TextDataModule
from transferlab.data.user_files import file_size, open_regular
from transferlab.errors import ConfigError, UserError

log = logging.getLogger("transferlab")

Columns = dict[str, list[Any]]
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}
FORMAT_NAMES = {"csv": "CSV", "tsv": "TSV", "jsonl": "JSON Lines", "json": "JSON", "parquet": "Parquet"}


def read_table(path: str | Path, key: str = "data.path") -> Columns:
    """Columns of a CSV/TSV/JSONL/JSON/Parquet file; missing, empty, unknown or non-regular files are a clear error."""
    p = Path(str(path)).expanduser()
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise ConfigError(key, str(path), f"a file ending in one of {sorted(FORMATS)}")
    with open_regular(p, key, f"a {FORMAT_NAMES[fmt]} file") as f:
        if file_size(f) == 0:
            raise UserError(f"{key}={str(path)!r}: the file is empty")
        try:
            cols = _read(f, fmt, key, str(path))
        except UnicodeDecodeError as e:
            raise UserError(f"{key}={str(path)!r}: not a UTF-8 text file (byte {e.start} cannot be decoded): is it binary?") from None
        except csv.Error as e:
            raise UserError(f"{key}={str(path)!r}: not a readable {fmt.upper()} file ({e})") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{key}={str(path)!r}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not cols or not any(len(v) for v in cols.values()):
        raise UserError(f"{key}={str(path)!r}: the file has no rows")
    return cols


def _read_delimited(raw: BinaryIO, fmt: str, key: str, path: str) -> Columns:
    """Rows of a CSV/TSV: a duplicated column name or a row with more or fewer cells than the header is an error."""
    with io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="," if fmt == "csv" else "\t")
        header = next(reader, [])
        seen: dict[str, int] = {}
        for j, name in enumerate(header, 1):
            if name in seen:
                raise UserError(f"{key}={path!r}: column name {name!r} appears twice in the header (columns {seen[name]} "
                                f"and {j}); rename one")
            seen[name] = j
        rows = []
        for row in reader:
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                raise UserError(f"{key}={path!r}: line {reader.line_num} has {len(row)} cells, the header has "
                                f"{len(header)} (a missing or extra delimiter?)")
            rows.append(row)
    return {name: [r[j] for r in rows] for j, name in enumerate(header)}


def _read(raw: BinaryIO, fmt: str, key: str, path: str) -> Columns:
    """Columns from the opened file `raw` (closed by the caller, or by the text wrapper read over it)."""
    if fmt in ("csv", "tsv"):
        cols = _read_delimited(raw, fmt, key, path)
    elif fmt == "jsonl":
        rows = []
        with io.TextIOWrapper(raw, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise UserError(f"{key}={str(path)!r}: line {i} is not JSON ({e.msg})") from None
        cols = _rows_to_columns(rows, key, path)
    elif fmt == "json":
        with io.TextIOWrapper(raw, encoding="utf-8") as f:
            data = json.load(f)
        if isinstance(data, list):
            cols = _rows_to_columns(data, key, path)
        elif isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
            cols = {str(k): list(v) for k, v in data.items()}
        else:
            raise UserError(f"{key}={path!r}: a JSON file must hold a list of row objects or an object of column lists")
    else:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UserError(f"{key}={str(path)!r}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        try:
            cols = pq.read_table(raw).to_pydict()
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid (a ValueError) for a damaged or non-Parquet file
            raise UserError(f"{key}={path!r}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    return cols


def _rows_to_columns(rows: list[dict[str, Any]], key: str = "data.path", path: str = "") -> Columns:
    names: list[str] = []
    for i, r in enumerate(rows, 1):
        if not isinstance(r, dict):
            raise UserError(f"{key}={path!r}: row {i} is a {type(r).__name__}, not an object of column values")
        names.extend(k for k in r if k not in names)
    return {n: [r.get(n) for r in rows] for n in names}


def require_column(cols: Columns, name: str, key: str, source: str) -> list[Any]:
    if name not in cols:
        raise ConfigError(key, name, f"a column of {source}; its columns are {list(cols)}")
    return cols[name]


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip().lower() in ("", "nan", "na", "null", "none")) or (
        isinstance(v, float) and math.isnan(v))


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(str(v).strip())
    except ValueError:
        return None


def is_numeric(values: Sequence[Any]) -> bool:
    present = [v for v in values if not _is_missing(v)]
    return bool(present) and all(_as_number(v) is not None for v in present)


def label_keys(values: Sequence[Any]) -> list[Any]:
    """Labels as sortable keys: numbers when every label is one (so 2 < 10), else strings."""
    nums = [None if isinstance(v, bool) else _as_number(v) for v in values]
    if all(n is not None for n in nums):
        return nums
    return [str(v) for v in values]


def _label_name(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


class TableDataModule(HeldOutTestSplit, TextDataModule):
    """Text (with `text_column`) or tabular features (F,) from a table file; see the module docstring."""

    @classmethod
    def configured_modality(cls, node: Any) -> str:
        return "text" if node.get("text_column") else "tabular"

    def __init__(self, path: str | None = None, label_column: str = "label", text_column: str | None = None,
                 feature_columns: Sequence[str] | None = None, test_path: str | None = None,
                 normalize: bool = True, **kwargs: Any):
        super().__init__(**kwargs)
        self.path, self.test_path = path, test_path
        self.label_column, self.text_column = label_column, text_column
        self.feature_columns = list(feature_columns) if feature_columns is not None else None
        self.standardize = normalize
        self.modality = "text" if text_column else "tabular"
        self.corpus_name = Path(str(path or "table")).stem
        self._names: list[str] = []
        self.feature_names: list[str] = []
        self.feature_stats: tuple[list[float], list[float]] | None = None
        self._source = self._test_source = f"data.path={path!r}"

    # -- where the rows come from (the Hugging Face datamodule overrides this) ----------------------
    def read_tables(self) -> tuple[Columns, Columns | None, str]:
        """(train columns, test columns or None, a description of the source for errors)."""
        if not self.path:
            raise ConfigError("data.path", self.path, "the path of a CSV/TSV/JSONL/JSON/Parquet file")
        test = read_table(self.test_path, "data.test_path") if self.test_path else None
        return read_table(self.path), test, f"data.path={self.path!r}"

    def test_source(self) -> str:
        return f"data.test_path={self.test_path!r}"

    def class_order(self, keys: Sequence[Any]) -> list[Any]:
        """Label keys in id order: sorted."""
        return sorted(set(keys))

    def class_names_for(self, order: Sequence[Any]) -> list[str]:
        return [_label_name(k) for k in order]

    # -- rows -> arrays -----------------------------------------------------------------------------
    def _labels(self, cols: Columns, source: str) -> list[Any]:
        labels = require_column(cols, self.label_column, "data.label_column", source)
        missing = [i for i, v in enumerate(labels) if _is_missing(v)]
        if missing:
            raise UserError(f"{source}: column {self.label_column!r} has {len(missing)} missing label(s) (rows {missing[:5]})")
        return labels

    def check_cells(self, cols: Columns, source: str) -> None:
        """A column that mixes numbers and text, or holds inf, is an error naming the column and row (rows
        counted from 1 after the header), not a column silently dropped from the features or a NaN loss."""
        if self.text_column:
            return
        names = self.feature_columns if self.feature_columns is not None else [c for c in cols if c != self.label_column]
        for name in names:
            values = cols.get(name, [])
            numbers = [_as_number(v) if not _is_missing(v) else None for v in values]
            present = [i for i, v in enumerate(values) if not _is_missing(v)]
            text = [i for i in present if numbers[i] is None]
            if text and len(text) < len(present):
                i = text[0]
                raise UserError(f"{source}: column {name!r} row {i + 1}: {values[i]!r} is not a number (the column's other "
                                f"cells are numbers, {len(text)} are not); fix the cell, or name the feature columns with "
                                "data.feature_columns")
            if not text:
                bad = [i for i in present if not math.isfinite(numbers[i])]
                if bad:
                    i = bad[0]
                    raise UserError(f"{source}: column {name!r} row {i + 1}: {values[i]!r} is not a finite number "
                                    f"({len(bad)} such cell(s)); replace or drop those rows")

    def _split(self) -> tuple[Columns, np.ndarray, Columns, np.ndarray]:
        cols, test, source = self.read_tables()
        self._source = source
        self._test_source = test_source = source if test is None else self.test_source()
        self.check_cells(cols, source)
        if test is not None:
            self.check_cells(test, test_source)
        labels = self._labels(cols, source)
        test_labels = self._labels(test, test_source) if test is not None else []
        keys = label_keys(list(labels) + list(test_labels))
        order = self.class_order(keys)
        index = {k: i for i, k in enumerate(order)}
        self._names = self.class_names_for(order)
        y = np.asarray([index[k] for k in keys[: len(labels)]], dtype=np.int64)
        if test is not None:
            return cols, y, test, np.asarray([index[k] for k in keys[len(labels):]], dtype=np.int64)
        if len(order) < 2:
            raise UserError(f"{source}: column {self.label_column!r} has a single class ({self._names}); classification needs two or more")
        train, held = self.held_out_split(y)
        take = lambda c, idx: {k: [v[i] for i in idx] for k, v in c.items()}  # noqa: E731
        return take(cols, train), y[train], take(cols, held), y[held]

    def load_texts(self):
        cols, y, test, y_test = self._split()
        texts = require_column(cols, self.text_column, "data.text_column", self._source)
        test_texts = require_column(test, self.text_column, "data.text_column", self._test_source)
        return ["" if _is_missing(t) else str(t) for t in texts], y, ["" if _is_missing(t) else str(t) for t in test_texts], y_test

    def load_arrays(self):
        if self.text_column:
            return super().load_arrays()
        cols, y, test, y_test = self._split()
        names = self._feature_columns(cols)
        x, x_test = self._features(cols, names, self._source), self._features(test, names, self._test_source)
        self.feature_stats = None
        if self.standardize:  # per feature, from the training pool (never the test rows)
            mean, std = x.mean(0), x.std(0)
            std[std == 0] = 1.0
            x, x_test = (x - mean) / std, (x_test - mean) / std
            self.feature_stats = (mean.tolist(), std.tolist())
        self.feature_names = names
        return x.astype(np.float32), y, x_test.astype(np.float32), y_test

    def _feature_columns(self, cols: Columns) -> list[str]:
        source = self._source
        if self.feature_columns is not None:
            for c in self.feature_columns:
                require_column(cols, c, "data.feature_columns", source)
                if not is_numeric(cols[c]):
                    raise ConfigError("data.feature_columns", self.feature_columns,
                                      f"numeric columns; {c!r} is not (set data.text_column for a text column)")
            return list(self.feature_columns)
        names = [c for c in cols if c != self.label_column and is_numeric(cols[c])]
        skipped = [c for c in cols if c != self.label_column and c not in names]
        if skipped:
            log.info("data: non-numeric columns %s are not features (set data.text_column for text)", skipped)
        if not names:
            raise UserError(f"{source}: no numeric feature column besides the label {self.label_column!r} "
                            f"(columns: {list(cols)}); set data.text_column for a text column")
        return names

    def _features(self, cols: Columns, names: list[str], source: str) -> np.ndarray:
        out = np.empty((len(cols[names[0]]) if names else 0, len(names)), dtype=np.float64)
        for j, name in enumerate(names):
            values = require_column(cols, name, "data.feature_columns", source)
            missing = [i for i, v in enumerate(values) if _is_missing(v)]
            if missing:
                raise UserError(f"{source}: column {name!r} has {len(missing)} missing value(s) (rows {missing[:5]}); "
                                "fill or drop them first")
            out[:, j] = [_as_number(v) for v in values]
        return out

    def all_class_names(self) -> list[str]:
        return list(self._names)

    def preprocessing(self) -> dict:
        """Adds the columns a new table must have: the text column, or the feature columns and their statistics."""
        state = {**super().preprocessing(), "text_column": self.text_column}
        if not self.text_column:
            stats = self.feature_stats
            state.update(feature_columns=list(self.feature_names), feature_mean=stats[0] if stats else None,
                         feature_std=stats[1] if stats else None)
        return state

    @property
    def spec(self):
        if self.text_column:
            return super().spec
        from transferlab.data.base import ArrayDataModule

        return ArrayDataModule.spec.fget(self)
