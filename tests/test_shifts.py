"""Distribution-shifted test sets: image corruptions (data/shifts.py) and MNIST-1D generator shifts."""

import numpy as np
import pytest

from transferlab.data.shifts import CORRUPTIONS, corrupt, corrupted_test_sets
from transferlab.errors import ConfigError


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images[:200, None].astype(np.float32) / 16.0, d.target[:200].astype(np.int64)


def test_corrupted_sets_have_the_clean_sizes_and_labels_but_differ(digits):
    x, y = digits
    sets = corrupted_test_sets(x, y, CORRUPTIONS, [1, 3])
    assert sorted(sets) == sorted(f"{c}_s{s}" for c in CORRUPTIONS for s in (1, 3))
    for name, (xs, ys) in sets.items():
        assert xs.shape == x.shape and xs.dtype == x.dtype, name
        np.testing.assert_array_equal(ys, y)
        assert np.abs(xs - x).mean() > 1e-3, name


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_increases_distance_from_clean(digits, name):
    x, _ = digits
    dist = [float(np.sqrt(((corrupt(x, name, s) - x) ** 2).mean())) for s in range(1, 6)]
    assert all(b > a for a, b in zip(dist, dist[1:])), dist


def test_corruptions_are_deterministic_per_seed(digits):
    x, _ = digits
    np.testing.assert_array_equal(corrupt(x, "gaussian_noise", 3, seed=1), corrupt(x, "gaussian_noise", 3, seed=1))
    assert not np.array_equal(corrupt(x, "gaussian_noise", 3, seed=1), corrupt(x, "gaussian_noise", 3, seed=2))
    # pixel values stay in the clean range (noise is clipped, background fills with the minimum)
    for name in CORRUPTIONS:
        out = corrupt(x, name, 5)
        assert out.min() >= x.min() - 1e-5 and out.max() <= x.max() + 1e-5, name


def test_bad_corruption_settings_name_the_key(digits):
    x, _ = digits
    with pytest.raises(ConfigError, match="data.corruptions"):
        corrupt(x, "fog", 1)
    with pytest.raises(ConfigError, match="data.severities"):
        corrupt(x, "blur", 6)
    with pytest.raises(ConfigError, match="data.corruptions"):
        corrupt(x[:, 0, 0], "blur", 1)        # (N, C, L) signals are not images


def test_digits_datamodule_adds_one_test_set_per_corruption_and_severity():
    from transferlab.data.digits import DigitsDataModule

    dm = DigitsDataModule(classes=[5, 6, 7], corruptions=["blur", "occlude"], severities=[2, 4])
    dm.setup()
    assert dm.test_set_names == ["test", "test_shift/blur_s2", "test_shift/blur_s4", "test_shift/occlude_s2", "test_shift/occlude_s4"]
    n = len(dm.test_set)
    x_clean = dm.test_set.tensors[0]
    for name, ds in dm.extra_test.items():
        assert len(ds) == n
        assert set(ds.tensors[1].tolist()) == {0, 1, 2}
        assert float((ds.tensors[0] - x_clean).abs().mean()) > 1e-3, name
    assert len(dm.test_dataloader()) == 5


def test_mnist1d_generator_shifts(tmp_path):
    from transferlab.data.mnist1d import MNIST1DDataModule

    shifts = {"noise_hi": {"corr_noise_scale": 0.6, "iid_noise_scale": 0.1}}
    dm = MNIST1DDataModule(cache_dir=str(tmp_path), generator={"num_samples": 400}, test_shifts=shifts, classes=[5, 6, 7, 8, 9])
    dm.setup()
    clean, shifted = dm.test_set.tensors, dm.extra_test["noise_hi"].tensors
    assert dm.test_set_names == ["test", "test_shift/noise_hi"]
    assert shifted[0].shape[1:] == clean[0].shape[1:] == (1, 40)
    assert set(shifted[1].tolist()) <= {0, 1, 2, 3, 4}
    # same generator seed: the shifted split holds the same underlying examples, so its size and labels match
    assert len(shifted[1]) == len(clean[1]) > 0
    assert float((shifted[0] - clean[0]).abs().mean()) > 0.1
    # cached like the main generation
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 2
    with pytest.raises(ConfigError, match="data.test_shifts.bad"):
        MNIST1DDataModule(cache_dir=str(tmp_path), test_shifts={"bad": {"max_translaton": 60}})
