"""Text -> token ids for the text datamodules: a tokenizer trained offline on the corpus, or a model's own.

Two backends behind one small interface (`encode`, `encode_batch`, `decode` and the special ids
that masked/causal language modeling need):

- `TrainedTokenizer`: Hugging Face `tokenizers` (WordPiece or byte-level BPE) trained on the
  training texts, saved as JSON under the cache folder and keyed by its config + a fingerprint of
  the corpus, so a second run is a cache hit and any config change rebuilds it.
- `PretrainedTokenizer`: `transformers.AutoTokenizer` from a hub name or local folder, for a
  Hugging Face backbone that must see the ids it was trained on.

Both `tokenizers` and `transformers` are imported lazily.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.errors import ConfigError, UserError
from transferlab.utils.io import atomic_write_text

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
KINDS = ("wordpiece", "bpe")


class TrainedTokenizer:
    """A `tokenizers.Tokenizer` with [PAD] [UNK] [CLS] [SEP] [MASK] (ids 0..4); encodes as [CLS] text [SEP]."""

    def __init__(self, backend: Any, path: Path | None = None, cache_hit: bool = False):
        self.backend = backend
        self.path = path
        self.cache_hit = cache_hit
        ids = {t: backend.token_to_id(t) for t in SPECIAL_TOKENS}
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (ids[t] for t in SPECIAL_TOKENS)
        self.bos_id, self.eos_id = self.cls_id, self.sep_id
        self.special_ids = tuple(sorted(ids.values()))
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, max_length: int | None = None, add_special_tokens: bool = True) -> list[int]:
        """Token ids of one text, truncated to `max_length` (special tokens included), unpadded."""
        ids = self.backend.encode(text, add_special_tokens=add_special_tokens).ids
        if max_length is not None and len(ids) > max_length:
            ids = ids[: max_length - 1] + [self.sep_id] if add_special_tokens else ids[:max_length]
        return ids

    def encode_batch(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        """(N, max_length) int64 ids, truncated and right-padded with `pad_id`."""
        out = np.full((len(texts), max_length), self.pad_id, dtype=np.int64)
        texts = list(texts)
        clipped = [_clip(t, max_length) for t in texts]
        for i, enc in enumerate(self.backend.encode_batch(clipped)):
            ids = enc.ids
            if len(ids) < max_length + CLIP_MARGIN and clipped[i] is not texts[i]:
                ids = self.backend.encode(texts[i]).ids  # the clip was too short: encode the whole text
            if len(ids) > max_length:
                ids = ids[: max_length - 1] + [self.sep_id]
            out[i, : len(ids)] = ids
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def __len__(self) -> int:
        return self.vocab_size


class PretrainedTokenizer:
    """`transformers.AutoTokenizer` behind the same interface (a missing pad token falls back to EOS)."""

    def __init__(self, backend: Any, name_or_path: str):
        self.backend = backend
        self.path = name_or_path
        self.cache_hit = True
        if backend.pad_token_id is None:
            if backend.eos_token is None:
                raise UserError(f"tokenizer {name_or_path!r} has neither a pad nor an eos token to pad with")
            backend.pad_token = backend.eos_token
        self.pad_id = int(backend.pad_token_id)
        self.unk_id = backend.unk_token_id
        self.mask_id = backend.mask_token_id
        self.cls_id = backend.cls_token_id if backend.cls_token_id is not None else backend.bos_token_id
        self.sep_id = backend.sep_token_id if backend.sep_token_id is not None else backend.eos_token_id
        self.bos_id = backend.bos_token_id if backend.bos_token_id is not None else self.cls_id
        self.eos_id = backend.eos_token_id if backend.eos_token_id is not None else self.sep_id
        self.special_ids = tuple(sorted(set(backend.all_special_ids)))
        self.vocab_size = len(backend)

    def encode(self, text: str, max_length: int | None = None, add_special_tokens: bool = True) -> list[int]:
        return list(self.backend(text, add_special_tokens=add_special_tokens, truncation=max_length is not None,
                                 max_length=max_length)["input_ids"])

    def encode_batch(self, texts: Sequence[str], max_length: int) -> np.ndarray:
        enc = self.backend(list(texts), truncation=True, max_length=max_length, padding="max_length")
        return np.asarray(enc["input_ids"], dtype=np.int64)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def __len__(self) -> int:
        return self.vocab_size


Tokenizer = TrainedTokenizer | PretrainedTokenizer

# Long documents are tokenized only up to a whitespace after CHARS_PER_TOKEN * max_length characters
# (the ids kept are unchanged: a clip that yields too few tokens is re-encoded in full).
CHARS_PER_TOKEN = 16
CLIP_MARGIN = 8


def _clip(text: str, max_length: int) -> str:
    limit = CHARS_PER_TOKEN * max_length
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > 0 else limit]


def corpus_fingerprint(texts: Sequence[str]) -> str:
    h = hashlib.sha1()
    for t in texts:
        h.update(t.encode("utf-8", "replace"))
        h.update(b"\0")
    return h.hexdigest()


def cache_path(cache_dir: str | os.PathLike, corpus: str, settings: dict[str, Any], fingerprint: str) -> Path:
    """Where a trained tokenizer lives: one file per (corpus name, settings, corpus contents)."""
    key = hashlib.sha1(json.dumps({**settings, "corpus": fingerprint}, sort_keys=True).encode()).hexdigest()[:12]
    return Path(os.path.expanduser(str(cache_dir))) / "tokenizers" / f"{corpus}-{settings['kind']}-{settings['vocab_size']}-{key}.json"


def train_tokenizer(texts: Sequence[str], kind: str = "wordpiece", vocab_size: int = 8000, lowercase: bool = True,
                    min_frequency: int = 2, cache_dir: str | os.PathLike = "~/.cache/transferlab",
                    corpus: str = "corpus") -> TrainedTokenizer:
    """Train (or load from cache) a WordPiece / byte-level BPE tokenizer on `texts`."""
    if kind not in KINDS:
        raise ConfigError("data.tokenizer.kind", kind, f"one of {list(KINDS)}")
    if not isinstance(vocab_size, int) or vocab_size <= len(SPECIAL_TOKENS):
        raise ConfigError("data.tokenizer.vocab_size", vocab_size, f"an integer > {len(SPECIAL_TOKENS)}")
    from tokenizers import Tokenizer as HFTokenizer

    settings = {"kind": kind, "vocab_size": vocab_size, "lowercase": bool(lowercase), "min_frequency": int(min_frequency)}
    path = cache_path(cache_dir, corpus, settings, corpus_fingerprint(texts))
    if path.is_file():
        try:
            return TrainedTokenizer(HFTokenizer.from_file(str(path)), path, cache_hit=True)
        except Exception as e:  # tokenizers raises a bare Exception on a damaged file: the cache is ours to rebuild
            logging.getLogger("transferlab").warning("tokenizer cache %s is not readable (%s); training it again",
                                                     path, (str(e).splitlines() or [""])[0][:200])
    backend = _new_tokenizer(kind, lowercase)
    trainer = _trainer(kind, vocab_size, min_frequency)
    backend.train_from_iterator(texts, trainer=trainer, length=len(texts))
    from tokenizers.processors import TemplateProcessing

    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    atomic_write_text(path, backend.to_str())
    return TrainedTokenizer(backend, path, cache_hit=False)


def _new_tokenizer(kind: str, lowercase: bool):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    if kind == "wordpiece":
        tok = HFTokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        return tok
    tok = HFTokenizer(models.BPE(unk_token="[UNK]"))
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def _trainer(kind: str, vocab_size: int, min_frequency: int):
    from tokenizers import pre_tokenizers, trainers

    if kind == "wordpiece":
        return trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                         special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    return trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)


def load_pretrained_tokenizer(name_or_path: str) -> PretrainedTokenizer:
    """A model's own tokenizer (hub name or local folder); offline and missing -> a clear error."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UserError("data.tokenizer.pretrained needs `transformers`: pip install 'transferlab[text]'") from None
    try:
        backend = AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as e:
        raise ConfigError("data.tokenizer.pretrained", name_or_path,
                          "a local tokenizer folder or a hub name available offline (download it first, "
                          f"or unset HF_HUB_OFFLINE); transformers said: {str(e).splitlines()[0]}") from None
    return PretrainedTokenizer(backend, str(name_or_path))


