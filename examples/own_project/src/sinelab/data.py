"""Noisy sine waves, one class per frequency: a dataset generated in memory (no files, no download)."""

import numpy as np

from transferlab.data.base import ArrayDataModule

LENGTH = 64


class SineWaves(ArrayDataModule):
    """Class k is a sine of k + 1 cycles per window with a random phase and amplitude, plus Gaussian noise.

    Everything transferlab's built-in datamodules offer (class subsets, k-shot labels, the validation
    split, normalization, loaders) comes from `ArrayDataModule`; only `load_arrays` and the class
    names are this dataset's own.
    """

    modality = "signal"

    def __init__(self, per_class: int = 200, noise: float = 0.5, data_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.per_class, self.noise, self.data_seed = per_class, noise, data_seed

    def _draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(10), n)
        t = np.linspace(0.0, 1.0, LENGTH, endpoint=False)
        phase = rng.uniform(0, 2 * np.pi, size=(len(y), 1))
        amplitude = rng.uniform(0.5, 1.5, size=(len(y), 1))
        x = amplitude * np.sin(2 * np.pi * (y[:, None] + 1) * t + phase) + self.noise * rng.standard_normal((len(y), LENGTH))
        return x.astype(np.float32)[:, None, :], y.astype(np.int64)

    def load_arrays(self):
        rng = np.random.default_rng(self.data_seed)  # the data never depends on the run seed
        x, y = self._draw(self.per_class, rng)
        x_test, y_test = self._draw(max(1, self.per_class // 4), rng)
        return x, y, x_test, y_test

    def all_class_names(self) -> list[str]:
        return [f"{k + 1}Hz" for k in range(10)]
