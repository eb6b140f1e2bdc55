"""The batched view of in-memory tensors yields exactly the plain loader's batches (data/tensor_batches.py)."""

import torch
from torch.utils.data import DataLoader, TensorDataset

from transferlab.data.resumable import shuffled_loader
from transferlab.data.tensor_batches import TensorBatches, as_batch, batched_view


def _data(n: int = 53) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 1, 12, generator=g), torch.randint(0, 5, (n,), generator=g))


def _batches(loader, epochs: int = 2) -> list[list[torch.Tensor]]:
    out = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch) if hasattr(loader.sampler, "set_epoch") else None
        out += [list(b) for b in loader]
    return out


def assert_same(a, b):
    assert len(a) == len(b) > 0
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and xa.dtype == xb.dtype and ya.dtype == yb.dtype


def test_shuffled_batches_equal_the_collated_ones_and_resume_alike():
    ds = _data()
    plain = shuffled_loader(ds, 8)
    view, kwargs = batched_view(ds)
    assert isinstance(view, TensorBatches) and kwargs == {"collate_fn": as_batch}
    fast = shuffled_loader(view, 8, **kwargs)
    assert_same(_batches(plain), _batches(fast))
    # mid-epoch resume: the same position restores the same remaining batches
    for loader in (plain, fast):
        loader.sampler.set_epoch(1)
        it = iter(loader)
        next(it), next(it)
        loader.state = loader.state_dict()
    resumed = []
    for loader in (plain, fast):
        fresh = shuffled_loader(loader.dataset, 8, collate_fn=loader.collate_fn)
        fresh.load_state_dict(loader.state)
        fresh.sampler.set_epoch(1)
        resumed.append([list(b) for b in fresh])
    assert_same(*resumed)
    assert len(resumed[0]) == 7 - 2  # 53 samples = 7 batches of 8, two already drawn


def test_sequential_and_worker_loaders_match():
    ds = _data(20)
    view, kwargs = batched_view(ds)
    assert_same([list(b) for b in DataLoader(ds, batch_size=6)], [list(b) for b in DataLoader(view, batch_size=6, **kwargs)])
    assert batched_view(view)[0] is view  # anything but a plain TensorDataset is left alone


def test_datamodule_loaders_use_the_view(tmp_path):
    from conftest import compose_cfg

    from transferlab.runner.build import build_datamodule

    dm = build_datamodule(compose_cfg(["data=digits"], tmp_path))
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert isinstance(dm.train_dataloader().dataset, TensorBatches)
    assert x.shape == (dm.batch_size, *dm.spec.input_shape) and y.dtype == torch.long
