"""PEFT through the real run path: metrics.json accounting, adapter file, export, resume."""

import json
import sys
from pathlib import Path

import proc_helpers
import pytest
import torch
from conftest import FAST, compose_cfg

from transferlab.runner.stage import run_stage

pytestmark = pytest.mark.slow
MODEL = ["model=transformer", "model.width=16", "model.depth=2", "model.heads=2"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain")
    run_stage(compose_cfg(["task=supervised", *MODEL, "data.classes=[0,1,2]", *FAST, "trainer.max_epochs=1"], out), out)
    return out / "checkpoints" / "last.ckpt"


def finetune(out: Path, pretrained: Path, *extra: str) -> dict:
    cfg = compose_cfg(["task=finetune", *MODEL, "peft=lora", f"task.pretrained={pretrained}", "data.classes=[3,4,5]",
                       *FAST, *extra], out)
    run_stage(cfg, out)
    return json.loads((out / "metrics.json").read_text())


def test_lora_run_counts_saves_adapter_and_exports_a_plain_backbone(pretrained, tmp_path):
    from transferlab.export import export
    from transferlab.runner.restore import restore_task
    from transferlab.utils.checkpoint import load_backbone

    allowed = ["transferlab.", "torch.optim."]

    out = tmp_path / "ft"
    m = finetune(out, pretrained, "task.save_adapter=true", "optimizer.layer_decay=0.7")
    # r=4 on q/k/v/out (16x16) and fc1/fc2 (16<->64), 2 blocks, and on patch_embed (4->16); head 16*3+3
    adapter = 2 * (4 * 4 * (16 + 16) + 2 * 4 * (16 + 64)) + 4 * (4 + 16)
    assert m["params/adapter"] == adapter
    assert m["params/trainable"] == adapter + 51
    assert m["params/trainable_pct"] == pytest.approx(100 * m["params/trainable"] / m["params/total"])
    assert m["peft"] == "lora" and m["time/step_ms"] > 0

    ckpt_dir = out / "checkpoints"
    last, small = ckpt_dir / "last.ckpt", ckpt_dir / "adapter.pt"
    assert small.stat().st_size * 3 < last.stat().st_size
    # frozen base weights in the fine-tuned checkpoint are bit-identical to the pretrained ones
    pre = torch.load(pretrained, weights_only=True)["state_dict"]
    post = torch.load(last, weights_only=True)["state_dict"]
    assert torch.equal(post["backbone.blocks.1.mlp.fc2.base_layer.weight"], pre["backbone.blocks.1.mlp.fc2.weight"])
    assert torch.equal(post["backbone.norm.weight"], pre["backbone.norm.weight"])
    lora_b = post["backbone.blocks.1.mlp.fc2.lora_B.default.weight"]
    assert not torch.equal(lora_b, torch.zeros_like(lora_b))

    x = torch.randn(7, 1, 40)
    full_task = restore_task(str(last), allowed).task
    adapter_task = restore_task(str(small), allowed).task
    full_task.eval(), adapter_task.eval()
    with torch.no_grad():
        expected = full_task(x)
        assert torch.equal(adapter_task(x), expected)

    merged = export(str(last), ["transferlab.", "torch.optim."], out=str(tmp_path / "merged.pt"))
    torch.save({"x": x, "logits": expected}, tmp_path / "io.pt")
    script = f"""
import sys, torch
from transferlab.backbones.transformer import Transformer
state = torch.load({str(merged)!r}, weights_only=True)["state_dict"]
io = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True)
bb = Transformer((1, 40), width=16, depth=2, heads=2)
bb.load_state_dict({{k[9:]: v for k, v in state.items() if k.startswith("backbone.")}})
head = torch.nn.Linear(16, 3)
head.weight.data, head.bias.data = state["head.1.weight"], state["head.1.bias"]
bb.eval()
err = (head(bb(io["x"])) - io["logits"]).abs().max().item()
assert "peft" not in sys.modules, "peft was imported"
print(err)
"""
    res = proc_helpers.run([sys.executable, "-c", script], env={"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1", "PATH": ""}, timeout=300)
    assert res.returncode == 0, res.stderr
    assert float(res.stdout.strip()) <= 1e-5
    from transferlab.backbones.transformer import Transformer

    load_backbone(Transformer((1, 40), width=16, depth=2, heads=2), merged)  # what task.pretrained=merged.pt does


def test_lora_fit_then_resume_from_last_ckpt(pretrained, tmp_path):
    out = tmp_path / "ft"
    first = finetune(out, pretrained, "trainer.max_epochs=1")
    assert first["epochs"] == 1 and first["steps"] == 4
    before = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    resumed = finetune(out, pretrained, "trainer.max_epochs=2", "resume=auto")
    assert resumed["epochs"] == 2 and resumed["steps"] == 8
    after = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    key = "backbone.blocks.0.attn.q_proj.lora_B.default.weight"
    assert not torch.equal(before[key], after[key])
    base = "backbone.blocks.0.attn.q_proj.base_layer.weight"
    assert torch.equal(before[base], after[base])


def test_a_checkpoint_whose_default_targets_changed_since_restores_on_its_own_layers(pretrained, tmp_path):
    """A LoRA run written when `target_modules: null` meant q/k/v/out_proj/fc1/fc2 (before patch_embed joined the
    transformer's defaults) is rebuilt on the layers its weights wrap, and `eval` reproduces its test accuracy."""
    from transferlab.eval import evaluate
    from transferlab.runner.restore import restore_task
    from transferlab.utils.checkpoint import load_checkpoint

    out = tmp_path / "old"
    m = finetune(out, pretrained, "peft.target_modules=[q_proj,k_proj,v_proj,out_proj,fc1,fc2]")
    ckpt_file = out / "checkpoints" / "last.ckpt"
    ckpt = load_checkpoint(ckpt_file)
    ckpt["hyper_parameters"]["config"]["peft"]["target_modules"] = None  # what an old-default run stored
    torch.save(ckpt, ckpt_file)
    names = [n for n, _ in restore_task(out, ["transferlab.", "torch.optim."]).task.named_parameters()]
    assert not any("patch_embed.lora_" in n for n in names) and any("q_proj.lora_A" in n for n in names)
    got = evaluate(compose_cfg([f"ckpt_path={ckpt_file}", "trainer.enable_progress_bar=false"], tmp_path / "eval",
                               config_name="eval"))
    assert got["test/acc"] == m["test/acc"]
