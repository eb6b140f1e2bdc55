"""Runs with shifted test sets, calibration metrics, and cross-dataset transfer through the hand-off."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import FAST, compose_cfg

from transferlab.runner.stage import run_stage

SMALL_MNIST1D = ["data=mnist1d", "data.generator.num_samples=600"]


@pytest.fixture(scope="module")
def shifted_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("shift_run")
    cfg = compose_cfg(["task=supervised", "data=digits_shift", "data.corruptions=[gaussian_noise,rotate]",
                       "data.severities=[1,5]", "trainer.limit_test_batches=null", *FAST], out)
    run_stage(cfg, out)
    return cfg, out, json.loads((out / "metrics.json").read_text())


def test_metrics_json_has_every_shift_and_their_mean(shifted_run):
    _, _, m = shifted_run
    names = ["gaussian_noise_s1", "gaussian_noise_s5", "rotate_s1", "rotate_s5"]
    for n in names:
        for k in ("acc", "f1", "loss", "ece", "nll"):
            assert f"test_shift/{n}/{k}" in m, (n, k)
    accs = [m[f"test_shift/{n}/acc"] for n in names]
    assert m["test_shift/mean_acc"] == pytest.approx(sum(accs) / len(accs), abs=1e-6)
    assert not any(k.startswith("test_shift/") and k.count("/") == 2 and k.split("/")[1] not in names
                   for k in m), "a shift that was not asked for"


def test_ece_is_a_fraction_and_nll_is_the_test_cross_entropy(shifted_run):
    """ECE in [0, 1] on every split; test/nll is the mean cross-entropy of the tested weights."""
    cfg, out, m = shifted_run
    for k, v in m.items():
        if k.endswith("/ece"):
            assert 0.0 <= v <= 1.0, k
    assert m["test/nll"] == m["test/loss"]
    from transferlab.runner.build import build_backbone, build_datamodule, build_task

    dm = build_datamodule(cfg)
    dm.setup()
    task = build_task(cfg, build_backbone(cfg, dm.spec), dm.spec)
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    task.load_state_dict(state)
    task.eval()
    for name, ds in [("test", dm.test_set), ("test_shift/rotate_s5", dm.extra_test["rotate_s5"])]:
        x, y = ds.tensors
        with torch.no_grad():
            logits = task(x)
        assert m[f"{name}/nll"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-4, abs=1e-5), name
        assert m[f"{name}/acc"] == pytest.approx(float((logits.argmax(1) == y).float().mean()), abs=1e-6), name


def test_stock_configs_have_no_shifted_sets(tmp_path):
    """Shifts are opt-in: the stock data configs add no test sets (the quickstart's cost is unchanged)."""
    for data in ("digits", "mnist1d"):
        cfg = compose_cfg([f"data={data}"], tmp_path)
        assert not cfg.data.get("corruptions") and not cfg.data.get("test_shifts")
    cfg = compose_cfg(["data=mnist1d_shift"], tmp_path)
    assert set(cfg.data.test_shifts) == {"translate_hi", "noise_hi", "shear_hi", "scale_hi"}
    assert cfg.data._target_ == compose_cfg(["data=mnist1d"], tmp_path).data._target_


@pytest.mark.slow
def test_cross_dataset_transfer_mnist1d_to_shifted_mnist1d(tmp_path):
    """Pretrain on clean MNIST-1D; fine-tune on a generation with more noise, tested on clean + shifted."""
    pre = tmp_path / "pre"
    run_stage(compose_cfg(["task=supervised", *SMALL_MNIST1D, *FAST], pre), pre)
    ft = tmp_path / "ft"
    cfg = compose_cfg(["task=finetune", f"task.pretrained={pre}", *SMALL_MNIST1D, "+data.generator.corr_noise_scale=0.5",
                       "data.test_shifts={noise_more:{corr_noise_scale:0.75}}", *FAST], ft)
    run_stage(cfg, ft)
    m = json.loads((ft / "metrics.json").read_text())
    assert m["pretrained"] == str(pre) and m["kind"] == "finetune"
    assert {"test/acc", "test_shift/noise_more/acc", "test_shift/mean_acc"} <= set(m)
    # the fine-tuned backbone started from the pretrained weights: its first layer moved only a little
    pre_w = torch.load(pre / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    ft_w = torch.load(ft / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    key = next(k for k in pre_w if k.startswith("backbone.") and k.endswith("weight"))
    moved = float((ft_w[key] - pre_w[key]).norm() / pre_w[key].norm())
    assert moved < 0.5, moved
