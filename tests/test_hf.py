"""model=hf: tiny random BERT / GPT-2 fine-tuned with LoRA through the real run path, a local
pretrained folder (weights + tokenizer) loaded offline, and clear errors when weights are missing."""

import csv
import json
import random
from pathlib import Path

import pytest
import torch
from conftest import FAST, compose_cfg

from transferlab.errors import ConfigError
from transferlab.runner.stage import run_stage

pytest.importorskip("transformers")
pytest.importorskip("peft")

WORDS = {"sport": "goal match coach league win score team".split(), "money": "bank shares profit market rate tax firm".split(),
         "tech": "phone software chip online data users web".split()}
TINY = ["model=hf", "model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=64"]


@pytest.fixture(scope="module")
def text_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hfdata") / "topics.csv"
    rng = random.Random(0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "topic"])
        for i in range(90):
            topic = list(WORDS)[i % 3]
            w.writerow([" ".join(rng.choices(WORDS[topic] + ["the", "a", "of"], k=10)), topic])
    return path


def data(path: Path) -> list[str]:
    return ["data=csv", f"data.path={path}", "data.text_column=text", "data.label_column=topic", "data.max_length=16",
            "data.tokenizer.vocab_size=120", "data.batch_size=8"]


def state(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("arch, targets, per_layer", [
    ("bert", ("query", "value"), 2 * 4 * (32 + 32)),      # r=4 on query and value (32x32)
    ("gpt2", ("c_attn",), 4 * (32 + 96)),                 # r=4 on the fused qkv Conv1D (32 -> 96)
])
def test_tiny_hf_model_lora_finetune_one_step(text_csv, tmp_path, arch, targets, per_layer):
    import pytorch_lightning as pl

    from transferlab.runner.build import build_backbone, build_datamodule

    out = tmp_path / arch
    cfg = compose_cfg(["task=finetune", "peft=lora", *TINY, f"model.model_type={arch}", *data(text_csv), *FAST,
                       "trainer.max_epochs=1", "trainer.limit_train_batches=1", "optimizer.layer_decay=0.8"], out)
    summary = run_stage(cfg, out)
    assert summary["steps"] == 1 and summary["model"] == "hf"
    assert summary["params/adapter"] == 2 * per_layer
    assert summary["params/trainable"] == summary["params/adapter"] + summary["params/head"] == 2 * per_layer + 32 * 3 + 3
    assert json.loads((out / "metrics.json").read_text())["params/adapter"] == 2 * per_layer

    # the same seed rebuilds the same random backbone: LoRA's B moved, every base weight did not
    pl.seed_everything(cfg.seed, verbose=False)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    fresh = build_backbone(cfg, dm.spec)
    assert fresh.lora_targets == targets
    trained = state(out)
    lora_b = [k for k in trained if ".lora_B." in k]
    assert len(lora_b) == 2 * len(targets) and all(trained[k].abs().sum() > 0 for k in lora_b)
    for name, tensor in fresh.state_dict().items():
        key = "backbone." + name
        if key not in trained:
            module, _, leaf = name.rpartition(".")
            key = f"backbone.{module}.base_layer.{leaf}"
        assert torch.equal(trained[key], tensor), name


def test_explicit_targets_include_gpt2_conv1d_layers(text_csv, tmp_path):
    """peft.target_modules may name GPT-2's transformers Conv1D layers, as peft itself allows."""
    cfg = compose_cfg(["task=finetune", "peft=lora", *TINY, "model.model_type=gpt2", "peft.target_modules=[c_attn,c_fc]",
                       *data(text_csv), *FAST, "trainer.max_epochs=1", "trainer.limit_train_batches=1"], tmp_path)
    summary = run_stage(cfg, tmp_path)
    assert summary["params/adapter"] == 2 * (4 * (32 + 96) + 4 * (32 + 64))  # 2 blocks: c_attn 32->96, c_fc 32->64
    with pytest.raises(ConfigError, match=r"unknown layer\(s\) \['c_atn'\].*'c_attn', 'c_fc', 'c_proj'"):
        run_stage(compose_cfg(["task=finetune", "peft=lora", *TINY, "model.model_type=gpt2", "peft.target_modules=[c_atn]",
                               *data(text_csv), *FAST], tmp_path / "typo"), tmp_path / "typo")


def test_hf_backbone_blocks_and_pooling():
    from transferlab.backbones.hf import HFBackbone

    kw = dict(hidden_size=32, num_layers=3, num_heads=2, intermediate_size=64)
    bert = HFBackbone((12,), model_type="bert", vocab_size=50, pad_id=0, **kw)
    assert bert.num_layers == 5 and bert.pool == "cls" and bert.feature_dim == 32
    depth = {n: bert.block_of(n) for n, _ in bert.named_parameters()}
    assert depth["model.embeddings.word_embeddings.weight"] == 0
    assert depth["model.encoder.layer.2.attention.self.query.weight"] == 3
    assert all(0 <= d < bert.num_layers for d in depth.values())
    gpt = HFBackbone((12,), model_type="gpt2", vocab_size=50, pad_id=0, **kw)
    assert gpt.pool == "last" and gpt.block_of("model.ln_f.weight") == 4 and gpt.lora_targets == ("c_attn",)
    # last-token pooling reads the last non-pad position: padding more does not change the features
    gpt.eval()
    x = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0], [5, 6, 7, 8, 9, 0, 0, 0, 0, 0, 0, 0]])
    h = gpt(x)
    tokens = gpt.forward_tokens(x)
    assert torch.allclose(h[0], tokens[0, 2]) and torch.allclose(h[1], tokens[1, 4])
    vit = HFBackbone((3, 8, 8), model_type="vit", **kw)
    assert vit(torch.rand(2, 3, 8, 8)).shape == (2, 32) and vit.lora_targets == ("query", "value")


