"""The core spine: composition of every group option, splits, backbones, hand-off, probe freezing, eval."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONF, FAST, compose_cfg
from hydra.utils import get_object

from transferlab.errors import CheckpointError, ConfigError

GROUPS = ["data", "model", "task", "peft", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment", "paths"]


def test_every_group_exists_and_every_option_composes():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for group in GROUPS:
            options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
            assert options, f"conf/{group} has no options"
            for option in options:
                cfg = compose(config_name="train", overrides=[f"{group}={option}"])
                if group == "experiment":
                    continue
                node = cfg[group]
                nodes = node.values() if group in ("logger", "callbacks") else [node]
                for target in [n.get("_target_") for n in nodes if hasattr(n, "get")]:
                    if target:
                        assert get_object(target) is not None, f"{group}={option}: {target} does not import"


def test_user_keys_exist_and_override():
    cfg = compose_cfg(["seed=3", "data.batch_size=17", "trainer.max_epochs=2", "trainer.max_steps=5", "trainer.precision=bf16-mixed"])
    assert (cfg.seed, cfg.data.batch_size, cfg.trainer.max_epochs, cfg.trainer.max_steps, cfg.trainer.precision) == (3, 17, 2, 5, "bf16-mixed")
    assert cfg.data.split_seed == 3  # splits follow the run seed


def test_experiment_recipe_is_the_quickstart():
    default, recipe = compose_cfg([]), compose_cfg(["experiment=mnist1d_transfer"])
    for key in ("data", "model", "task", "peft"):
        assert default[key] == recipe[key]


def _datamodule(name="mnist1d", **over):
    from transferlab.runner.build import build_datamodule

    cfg = compose_cfg([f"data={name}"] + [f"data.{k}={v}" for k, v in over.items()])
    dm = build_datamodule(cfg)
    dm.setup("fit")
    return dm


def test_k_shot_counts_relabelling_and_determinism():
    dm = _datamodule(classes="[5,6,7,8,9]", labels_per_class=5, split_seed=0)
    y = dm.train_set.tensors[1].numpy()
    assert np.bincount(y).tolist() == [5, 5, 5, 5, 5]
    assert set(dm.test_set.tensors[1].tolist()) == {0, 1, 2, 3, 4}
    assert dm.spec.num_classes == 5 and dm.spec.input_shape == (1, 40) and dm.class_names == ("5", "6", "7", "8", "9")
    same = _datamodule(classes="[5,6,7,8,9]", labels_per_class=5, split_seed=0)
    other = _datamodule(classes="[5,6,7,8,9]", labels_per_class=5, split_seed=1)
    assert torch.equal(dm.train_set.tensors[0], same.train_set.tensors[0])
    assert not torch.equal(dm.train_set.tensors[0], other.train_set.tensors[0])
    # the test split never depends on the seed; train and val never overlap
    assert torch.equal(dm.test_set.tensors[1], other.test_set.tensors[1])
    full = _datamodule(classes="[5,6,7,8,9]")
    _, y_pool, _, y_test = full.load_arrays()  # train + val = every pool example of the chosen classes
    assert len(full.train_set) + len(full.val_set) == int(np.isin(y_pool, [5, 6, 7, 8, 9]).sum())
    assert len(full.test_set) == int(np.isin(y_test, [5, 6, 7, 8, 9]).sum())
    train_rows = {tuple(r) for r in full.train_set.tensors[0].flatten(1).numpy().round(5)}
    val_rows = {tuple(r) for r in full.val_set.tensors[0].flatten(1).numpy().round(5)}
    assert not train_rows & val_rows


def test_digits_shapes_and_normalization_from_train_only():
    dm = _datamodule("digits", labels_per_class=10)
    x = dm.train_set.tensors[0]
    assert dm.spec.input_shape == (1, 8, 8) and len(x) == 100
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-2
    assert abs(float(dm.test_set.tensors[0].mean())) > 1e-4  # test data uses the train split's statistics


def test_labels_per_class_too_large_is_a_config_error():
    with pytest.raises(ConfigError, match="data.labels_per_class"):
        _datamodule("digits", labels_per_class=1000)


@pytest.mark.parametrize("model", ["cnn", "mlp", "transformer"])
@pytest.mark.parametrize("shape", [(1, 40), (1, 8, 8)])
def test_backbones_map_inputs_to_features_and_name_blocks(model, shape):
    from transferlab.data.spec import DataSpec
    from transferlab.runner.build import build_backbone

    cfg = compose_cfg([f"model={model}"] + (["model.patch_size=2"] if model == "transformer" else []))
    bb = build_backbone(cfg, DataSpec("image", shape, 3))
    assert bb(torch.randn(4, *shape)).shape == (4, bb.feature_dim)
    depths = [bb.block_of(n) for n, _ in bb.named_parameters()]
    assert min(depths) == 0 and max(depths) == bb.num_layers - 1


def test_transformer_reads_text_tokens_and_ignores_padding():
    from transferlab.backbones.transformer import Transformer

    bb = Transformer((12,), width=32, depth=2, heads=4, vocab_size=50, pad_id=0, pool="mean").eval()
    x = torch.randint(1, 50, (2, 12))
    x[:, 8:] = 0
    y = x.clone()
    y[:, 8:] = 0
    assert bb(x).shape == (2, 32)
    assert torch.allclose(bb(x), bb(y))


def _run(tmp_path: Path, name: str, overrides: list[str]):
    from transferlab.runner.run import train

    cfg = compose_cfg(FAST + overrides, output_dir=tmp_path / name)
    train(cfg)
    return tmp_path / name, json.loads((tmp_path / name / "metrics.json").read_text())


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pre")
    return _run(tmp, "pretrain", ["task=supervised", "data.classes=[0,1,2,3,4]"])


def test_pretrain_run_folder_and_summary(pretrained):
    folder, m = pretrained
    assert (folder / "checkpoints" / "last.ckpt").is_file() and (folder / "checkpoints" / "best.ckpt").is_file()
    for key in ("test/acc", "test/loss", "test/f1", "params/total", "params/trainable", "params/trainable_pct", "time/wall_s"):
        assert key in m, key
    assert 0.0 <= m["test/acc"] <= 1.0 and m["params/trainable_pct"] == 100.0 and m["params/trainable"] == m["params/total"]
    ckpt = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)  # plain containers only
    assert ckpt["hyper_parameters"]["config"]["task"]["name"] == "supervised"


def test_finetune_hand_off_loads_the_pretrained_backbone(pretrained, tmp_path):
    from transferlab.runner.build import build_backbone, build_datamodule, build_task

    folder, _ = pretrained
    cfg = compose_cfg(FAST + ["task=finetune", "data.classes=[5,6,7,8,9]", "data.labels_per_class=5",
                              f"task.pretrained={folder / 'checkpoints' / 'last.ckpt'}"], output_dir=tmp_path)
    dm = build_datamodule(cfg)
    task = build_task(cfg, build_backbone(cfg, dm.spec), dm.spec)
    state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for k, v in task.backbone.state_dict().items():
        assert torch.equal(v, state["backbone." + k]), k
    assert task.head[-1].out_features == 5  # a fresh head for the target classes


def test_linear_probe_freezes_backbone_and_trains_head(pretrained, tmp_path):
    folder, _ = pretrained
    out, m = _run(tmp_path, "probe", ["task=finetune", "peft=linear_probe", "data.classes=[5,6,7,8,9]",
                                      "data.labels_per_class=5", f"task.pretrained={folder}"])
    before = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    after = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    backbone_keys = [k for k in after if k.startswith("backbone.")]
    assert backbone_keys and all(torch.equal(before[k], after[k]) for k in backbone_keys)  # BN statistics included
    # the head trained away from the initialization the run started from (same seed, same build order)
    import pytorch_lightning as pl

    from transferlab.runner.build import build_backbone, build_datamodule, build_task

    fresh = compose_cfg(FAST + ["task=finetune", "peft=linear_probe", "data.classes=[5,6,7,8,9]", "data.labels_per_class=5",
                                f"task.pretrained={folder}"], output_dir=tmp_path / "fresh")
    pl.seed_everything(fresh.seed, workers=True, verbose=False)
    dm = build_datamodule(fresh)
    dm.setup("fit")
    linear = [k for k in after if k.startswith("head.") and k.endswith(".weight")][-1]  # after the feature BatchNorm
    init = build_task(fresh, build_backbone(fresh, dm.spec), dm.spec).state_dict()[linear]
    assert init.shape == after[linear].shape and not torch.equal(after[linear], init)
    assert m["params/trainable"] == 128 * 5 + 5 and 0 < m["params/trainable_pct"] < 1
    assert m["pretrained"] and m["peft"] == "linear_probe"


def test_scratch_baseline_has_no_pretrained_weights(tmp_path):
    _, m = _run(tmp_path, "scratch", ["task=finetune", "peft=linear_probe", "data.classes=[5,6,7,8,9]", "data.labels_per_class=5"])
    assert m["pretrained"] is None and m["params/trainable_pct"] < 1


def test_eval_reproduces_the_run_metrics(pretrained, tmp_path):
    from transferlab.eval import evaluate

    folder, m = pretrained
    cfg = compose_cfg([f"ckpt_path={folder}", "trainer.enable_progress_bar=false",
                       "trainer.limit_test_batches=2"], output_dir=tmp_path / "ev", config_name="eval")
    got = evaluate(cfg)  # the run's own data config (classes 0-4), from the checkpoint
    assert got["test/acc"] == m["test/acc"] and got["data"] == "mnist1d"
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["test/acc"] == m["test/acc"]


def test_missing_and_mismatched_pretrained_checkpoints_name_the_fault(pretrained, tmp_path):
    from transferlab.runner.build import build_backbone, build_datamodule, build_task

    folder, _ = pretrained
    for overrides, pattern in [
        ([f"task.pretrained={tmp_path / 'nope.ckpt'}"], "nope.ckpt does not exist"),
        ([f"task.pretrained={folder}", "model=mlp"], r"does not match model backbone: missing .*blocks\.0\.fc\.weight"),
        ([f"task.pretrained={folder}", "model.hidden=64"], r"shape mismatch fc\.bias \(128,\) vs \(64,\), fc\.weight"),
    ]:
        cfg = compose_cfg(["task=finetune", "data.classes=[5,6,7,8,9]"] + overrides, output_dir=tmp_path)
        dm = build_datamodule(cfg)
        with pytest.raises(CheckpointError, match=pattern):
            build_task(cfg, build_backbone(cfg, dm.spec), dm.spec)


def test_transfer_pipeline_writes_stages_table_and_gains(tmp_path):
    from transferlab.runner.run import train

    cfg = compose_cfg(["trainer.enable_progress_bar=false", "task.pretrain_trainer.max_epochs=1", "task.target_trainer.max_epochs=2",
                       "task.target_trainer.check_val_every_n_epoch=1", "trainer.limit_train_batches=3"], output_dir=tmp_path)
    value = train(cfg)
    for stage in ("pretrain", "finetune", "linear_probe", "scratch"):
        assert (tmp_path / stage / "metrics.json").is_file() and (tmp_path / stage / "checkpoints" / "last.ckpt").is_file()
    top = json.loads((tmp_path / "metrics.json").read_text())
    fin = json.loads((tmp_path / "finetune" / "metrics.json").read_text())
    scr = json.loads((tmp_path / "scratch" / "metrics.json").read_text())
    assert value == top["test/acc"] == fin["test/acc"]
    assert top["gain/finetune"] == pytest.approx(fin["test/acc"] - scr["test/acc"], abs=1e-4)
    assert fin["pretrained"].endswith("pretrain/checkpoints/last.ckpt") and scr["pretrained"] is None
    table = (tmp_path / "transfer.md").read_text()
    assert table.count("\n") == 5 and "linear probe" in table
