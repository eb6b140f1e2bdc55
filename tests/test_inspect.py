"""inspect (issue 18): linear CKA's sanity, per-block features of every backbone, and the command on
real fine-tuned runs (a frozen linear probe scores CKA 1 and weight change 0 in every block)."""

import copy
import json
import math

import pytest
import torch
from conftest import FAST, compose_cfg

from transferlab.backbones.cnn import CNN
from transferlab.backbones.mlp import MLP
from transferlab.backbones.transformer import Transformer
from transferlab.inspection.cka import StreamingCKA, linear_cka
from transferlab.inspection.similarity import compare
from transferlab.inspection.weights import weight_change


def test_cka_of_a_representation_with_itself_is_one_and_streaming_is_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 12, generator=g)
    y = x @ torch.randn(12, 8, generator=g) + 0.5 * torch.randn(600, 8, generator=g)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g))
    assert linear_cka(x, 3.0 * x @ q + 7.0) == pytest.approx(1.0, abs=1e-9)  # invariant to rotation, scale, shift
    whole = linear_cka(x, y)
    acc = StreamingCKA()
    for i in range(0, 600, 64):  # uneven last batch
        acc.update(x[i:i + 64], y[i:i + 64])
    assert acc.compute() == pytest.approx(whole, abs=1e-10) and 0.3 < whole < 0.99
    assert linear_cka(x, torch.randn(600, 12, generator=g)) < 0.05  # independent noise: near 0


BACKBONES = {
    "cnn": lambda: CNN((1, 40), channels=(4, 8), hidden=16),
    "mlp": lambda: MLP((1, 40), hidden=16, depth=3),
    "transformer": lambda: Transformer((1, 40), width=16, depth=2, heads=2, patch_size=4),
    "transformer_text": lambda: Transformer((12,), width=16, depth=2, heads=2, vocab_size=30, pad_id=0),
}


def _hf():
    pytest.importorskip("transformers")
    from transferlab.backbones.hf import HFBackbone

    return HFBackbone((12,), model_type="bert", vocab_size=30, pad_id=0, hidden_size=16, num_layers=2, num_heads=2,
                      intermediate_size=32)


@pytest.mark.parametrize("kind", [*BACKBONES, pytest.param("hf", marks=pytest.mark.slow)])  # slow: imports transformers
def test_every_backbone_against_its_copy_scores_one_per_block_and_no_weight_change(kind):
    torch.manual_seed(0)
    backbone = _hf() if kind == "hf" else BACKBONES[kind]()
    text = kind in ("transformer_text", "hf")
    x = torch.randint(1, 30, (96, 12)) if text else torch.randn(96, 1, 40)
    loader = [(x[i:i + 32], torch.arange(i, i + 32) % 3) for i in range(0, 96, 32)]
    result = compare(backbone, copy.deepcopy(backbone), loader, max_dim=64)
    measured = {k: v for k, v in result.cka.items() if v is not None}
    modules = dict(backbone.named_modules())
    # every block that is a module is measured, except outputs equal for every example (BERT's position embeddings)
    assert set(measured) <= {n for n in backbone.block_names() if n in modules} and len(measured) >= 3
    assert set(measured) >= {n for n in backbone.block_names() if n.startswith(("blocks.", "model.encoder.layer."))}
    assert all(v == pytest.approx(1.0, abs=1e-6) for v in measured.values()), measured
    assert result.examples == 96 and result.features.shape == (96, backbone.feature_dim)
    assert all(c["weight_change"] == 0.0 for c in weight_change(backbone, copy.deepcopy(backbone)).values())
    if kind == "transformer":  # bare-parameter blocks have no output of their own: no CKA, still a weight change
        assert result.cka["cls_token"] is None and result.cka["pos_embed"] is None
        moved = copy.deepcopy(backbone)
        with torch.no_grad():
            moved.pos_embed.mul_(1.5)
        assert weight_change(moved, backbone)["pos_embed"]["weight_change"] == pytest.approx(0.5)