def test_pretrained_local_folder_loads_weights_and_its_tokenizer(text_csv, tmp_path):
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from transferlab.data.tokenizer import train_tokenizer
    from transferlab.runner.build import build_backbone, build_datamodule

    folder = tmp_path / "tiny-bert"
    texts = [row["text"] for row in csv.DictReader(open(text_csv))]
    tok = train_tokenizer(texts, vocab_size=150, cache_dir=tmp_path, corpus="own")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok.backend, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(folder)
    torch.manual_seed(123)
    saved = BertModel(BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=64))
    saved.save_pretrained(folder)

    cfg = compose_cfg(["task=finetune", "model=hf", f"model.name_or_path={folder}", "model.pretrained=true",
                       *data(text_csv)], tmp_path / "run")
    assert cfg.data.tokenizer.pretrained == str(folder)  # model=hf hands its own tokenizer to the data
    dm = build_datamodule(cfg)
    dm.setup("fit")
    assert dm.vocab_size == len(fast) and dm.mask_id == fast.mask_token_id
    row = dm.train_set.tensors[0][0]
    assert row[0] == fast.cls_token_id
    backbone = build_backbone(cfg, dm.spec)
    got = backbone.model.state_dict()
    for name, tensor in saved.state_dict().items():
        if not name.startswith("pooler."):
            assert torch.equal(got[name], tensor), name
    # the random config's keys do nothing with name_or_path: typed, they are refused (the folder's config.json rules)
    cfg = compose_cfg(["task=finetune", "model=hf", f"model.name_or_path={folder}", "model.pretrained=true",
                       "model.num_layers=6", *data(text_csv)], tmp_path / "run2")
    with pytest.raises(ConfigError, match=r"model.num_layers=6 is invalid: its default 2 with model.name_or_path"):
        build_backbone(cfg, dm.spec)


def test_missing_weights_or_config_is_a_clear_error(text_csv, tmp_path):
    from transferlab.runner.build import build_backbone, build_datamodule

    missing = "transferlab-tests/no-such-model"
    cfg = compose_cfg(["model=hf", f"model.name_or_path={missing}", "model.pretrained=true", "model.tokenizer=null",
                       *data(text_csv)], tmp_path)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    with pytest.raises(ConfigError) as err:
        build_backbone(cfg, dm.spec)
    assert err.value.key == "model.name_or_path" and missing in str(err.value)
    cfg = compose_cfg(["model=hf", f"model.name_or_path={missing}", "model.pretrained=true", *data(text_csv)], tmp_path)
    with pytest.raises(ConfigError) as err:
        build_datamodule(cfg).setup("fit")
    assert err.value.key == "data.tokenizer.pretrained" and missing in str(err.value)
    cfg = compose_cfg(["model=hf", "model.pretrained=true", *data(text_csv)], tmp_path)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    with pytest.raises(ConfigError, match="model.name_or_path"):
        build_backbone(cfg, dm.spec)
