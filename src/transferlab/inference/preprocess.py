"""The preprocessing a run trained with, rebuilt from the plain state stored in its checkpoint.

`data/*.py` `preprocessing()` writes it (the data spec, normalization, feature columns and their
statistics, the tokenizer, image mode and size); `Preprocessor.encode` turns raw items of one
batch into the model's input tensor exactly as the datamodule did for training:

- text: strings -> token ids (the run's tokenizer, padded/truncated to its `max_length`)
- tabular: rows (dicts of column -> value) -> the feature columns, standardized with the training statistics
- image: image files (or their bytes) -> (C, H, W) in [0, 1], resized as in training, normalized
- arrays (.npz, JSON lists): raw arrays of the input shape, normalized as in training
"""

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferlab.errors import InputError


class Preprocessor:
    def __init__(self, state: dict[str, Any]):
        self.state = state
        spec = state["spec"]
        self.modality: str = spec["modality"]
        self.input_shape = tuple(int(s) for s in spec["input_shape"])
        self.class_names = [str(c) for c in spec["class_names"]]
        self.normalization = tuple(state["normalization"]) if state.get("normalization") else None
        self.text_column: str | None = state.get("text_column")
        self.feature_columns: list[str] | None = state.get("feature_columns")
        self.feature_mean = np.asarray(state["feature_mean"]) if state.get("feature_mean") is not None else None
        self.feature_std = np.asarray(state["feature_std"]) if state.get("feature_std") is not None else None
        self.channels: int | None = state.get("channels")
        self.resize = bool(state.get("resize"))
        self.max_length: int | None = state.get("max_length")
        self._tokenizer = None

    # -- what this model reads ----------------------------------------------------------------------
    @property
    def reads_images(self) -> bool:
        return self.channels is not None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transferlab.data.tokenizer import tokenizer_from_state

            self._tokenizer = tokenizer_from_state(self.state["tokenizer"])
        return self._tokenizer

    def describe(self) -> str:
        """The inputs this model accepts, for error messages."""
        if self.modality == "text":
            return "texts (a text file, one per line, or a table with a text column)"
        if self.modality == "tabular":
            return f"rows with numeric columns {self.feature_columns} (a CSV/TSV/JSONL/Parquet table or .npz)"
        if self.reads_images:
            return f"images ({'RGB' if self.channels == 3 else 'grey'}, {self._size_text()}; a flat folder) or .npz arrays"
        return f"arrays of shape {list(self.input_shape)} (.npz)"

    def _size_text(self) -> str:
        h, w = self.input_shape[1:]
        return f"resized to {h}x{w}" if self.resize else f"{h}x{w} pixels"

    # -- raw items -> model input -------------------------------------------------------------------
    def encode(self, items: list[Any], kind: str) -> torch.Tensor:
        """`kind`: "text" (strings), "row" (dicts), "image" (paths or bytes), "array" (arrays of the input shape)."""
        if not items:
            raise InputError("no inputs")
        if kind == "text":
            return torch.as_tensor(self.encode_texts(items))
        if kind == "row":
            return torch.as_tensor(self.encode_rows(items))
        if kind == "image":
            return torch.as_tensor(self.normalize(self.load_images(items)))
        return torch.as_tensor(self.normalize(self.check_arrays(np.asarray(items))))

    def encode_texts(self, texts: list[Any]) -> np.ndarray:
        if self.modality != "text":
            raise InputError(f"this model reads {self.describe()}, not text")
        return self.tokenizer.encode_batch(["" if t is None else str(t) for t in texts], self.max_length)

    def encode_rows(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Table rows: the text column for a text model, else the feature columns (in training order)."""
        if self.modality == "text":
            column = self.text_column or "text"
            if column not in rows[0]:
                raise InputError(f"the text column {column!r} is missing (columns: {list(rows[0])}); "
                                 "pass text_column=<name>")
            return self.encode_texts([r.get(column) for r in rows])
        if self.modality != "tabular":
            raise InputError(f"this model reads {self.describe()}, not table rows")
        missing = [c for c in self.feature_columns if c not in rows[0]]
        if missing:
            raise InputError(f"feature column(s) {missing} are missing; the model was trained on {self.feature_columns} "
                             f"(columns given: {list(rows[0])})")
        x = np.empty((len(rows), len(self.feature_columns)), dtype=np.float64)
        for i, row in enumerate(rows):
            for j, c in enumerate(self.feature_columns):
                x[i, j] = _number(row.get(c), c, i)
        if self.feature_mean is not None:
            x = (x - self.feature_mean) / self.feature_std
        return x.astype(np.float32)

    def load_images(self, files: list[Any]) -> np.ndarray:
        if not self.reads_images:
            raise InputError(f"this model reads {self.describe()}, not image files")
        from PIL import Image, UnidentifiedImageError

        mode = {1: "L", 3: "RGB"}[self.channels]
        h, w = self.input_shape[1:]
        out = np.empty((len(files), *self.input_shape), dtype=np.float32)
        for i, f in enumerate(files):
            name = f if isinstance(f, (str, Path)) else f"image {i}"
            try:
                with Image.open(io.BytesIO(f) if isinstance(f, bytes) else f) as im:
                    im = im.convert(mode)
                    if self.resize:  # as data/image_folder.py's load_images: PIL takes (W, H)
                        im = im.resize((w, h), Image.BILINEAR)
                    a = np.asarray(im, dtype=np.float32) / 255.0
            except (OSError, UnidentifiedImageError) as e:
                raise InputError(f"cannot read {name} as an image ({str(e).splitlines()[0]})") from None
            if a.shape[:2] != (h, w):
                raise InputError(f"{name} is {a.shape[0]}x{a.shape[1]} pixels; the model was trained on {h}x{w} "
                                 "(without data.image_size, new images must have the training size)")
            out[i] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return out

    def check_arrays(self, x: np.ndarray) -> np.ndarray:
        if self.modality == "text":
            raise InputError(f"this model reads {self.describe()}, not arrays")
        if x.dtype == object or not np.issubdtype(x.dtype, np.number):
            raise InputError(f"inputs must be numbers of shape {list(self.input_shape)}")
        if tuple(x.shape[1:]) != self.input_shape:
            if math.prod(x.shape[1:]) != math.prod(self.input_shape):
                raise InputError(f"inputs have shape {list(x.shape[1:])}; the model reads {list(self.input_shape)}")
            x = x.reshape(len(x), *self.input_shape)
        if self.modality == "tabular" and self.feature_mean is not None:
            x = (x - self.feature_mean) / self.feature_std
        return x.astype(np.float32)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """The training split's (mean, std), as data/base.py applied it."""
        if self.normalization is None:
            return x.astype(np.float32)
        mean, std = self.normalization
        return ((x - mean) / std).astype(np.float32)


def _number(value: Any, column: str, row: int) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        v = float(value)
    else:
        try:
            v = float(str(value).strip())
        except ValueError:
            v = math.nan
    if math.isnan(v):
        raise InputError(f"row {row}: column {column!r} holds {value!r}, not a number (fill or drop missing values first)")
    return v
