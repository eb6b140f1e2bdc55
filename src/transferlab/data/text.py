"""Text classification on top of the array datamodule: texts are tokenized once into int64 id arrays.

Subclasses say where the texts come from (`load_texts`); splits, class subsets and k-shot
subsets are the array datamodule's. The tokenizer is trained on the training pool only (never
on the fixed test split) and is exposed as `self.tokenizer` with `pad_id`, `mask_id`,
`vocab_size` mirrored as attributes for language-modeling tasks and text generation.
"""

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.data.base import ArrayDataModule
from transferlab.data.spec import DataSpec
from transferlab.data.tokenizer import (
    Tokenizer,
    build_tokenizer,
    corpus_fingerprint,
    tokenizer_from_state,
    tokenizer_state,
)
from transferlab.data.user_files import read_cached_npz
from transferlab.errors import ConfigError
from transferlab.utils.io import atomic_open


class TextDataModule(ArrayDataModule):
    """Token ids of shape (max_length,), right-padded with `pad_id`."""

    modality = "text"
    corpus_name = "text"

    def __init__(self, max_length: int = 256, tokenizer: dict[str, Any] | None = None,
                 cache_dir: str = "~/.cache/transferlab", **kwargs: Any):
        kwargs["normalize"] = False  # token ids are categorical
        super().__init__(**kwargs)
        if not isinstance(max_length, int) or max_length < 2:
            raise ConfigError("data.max_length", max_length, "an integer >= 2 ([CLS] + [SEP] at least)")
        self.max_length = max_length
        self.tokenizer_cfg = dict(tokenizer or {})
        self.cache_dir = cache_dir
        self.tokenizer: Tokenizer | None = None

    def load_texts(self) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
        """(train texts, train labels, test texts, test labels); labels are int ids into all_class_names()."""
        raise NotImplementedError

    def use_tokenizer(self, state: dict[str, Any]) -> None:
        """Read the texts with this tokenizer (`tokenizer_state` of a model trained before) instead of building
        one from `data.tokenizer`; before `setup`."""
        self.tokenizer = tokenizer_from_state(state)

    def load_arrays(self):
        texts, y, test_texts, y_test = self.load_texts()
        if self.tokenizer is None:  # else: a pretrained checkpoint's (use_tokenizer)
            self.tokenizer = build_tokenizer(texts, self.tokenizer_cfg, self.cache_dir, self.corpus_name)
        x, x_test = encode_cached(self.tokenizer, [texts, test_texts], self.max_length, self.cache_dir, self.corpus_name)
        return x, np.asarray(y, dtype=np.int64), x_test, np.asarray(y_test, dtype=np.int64)

    def _ensure_tokenizer(self) -> Tokenizer:
        self.setup()
        assert self.tokenizer is not None
        return self.tokenizer

    @property
    def vocab_size(self) -> int:
        return self._ensure_tokenizer().vocab_size

    @property
    def pad_id(self) -> int:
        return self._ensure_tokenizer().pad_id

    @property
    def mask_id(self) -> int | None:
        return self._ensure_tokenizer().mask_id

    def encode(self, texts: Sequence[str] | str) -> np.ndarray:
        """Texts -> (N, max_length) ids exactly as the training data was encoded."""
        return self._ensure_tokenizer().encode_batch([texts] if isinstance(texts, str) else list(texts), self.max_length)

    def decode(self, ids: Sequence[int]) -> str:
        return self._ensure_tokenizer().decode(ids)

    def preprocessing(self) -> dict:
        """Adds the tokenizer itself (its JSON, or a pretrained one's name) and the length ids are padded to."""
        if self.tokenizer is None:  # a table of numeric features (data/tabular.py) has no text
            return super().preprocessing()
        return {**super().preprocessing(), "max_length": self.max_length, "tokenizer": tokenizer_state(self.tokenizer)}

    @property
    def spec(self) -> DataSpec:
        tok = self._ensure_tokenizer()
        return DataSpec(self.modality, (self.max_length,), len(self.class_names), self.class_names,
                        vocab_size=tok.vocab_size, pad_id=tok.pad_id, mask_id=tok.mask_id,
                        bos_id=tok.bos_id, eos_id=tok.eos_id)


def encode_cached(tokenizer: Tokenizer, parts: list[list[str]], max_length: int, cache_dir: str | os.PathLike,
                  corpus: str) -> list[np.ndarray]:
    """Encode each list of texts; the id arrays are cached, keyed by tokenizer, max_length and the texts."""
    h = hashlib.sha1(f"{max_length}|".encode())
    h.update(json.dumps(tokenizer_state(tokenizer), sort_keys=True).encode())  # the tokenizer itself, not its file name
    for texts in parts:
        h.update(corpus_fingerprint(texts).encode())
    path = Path(os.path.expanduser(str(cache_dir))) / "encoded" / f"{corpus}-{max_length}-{h.hexdigest()[:12]}.npz"
    cached = read_cached_npz(path, [f"part{i}" for i in range(len(parts))])
    if cached is not None:
        return list(cached.values())
    arrays = [tokenizer.encode_batch(texts, max_length) for texts in parts]
    with atomic_open(path, "wb") as f:
        np.savez(f, **{f"part{i}": a for i, a in enumerate(arrays)})
    return arrays
