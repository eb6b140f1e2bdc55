"""PEFT methods on a bare backbone: init is a no-op, only declared tensors train, merge is exact."""

from pathlib import Path

import pytest
import torch
from conftest import compose_cfg
from omegaconf import OmegaConf
from torch import nn

from transferlab.backbones.cnn import CNN
from transferlab.backbones.transformer import Transformer
from transferlab.config.instantiate import DEFAULT_ALLOWED
from transferlab.errors import ConfigError, UserError
from transferlab.runner.build import build_adaptation
from transferlab.tasks.optim import build_optimizer

PEFT_DIR = Path(__file__).resolve().parents[1] / "conf" / "peft"
ADDING = ["lora", "dora", "ia3", "loha", "lokr", "adapter"]      # methods that add parameters
MERGEABLE = ["lora", "dora", "ia3", "loha", "lokr"]
ALL = sorted(p.stem for p in PEFT_DIR.glob("*.yaml"))


def method(name: str, **overrides):
    node = OmegaConf.merge(OmegaConf.load(PEFT_DIR / f"{name}.yaml"), overrides)
    return build_adaptation(node, DEFAULT_ALLOWED)  # without the method's optimizer defaults


def backbone(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer((1, 16), width=16, depth=2, heads=2, patch_size=4)


class Tiny(nn.Module):
    """The shape the optimizer code expects of a task: `backbone` + a head."""

    def __init__(self, bb: nn.Module):
        super().__init__()
        self.backbone = bb
        self.head = nn.Linear(bb.feature_dim, 3)

    def forward(self, x):
        return self.head(self.backbone(x))


def declared_trainable(name: str, adaptation, bb: nn.Module) -> set[str]:
    """What each method says should train, computed independently of requires_grad."""
    params = [n for n, _ in bb.named_parameters()]
    if name in ADDING:
        return set(adaptation.adapter_parameter_names(bb))
    if name == "full":
        return set(params)
    if name == "linear_probe":
        return set()
    if name == "bitfit":
        return {n for n in params if n.endswith(".bias")}
    if name == "freeze":
        first = bb.num_layers - adaptation.trainable_blocks
        return {n for n in params if bb.block_of(n) >= first}
    raise AssertionError(name)


def test_every_method_has_a_config():
    assert {"full", "linear_probe", "freeze", "bitfit", "lora", "dora", "ia3", "loha", "lokr", "adapter"} <= set(ALL)
    for name in ALL:
        node = OmegaConf.load(PEFT_DIR / f"{name}.yaml")
        assert node.name == name and str(node._target_).startswith("transferlab.adaptation.")


@pytest.mark.parametrize("name", ADDING)
def test_fresh_adapter_leaves_output_unchanged(name):
    bb = backbone()
    x = torch.randn(5, 1, 16)
    bb.eval()
    with torch.no_grad():
        before = bb(x)
    adaptation = method(name)
    bb = adaptation.attach(bb)
    bb.eval()
    with torch.no_grad():
        after = bb(x)
    assert adaptation.adapter_parameter_names(bb), "the method added no parameters"
    assert (after - before).abs().max().item() <= 1e-6


@pytest.mark.parametrize("name", ALL)
def test_only_declared_parameters_change(name):
    bb = backbone()
    adaptation = method(name)
    model = Tiny(adaptation.attach(bb))
    declared = declared_trainable(name, adaptation, model.backbone)
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable == declared
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, {"_target_": "torch.optim.AdamW", "lr": 1e-2, "weight_decay": 0.01})
    torch.manual_seed(1)
    x, y = torch.randn(8, 1, 16), torch.randint(0, 3, (8,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for n, p in model.named_parameters():
        inner = n[len("backbone."):] if n.startswith("backbone.") else None
        if inner is None or inner in declared:
            assert not torch.equal(p, before[n]), f"{n} is declared trainable but did not change"
        else:
            assert torch.equal(p, before[n]), f"frozen {n} changed"


@pytest.mark.parametrize("name", MERGEABLE)
def test_merge_equals_unmerged_and_leaves_a_plain_backbone(name):
    from peft.tuners.tuners_utils import BaseTunerLayer

    bb = backbone()
    plain_keys = set(bb.state_dict())
    adaptation = method(name)
    bb = adaptation.attach(bb)
    with torch.no_grad():  # move the adapters away from their identity init
        for _name, p in bb.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(6, 1, 16)
    bb.eval()
    with torch.no_grad():
        unmerged = bb(x)
        merged_bb = adaptation.merge(bb)
        merged = merged_bb(x)
    assert (merged - unmerged).abs().max().item() <= 1e-5
    assert not any(isinstance(m, BaseTunerLayer) for m in merged_bb.modules())
    assert set(merged_bb.state_dict()) == plain_keys
    fresh = backbone(seed=3)
    fresh.load_state_dict(merged_bb.state_dict())
    fresh.eval()
    with torch.no_grad():
        assert (fresh(x) - unmerged).abs().max().item() <= 1e-5


def test_adapter_cannot_merge_and_says_why():
    adaptation = method("adapter")
    bb = adaptation.attach(backbone())
    with pytest.raises(UserError, match="cannot be merged"):
        adaptation.merge(bb)


def test_adapter_on_cnn_blocks_keeps_output_and_names():
    torch.manual_seed(0)
    bb = CNN((1, 16), channels=(4, 8), hidden=8)
    x = torch.randn(3, 1, 16)
    bb.eval()
    with torch.no_grad():
        before = bb(x)
    adaptation = method("adapter", bottleneck=2)
    bb = adaptation.attach(bb)
    bb.eval()
    with torch.no_grad():
        assert torch.allclose(bb(x), before, atol=1e-6)
    names = adaptation.adapter_parameter_names(bb)
    assert names and all(n.startswith("blocks.") and ".adapter." in n for n in names)


def test_unknown_target_module_names_the_key_and_the_valid_layers():
    with pytest.raises(ConfigError) as err:
        method("lora", target_modules=["qkv"]).attach(backbone())
    msg = str(err.value)
    assert "peft.target_modules" in msg and "qkv" in msg and "q_proj" in msg and "fc2" in msg


def test_default_targets_are_the_backbones_lora_targets():
    adaptation = method("lora", r=2)
    bb = adaptation.attach(backbone())
    wrapped = {n.rsplit(".lora_A", 1)[0].rsplit(".", 1)[-1] for n in adaptation.adapter_parameter_names(bb) if ".lora_A." in n}
    assert wrapped == set(backbone().lora_targets) and "patch_embed" in wrapped
    # r=2 on a 16-wide layer: A (2x16) + B (16x2) per wrapped layer; fc1/fc2 are 16<->64, patch_embed 4->16
    expected = sum(2 * (m.in_features + m.out_features) for n, m in backbone().named_modules()
                   if n.rsplit(".", 1)[-1] in backbone().lora_targets)
    assert sum(p.numel() for n, p in bb.named_parameters() if p.requires_grad) == expected


def test_freeze_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="peft.trainable_blocks"):
        method("freeze", trainable_blocks=99).attach(backbone())


@pytest.mark.parametrize("name", ALL)
def test_layer_decay_lrs_follow_depth_for_every_method(name):
    decay, lr = 0.5, 1e-2
    adaptation = method(name)
    model = Tiny(adaptation.attach(backbone()))
    opt = build_optimizer(model, {"_target_": "torch.optim.AdamW", "lr": lr, "weight_decay": 0.0, "layer_decay": decay})
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    bb, depth = model.backbone, model.backbone.num_layers
    checked = 0
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert id(p) not in lr_of
            continue
        if n.startswith("head."):
            assert lr_of[id(p)] == pytest.approx(lr)
            continue
        inner = n[len("backbone."):]
        block = int(inner.split(".")[1]) + 1 if inner.startswith("blocks.") else None
        if block is not None:  # e.g. blocks.1.attn.q_proj.lora_A.default.weight -> depth 2
            assert bb.block_of(inner) == block
        assert lr_of[id(p)] == pytest.approx(lr * decay ** (depth - bb.block_of(inner)))
        checked += 1
    if name != "linear_probe":
        assert checked > 0


def test_every_peft_option_composes_and_attaches():
    for name in ALL:
        cfg = compose_cfg(["task=finetune", "model=transformer", f"peft={name}", "optimizer.layer_decay=0.8"])
        adaptation = build_adaptation(cfg.peft, tuple(cfg.allowed_targets))
        assert adaptation.name == name
        bb = adaptation.attach(backbone())
        assert any(p.requires_grad for p in bb.parameters()) == (name != "linear_probe")
