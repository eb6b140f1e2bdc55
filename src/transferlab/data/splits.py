"""Deterministic splits: class subsets, stratified validation split, k-shot and fraction subsets."""

from collections.abc import Sequence

import numpy as np


def select_classes(x: np.ndarray, y: np.ndarray, classes: Sequence[int] | None):
    """Keep only `classes`, relabelled 0..k-1 in the order given."""
    if classes is None:
        return x, y
    classes = list(classes)
    mask = np.isin(y, classes)
    remap = {c: i for i, c in enumerate(classes)}
    return x[mask], np.array([remap[int(v)] for v in y[mask]], dtype=np.int64)


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with `fraction` of every class held out."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_held = int(round(len(idx) * fraction))
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def k_shot(y: np.ndarray, labels_per_class: int, seed: int) -> np.ndarray:
    """Indices of the first `labels_per_class` examples of every class under a seeded shuffle."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        if len(idx) < labels_per_class:
            raise ValueError(f"class {int(c)} has {len(idx)} training examples, fewer than labels_per_class={labels_per_class}")
        chosen.append(idx[:labels_per_class])
    return np.sort(np.concatenate(chosen))


def fraction_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a stratified `fraction` of the examples (at least one per class)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        chosen.append(idx[: max(1, int(round(len(idx) * fraction)))])
    return np.sort(np.concatenate(chosen))


class HeldOutTestSplit:
    """Mixin for sources without a test split of their own: a fixed stratified `test_fraction`,
    drawn with `test_seed`, is held out as the test set — the same for every run seed."""

    def __init__(self, *args, test_fraction: float = 0.2, test_seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.test_fraction, self.test_seed = test_fraction, test_seed

    def held_out_split(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(train indices, test indices) of labels `y`."""
        return stratified_split(y, self.test_fraction, self.test_seed)
