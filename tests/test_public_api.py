"""The contracts a user's own code implements are public API: what transferlab passes a backbone and a
datamodule, and what it reads back. These tests pin them (README "Your own code: the contracts")."""

import inspect
from typing import Any

import pytest
import torch
from conftest import ROOT, compose_cfg
from torch import nn

from transferlab.backbones.base import Backbone
from transferlab.config.instantiate import widen_allowed_targets
from transferlab.data.base import ArrayDataModule
from transferlab.data.spec import DataSpec

EXAMPLE_SRC = ROOT / "examples" / "own_project" / "src"
RECORDED: dict[str, Any] = {}


class Recorder(Backbone):
    """Records the constructor arguments transferlab passes a backbone."""

    lora_targets = ("proj",)

    def __init__(self, **kwargs: Any):
        super().__init__()
        RECORDED.update(kwargs)
        self.proj = nn.Linear(int(torch.tensor(kwargs["input_shape"]).prod()), 8)
        self.feature_dim = 8

    def block_names(self) -> list[str]:
        return ["proj"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(1))


def test_build_passes_a_backbone_input_shape_vocab_size_and_pad_id_plus_its_config_keys(tmp_path):
    from transferlab.runner.build import build_backbone

    cfg = compose_cfg(["model=mlp", "model._target_=test_public_api.Recorder", "extra_allowed_targets=[test_public_api.]"],
                      output_dir=tmp_path)
    widen_allowed_targets(cfg)
    RECORDED.clear()
    build_backbone(cfg, DataSpec("text", (12,), 3, vocab_size=100, pad_id=0))
    assert RECORDED == {"input_shape": [12], "vocab_size": 100, "pad_id": 0, "hidden": 256, "depth": 3, "dropout": 0.1}


def _example_backbone():
    import sys

    sys.path.insert(0, str(EXAMPLE_SRC))
    try:
        from sinelab.backbone import TinyConv
    finally:
        sys.path.remove(str(EXAMPLE_SRC))
    return TinyConv


@pytest.mark.parametrize("name", ["cnn", "mlp", "transformer", "example"])
def test_backbones_keep_the_contract(name):
    """feature_dim, forward -> [B, feature_dim], block_names() name submodules (or parameters, such as a
    transformer's cls_token) in depth order, lora_targets are Linear layers."""
    from transferlab.runner.build import build_backbone

    shape = (1, 64)
    if name == "example":
        bb = _example_backbone()(input_shape=list(shape), vocab_size=None, pad_id=None)
    else:
        bb = build_backbone(compose_cfg([f"model={name}"]), DataSpec("signal", shape, 3))
    assert isinstance(bb, Backbone) and isinstance(bb.feature_dim, int)
    assert bb(torch.randn(5, *shape)).shape == (5, bb.feature_dim)
    names = bb.block_names()
    owned = {n for n, _ in bb.named_modules()} | {n for n, _ in bb.named_parameters()}
    assert names and set(names) <= owned
    linear = [n for n, m in bb.named_modules() if isinstance(m, nn.Linear)]
    assert bb.lora_targets and all(any(n.split(".")[-1] == t for n in linear) for t in bb.lora_targets)
    depths = [bb.block_of(n) for n, _ in bb.named_parameters()]
    assert depths == sorted(depths) and min(depths) == 0 and max(depths) == bb.num_layers - 1


def test_array_datamodule_shared_arguments_are_stable():
    expected = ["classes", "labels_per_class", "fraction", "val_fraction", "split_seed", "batch_size", "eval_batch_size",
                "num_workers", "pin_memory", "normalize", "corruptions", "severities", "shift_seed"]
    assert list(inspect.signature(ArrayDataModule.__init__).parameters)[1:] == expected


def test_a_users_datamodule_gets_splits_spec_and_loaders_from_two_methods(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE_SRC))
    from sinelab.data import SineWaves

    dm = SineWaves(per_class=20, classes=[5, 6, 7], labels_per_class=4, split_seed=1, batch_size=6)
    spec = dm.spec
    assert (spec.modality, spec.input_shape, spec.num_classes, spec.class_names) == ("signal", (1, 64), 3, ("6Hz", "7Hz", "8Hz"))
    assert torch.bincount(dm.train_set.tensors[1]).tolist() == [4, 4, 4]  # k-shot, relabelled 0..2
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (6, 1, 64) and x.dtype == torch.float32 and y.max() < 3
    assert len(dm.test_set) == 3 * 5 and dm.state_dict()["normalization"] is not None