def test_weight_change_is_relative_per_block_and_counts_new_parameters_apart():
    torch.manual_seed(0)
    before = CNN((1, 40), channels=(4, 8), hidden=16)
    after = copy.deepcopy(before)
    with torch.no_grad():
        after.fc.weight.mul_(1.2)
    after.blocks[0].add_module("adapter", torch.nn.Linear(4, 4))
    change = weight_change(after, before)
    fc = math.sqrt(float(before.fc.weight.pow(2).sum())) * 0.2 / math.sqrt(sum(float(p.pow(2).sum()) for p in before.fc.parameters()))
    assert change["fc"]["weight_change"] == pytest.approx(fc, rel=1e-6)
    assert change["blocks.0"]["weight_change"] == 0.0 and change["blocks.0"]["added"] > 0
    assert change["blocks.1"] == {"weight_change": 0.0, "added": 0.0, "buffer_change": 0.0}
    assert change["fc"]["buffer_change"] is None  # a linear layer has no buffers
    after.blocks[1][1].running_mean.add_(1.0)  # BatchNorm statistics move without any weight moving
    assert weight_change(after, before)["blocks.1"]["buffer_change"] > 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny pretraining run and three fine-tunes of it (linear probe, LoRA, adapter) on other classes."""
    from transferlab.runner.stage import run_stage

    root = tmp_path_factory.mktemp("inspect")
    model = ["model=cnn", "model.channels=[8,16]", "model.hidden=32"]
    run_stage(compose_cfg(["task=supervised", *model, "data.classes=[0,1,2,3,4]", *FAST, "trainer.max_epochs=3"],
                          root / "pre"), root / "pre")
    for peft in ("linear_probe", "lora", "adapter"):
        run_stage(compose_cfg(["task=finetune", *model, f"peft={peft}", f"task.pretrained={root / 'pre'}",
                               "data.classes=[5,6,7,8,9]", "data.labels_per_class=5", *FAST, "optimizer.lr=1e-2"],
                              root / peft), root / peft)
    return root


def inspect(*overrides):
    from transferlab.inspect import inspect_run

    return inspect_run(compose_cfg(list(overrides), config_name="inspect"))


@pytest.mark.slow
def test_inspect_linear_probe_is_unchanged_lora_and_adapter_are_not(runs):
    pytest.importorskip("captum")
    result = inspect(f"ckpt_path={runs / 'linear_probe'}", f"compare_to={runs / 'lora'}", "attribution_steps=4")
    out = runs / "linear_probe" / "inspect"
    saved = json.loads((out / "representation.json").read_text())
    assert [b["name"] for b in saved["blocks"]] == ["blocks.0", "blocks.1", "fc"]
    assert all(b["cka"] == pytest.approx(1.0, abs=1e-6) and b["weight_change"] == 0.0 for b in saved["blocks"])
    assert saved["knn_acc"]["pretrained"] == saved["knn_acc"]["fine-tuned"]  # the frozen backbone's features
    lora = {b["name"]: b for b in saved["runs"][1]["blocks"]}
    assert lora["fc"]["weight_change"] > 1e-4 and lora["blocks.0"]["weight_change"] == 0.0  # LoRA adapts fc only, merged
    for name in ("representation.png", "feature_maps.png", "attributions.png"):
        assert (out / name).stat().st_size > 10_000
    assert result["time/wall_s"] > 0
    adapter = inspect(f"ckpt_path={runs / 'adapter'}", "projection=null", "attribution=null")
    blocks = {b["name"]: b for b in adapter["blocks"]}
    assert blocks["blocks.0"]["weight_change"] == 0.0 and blocks["blocks.0"]["added"] > 0  # frozen base, new adapter
    assert blocks["blocks.1"]["cka"] < 1 - 1e-6  # the adapter's output is what the hook sees


@pytest.mark.slow
def test_random_init_scores_clearly_lower_than_the_pretrained_backbone_and_errors_are_one_line(runs):
    from transferlab.errors import ConfigError
    from transferlab.runner.build import build_backbone
    from transferlab.runner.restore import restore_backbone

    cfg = compose_cfg(["model=cnn", "model.channels=[8,16]", "model.hidden=32", "data.classes=[5,6,7,8,9]"])
    pre = restore_backbone(runs / "pre", list(cfg.allowed_targets), data=cfg.data, stage="test")
    torch.manual_seed(123)
    random = build_backbone(cfg, pre.datamodule.spec)
    loader = pre.datamodule.test_dataloader()
    same = compare(copy.deepcopy(pre.backbone), pre.backbone, loader).cka
    other = compare(random, pre.backbone, loader).cka
    assert same["fc"] == pytest.approx(1.0, abs=1e-9)
    assert other["fc"] < 0.9, other
    with pytest.raises(ConfigError, match="reference"):
        inspect(f"ckpt_path={runs / 'pre'}")


@pytest.mark.parametrize("kind", ["signal", "image", "text"])
def test_attributions_have_the_input_positions_and_integrated_gradients_add_up(kind, tmp_path):
    """Completeness (Sundararajan et al., 2017): IG attributions sum to f(x) - f(baseline) for the target."""
    pytest.importorskip("captum")
    import numpy as np

    from transferlab.inspection.attributions import attribute
    from transferlab.inspection.plots import attribution_plot

    torch.manual_seed(0)
    if kind == "text":
        backbone, x = Transformer((12,), width=16, depth=1, heads=2, vocab_size=30, pad_id=0), torch.randint(1, 30, (4, 12))
        x[:, 9:] = 0
        baseline = torch.zeros_like(x)
    else:
        shape = (1, 40) if kind == "signal" else (1, 8, 8)
        backbone, x = CNN(shape, channels=(4, 8), hidden=16, dropout=0.0), torch.randn(4, *shape)
        baseline = torch.zeros_like(x)
    model = torch.nn.Sequential(backbone, torch.nn.Linear(16, 3)).eval()
    target = torch.tensor([0, 1, 2, 0])
    attr = attribute(model, backbone, x, target, "integrated_gradients", steps=64, pad_id=0)
    assert attr.shape == x.shape
    with torch.no_grad():  # (for text the padding mask differs between x and the baseline: no completeness check)
        gap = model(x).gather(1, target[:, None]).squeeze(1) - model(baseline).gather(1, target[:, None]).squeeze(1)
    if kind == "text":  # the baseline is the padding token: padded positions get exactly nothing
        assert bool((attr[:, 9:] == 0).all()) and bool((attr[:, :9] != 0).any())
    else:  # ReLU/max-pool kinks: the 64-step integral is close, not exact
        assert attr.flatten(1).sum(1) == pytest.approx(gap.tolist(), abs=0.1 * float(gap.abs().max()) + 1e-3)
    saliency = attribute(model, backbone, x, target, "saliency")
    assert saliency.shape == x.shape and bool((saliency >= 0).all())
    decode = (lambda t: f"w{t}") if kind == "text" else None
    path = attribution_plot(x.numpy(), attr.numpy(), target.numpy(), np.array([0, 1, 1, 0]), "integrated_gradients",
                            tmp_path / f"{kind}.png", decode=decode, pad_id=0 if decode else None)
    assert path.stat().st_size > 5_000


def test_inspect_refuses_unknown_options_in_one_line_before_loading_anything(tmp_path):
    from transferlab.errors import ConfigError
    from transferlab.inspect import ATTRIBUTIONS as ENTRY_ATTRIBUTIONS
    from transferlab.inspect import PROJECTIONS as ENTRY_PROJECTIONS
    from transferlab.inspection.attributions import METHODS as ATTRIBUTIONS
    from transferlab.inspection.projection import METHODS as PROJECTIONS

    assert (ENTRY_PROJECTIONS, ENTRY_ATTRIBUTIONS) == (PROJECTIONS, ATTRIBUTIONS)
    for bad, key in (("projection=mds", "projection"), ("attribution=lime", "attribution"), ("max_dim=0", "max_dim")):
        with pytest.raises(ConfigError, match=key):
            inspect(f"ckpt_path={tmp_path / 'missing'}", bad)


@pytest.mark.parametrize("method", ["pca", pytest.param("tsne", marks=pytest.mark.slow)])  # t-SNE: ~1 min here
def test_feature_maps_are_2d_and_knn_accuracy_tells_separated_classes_from_noise(method):
    import numpy as np

    from transferlab.inspection.projection import feature_maps

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    centers = rng.normal(size=(3, 16)) * 10
    maps = feature_maps({"separated": centers[labels] + rng.normal(size=(120, 16)), "noise": rng.normal(size=(120, 16))},
                        labels, method)
    assert maps["separated"]["xy"].shape == (120, 2)
    assert maps["separated"]["knn_acc"] == 1.0 and maps["noise"]["knn_acc"] < 0.6