def tokenizer_state(tokenizer: Tokenizer) -> dict[str, Any]:
    """Plain containers that rebuild `tokenizer` without its corpus: a trained one's JSON, a pretrained one's name."""
    if isinstance(tokenizer, TrainedTokenizer):
        return {"kind": "trained", "json": tokenizer.backend.to_str()}
    return {"kind": "pretrained", "name_or_path": str(tokenizer.path)}


def tokenizer_from_state(state: dict[str, Any]) -> Tokenizer:
    """The tokenizer `tokenizer_state` described (a pretrained one must be available offline)."""
    if state.get("kind") == "trained":
        from tokenizers import Tokenizer as HFTokenizer

        return TrainedTokenizer(HFTokenizer.from_str(state["json"]))
    return load_pretrained_tokenizer(state["name_or_path"])


def build_tokenizer(texts: Sequence[str], settings: dict[str, Any], cache_dir: str | os.PathLike, corpus: str) -> Tokenizer:
    """From the `data.tokenizer` config: `pretrained` (a HF name/folder) wins, else train on `texts`."""
    settings = dict(settings or {})
    pretrained = settings.pop("pretrained", None)
    if pretrained:
        return load_pretrained_tokenizer(pretrained)
    unknown = set(settings) - {"kind", "vocab_size", "lowercase", "min_frequency"}
    if unknown:
        raise ConfigError(f"data.tokenizer.{sorted(unknown)[0]}", settings[sorted(unknown)[0]],
                          "keys of data.tokenizer are pretrained, kind, vocab_size, lowercase, min_frequency")
    return train_tokenizer(texts, cache_dir=cache_dir, corpus=corpus, **settings)
