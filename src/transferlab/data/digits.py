"""sklearn's bundled 8x8 handwritten digits (1797 images), offline."""

import numpy as np

from transferlab.data.base import ArrayDataModule
from transferlab.data.splits import HeldOutTestSplit


class DigitsDataModule(HeldOutTestSplit, ArrayDataModule):
    """Images of shape (1, 8, 8); a fixed test split (independent of the run seed)."""

    modality = "image"

    def load_arrays(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = digits.images.astype(np.float32)[:, None] / 16.0
        y = digits.target.astype(np.int64)
        train, test = self.held_out_split(y)
        return x[train], y[train], x[test], y[test]

    def all_class_names(self) -> list[str]:
        return [str(i) for i in range(10)]
