"""MNIST-1D, generated locally by the `mnist1d` package (never downloaded), cached on disk."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from transferlab.data.base import ArrayDataModule
from transferlab.data.splits import select_classes
from transferlab.data.user_files import read_cached_npz
from transferlab.errors import ConfigError
from transferlab.utils.io import atomic_open

# The generator's knobs and the package's defaults (mnist1d.data.get_dataset_args).
GENERATOR_DEFAULTS = {
    "num_samples": 5000, "train_split": 0.8, "template_len": 12, "padding": [36, 60],
    "scale_coeff": 0.4, "max_translation": 48, "corr_noise_scale": 0.25, "iid_noise_scale": 2e-2,
    "shear_scale": 0.75, "shuffle_seq": False, "final_seq_length": 40, "seed": 42,
}


def generate(args: dict, cache_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Arrays x, y, x_test, y_test for one generator setting; generated once, then read from cache."""
    key = hashlib.sha1(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(os.path.expanduser(str(cache_dir))) / f"mnist1d-{key}.npz"
    cached = read_cached_npz(path, ("x", "y", "x_test", "y_test"))
    if cached is not None:
        return cached
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    data = make_dataset(ObjectView(dict(args)))
    arrays = {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)
    return arrays


class MNIST1DDataModule(ArrayDataModule):
    """Signals of shape (1, 40). `generator` overrides the package's default generation.

    `test_shifts: {name: {knob: value}}` adds shifted test sets: the test split of a generation
    whose knobs (translation, noise scales, shear, scale) are overridden on top of `generator`.
    """

    modality = "signal"

    def __init__(self, cache_dir: str = "~/.cache/transferlab", generator: dict | None = None,
                 test_shifts: dict[str, dict] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cache_dir = cache_dir
        self.generator = {**GENERATOR_DEFAULTS, **dict(generator or {})}
        self.test_shifts = {str(k): dict(v or {}) for k, v in dict(test_shifts or {}).items()}
        for name, knobs in self.test_shifts.items():
            unknown = sorted(set(knobs) - set(GENERATOR_DEFAULTS))
            if unknown:
                raise ConfigError(f"data.test_shifts.{name}", unknown, f"generator knobs from {sorted(GENERATOR_DEFAULTS)}")

    def load_arrays(self):
        d = generate(self.generator, self.cache_dir)
        f32 = np.float32
        return d["x"].astype(f32)[:, None], d["y"].astype(np.int64), d["x_test"].astype(f32)[:, None], d["y_test"].astype(np.int64)

    def extra_test_sets(self, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        sets = super().extra_test_sets(x_test, y_test)
        for name, knobs in self.test_shifts.items():
            d = generate({**self.generator, **knobs}, self.cache_dir)
            sets[name] = select_classes(d["x_test"].astype(np.float32)[:, None], d["y_test"].astype(np.int64), self.classes)
        return sets

    def all_class_names(self) -> list[str]:
        return [str(i) for i in range(10)]
