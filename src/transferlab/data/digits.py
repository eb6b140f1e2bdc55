"""sklearn's bundled 8x8 handwritten digits (1797 images), offline."""

import numpy as np

from transferlab.data.base import ArrayDataModule
from transferlab.data.splits import stratified_split


class DigitsDataModule(ArrayDataModule):
    """Images of shape (1, 8, 8); a fixed test split (independent of the run seed)."""

    modality = "image"

    def __init__(self, test_fraction: float = 0.2, test_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.test_fraction = test_fraction
        self.test_seed = test_seed

    def load_arrays(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = digits.images.astype(np.float32)[:, None] / 16.0
        y = digits.target.astype(np.int64)
        train, test = stratified_split(y, self.test_fraction, self.test_seed)
        return x[train], y[train], x[test], y[test]

    def all_class_names(self) -> list[str]:
        return [str(i) for i in range(10)]
