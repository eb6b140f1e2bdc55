"""Hugging Face `datasets` as a source of tables (text or numeric features + a label column).

`dataset` is anything `datasets.load_dataset` takes: a hub dataset (`ag_news`), or a builder over
local files (`csv`, `json`, `parquet` with `data_files`). Columns then go through the same path
as a local table (`tabular.py`). A `ClassLabel` label column keeps the dataset's own ids and
names. `datasets` is imported only here; without it the error says how to install it.
"""

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from transferlab.data.tabular import Columns, TableDataModule
from transferlab.data.user_files import require_file
from transferlab.errors import ConfigError, UserError


def _local_paths(data_files: Any) -> list[str]:
    """The entries of `data_files` (a path, a list, or {split: path or list}) that name something on this disk:
    `datasets` reports a FIFO, a device or a directory there as "Unable to find", so they are checked here first."""
    if isinstance(data_files, str):
        return [data_files] if os.path.lexists(os.path.expanduser(data_files)) else []
    if isinstance(data_files, Mapping):
        return [p for v in data_files.values() for p in _local_paths(v)]
    if isinstance(data_files, Iterable):
        return [p for v in data_files for p in _local_paths(v)]
    return []


class HFDataModule(TableDataModule):
    """`datasets.load_dataset(dataset, subset, data_files=...)`; `train_split` + `test_split` (null = a fixed test_fraction)."""

    def __init__(self, dataset: str | None = None, subset: str | None = None, data_files: Any = None,
                 train_split: str = "train", test_split: str | None = "test", revision: str | None = None, **kwargs: Any):
        super().__init__(path=None, **kwargs)
        self.dataset_name, self.subset, self.data_files = dataset, subset, data_files
        self.train_split, self.test_split, self.revision = train_split, test_split, revision
        self.corpus_name = Path(str(dataset or "hf")).name
        self._class_names: list[str] | None = None

    def _load(self, split: str, key: str) -> Any:
        try:
            import datasets
        except ImportError:
            raise UserError("data=hf needs the Hugging Face `datasets` package: pip install datasets "
                            "(or pip install 'transferlab[text]')") from None
        if not self.dataset_name:
            raise ConfigError("data.dataset", self.dataset_name,
                              "a dataset for datasets.load_dataset (a hub name, or csv/json/parquet with data.data_files)")
        for path in _local_paths(self.data_files):
            require_file(path, "data.data_files", "a CSV/JSON/Parquet file, a list of them, or a glob pattern")
        cache = str(Path(str(self.cache_dir)).expanduser() / "hf_datasets")
        try:
            available = datasets.load_dataset(self.dataset_name, self.subset, data_files=self.data_files,
                                              revision=self.revision, cache_dir=cache)
        except (FileNotFoundError, ConnectionError, OSError, ValueError) as e:
            raise ConfigError("data.dataset", self.dataset_name,
                              "a dataset datasets.load_dataset can load here (offline: local files via "
                              f"data.dataset=csv|json|parquet data.data_files=...); datasets said: {str(e).splitlines()[0]}") from None
        if split not in available:
            raise ConfigError(key, split, f"a split of {self.dataset_name!r}: {list(available)}"
                              + (" (or null to hold out a fixed test_fraction)" if key == "data.test_split" else ""))
        return available[split]

    def _columns(self, ds: Any) -> Columns:
        cols = ds.to_dict()
        feature = ds.features.get(self.label_column)
        names = getattr(feature, "names", None)
        if names:  # ClassLabel: keep the dataset's ids and names
            self._class_names = list(names)
        return cols

    def read_tables(self) -> tuple[Columns, Columns | None, str]:
        train = self._columns(self._load(self.train_split, "data.train_split"))
        test = self._columns(self._load(self.test_split, "data.test_split")) if self.test_split else None
        return train, test, f"data.dataset={self.dataset_name!r} (split {self.train_split!r})"

    def test_source(self) -> str:
        return f"data.dataset={self.dataset_name!r} (split {self.test_split!r})"

    def class_order(self, keys: Sequence[Any]) -> list[Any]:
        if self._class_names is not None:  # ClassLabel ids 0..n-1 (as label_keys gives them: floats)
            return [float(i) for i in range(len(self._class_names))]
        return super().class_order(keys)

    def class_names_for(self, order: Sequence[Any]) -> list[str]:
        return list(self._class_names) if self._class_names is not None else super().class_names_for(order)
