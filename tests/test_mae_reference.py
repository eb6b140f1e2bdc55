"""MAE (He et al. 2022) reference properties of `task=masked` on signals and images, one test each."""

import pytest
import torch
from torch import nn

from transferlab.adaptation.linear_probe import LinearProbe
from transferlab.backbones.transformer import Transformer
from transferlab.data.spec import DataSpec
from transferlab.errors import ConfigError
from transferlab.tasks.finetune import FinetuneTask
from transferlab.tasks.masked import MaskedTask

OPT = {"_target_": "torch.optim.AdamW", "lr": 3e-3, "weight_decay": 0.0}
SCHED = {"name": "constant"}
SPEC = DataSpec("signal", (1, 40), 2, ("a", "b"))


def mae(**kwargs) -> MaskedTask:
    torch.manual_seed(0)
    backbone = Transformer(SPEC.input_shape, width=32, depth=2, heads=4, patch_size=4)
    return MaskedTask(backbone, SPEC, OPT, SCHED, name="masked", probe={"enabled": False}, **kwargs).eval()


def x_and_mask(task: MaskedTask, b: int = 4, seed: int = 0):
    x = torch.randn(b, 1, 40, generator=torch.Generator().manual_seed(seed))
    return (x, *task.random_masking(b, task.backbone.num_patches, x.device, torch.Generator().manual_seed(seed)))


def with_hidden_patches_replaced(task: MaskedTask, x: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """x with every hidden patch's values replaced by large noise (visible patches untouched)."""
    p = task.backbone.patch_size
    hidden = masked.bool().repeat_interleave(p, dim=1)[:, None]
    return torch.where(hidden, 100 * torch.randn_like(x), x)


def test_defaults_are_the_recipe_chosen_on_validation(compose_fn):
    """conf/task/masked.yaml = the class defaults = experiments/masked_recipe's choice (mask 0.5, pixel loss;
    task=contrastive's signal augmentation for 200 epochs)."""
    cfg = compose_fn(["task=masked", "model=transformer"])
    assert cfg.task.mask_ratio == 0.5 and cfg.task.norm_pix_loss is False
    assert cfg.task.augment.signal == compose_fn(["task=contrastive"]).task.augment.signal and cfg.task.augment.image is None
    assert cfg.trainer.max_epochs == 200 and cfg.trainer.check_val_every_n_epoch == 1
    assert cfg.task.probe.linear.enabled is False and cfg.task.probe.knn.enabled is False
    task = mae()
    assert task.mask_ratio == 0.5 and task.norm_pix_loss is False
    reference = mae(mask_ratio=0.75)  # MAE's ratio: 25 % of the 10 patches stay visible
    _, _, _, keep, masked = x_and_mask(reference)
    assert keep in (2, 3) and masked.sum(1).eq(10 - keep).all()


def test_encoder_output_does_not_depend_on_hidden_patch_values():
    task = mae()
    x, order, _, keep, masked = x_and_mask(task)
    with torch.no_grad():
        a = task.encode_visible(x, order, keep)
        b = task.encode_visible(with_hidden_patches_replaced(task, x, masked), order, keep)
    assert a.shape == (4, 1 + keep, 32)  # [CLS] + visible patches: no mask tokens in the encoder
    torch.testing.assert_close(a, b)


def test_loss_ignores_visible_patches():
    task = mae()
    x, order, restore, keep, masked = x_and_mask(task)
    with torch.no_grad():
        pred = task.decode(task.encode_visible(x, order, keep), restore, keep)
        target = task.targets(x)
        base = task.masked_loss(pred, target, masked)
        visible = (1 - masked)[..., None]
        garbage = pred + 50 * visible * torch.randn_like(pred)  # wrong predictions on visible patches only
        assert task.masked_loss(garbage, target, masked) == pytest.approx(float(base))
        wrong = pred + (masked[..., None] * 1.0)  # wrong on the hidden ones: the loss sees it
        assert task.masked_loss(wrong, target, masked) > base


def test_targets_are_normalised_per_patch():
    task = mae(norm_pix_loss=True)
    x = 3 + 5 * torch.randn(2, 1, 40)
    t = task.targets(x)
    torch.testing.assert_close(t.mean(-1), torch.zeros(2, 10), atol=1e-5, rtol=0)
    torch.testing.assert_close(t.var(-1), torch.ones(2, 10), atol=1e-3, rtol=0)
    raw = mae().targets(x)
    torch.testing.assert_close(raw, task.backbone.patchify(x))


def test_encoder_and_decoder_use_positions():
    task = mae()
    x = torch.randn(1, 1, 40).repeat(1, 1, 1)
    constant = torch.ones(1, 1, 40)  # every patch identical: only positions tell them apart
    order = torch.arange(10)[None]
    with torch.no_grad():
        enc = task.encode_visible(constant, order, 3)[0, 1:]
        assert not torch.allclose(enc[0], enc[1], atol=1e-4)  # same patch values, different positions
        # every hidden position gets the same mask token: the decoder still predicts differently per position
        pred = task.decode(task.encode_visible(x, order, 3), order.argsort(1), 3)[0, 3:]
        assert not torch.allclose(pred[0], pred[1], atol=1e-4)
    assert task.decoder_pos.shape == (1, 11, task.decoder_embed.out_features)


def test_probe_reads_pooled_features_of_the_full_unmasked_input():
    task = mae()
    x = torch.randn(4, 1, 40)
    with torch.no_grad():
        feats = task.probe_features(x)
        torch.testing.assert_close(feats, task.backbone(x))  # every patch, no masking
        torch.testing.assert_close(feats, task.probe_features(x))  # deterministic
        changed = x.clone()
        changed[:, :, :4] += 10  # any patch changes the pooled features: none is hidden
        assert not torch.allclose(task.probe_features(changed), feats)


def test_linear_probe_normalises_features_without_trainable_parameters():
    backbone = Transformer(SPEC.input_shape, width=32, depth=2, heads=4, patch_size=4)
    task = FinetuneTask(backbone, SPEC, OPT, SCHED, name="finetune", adaptation=LinearProbe("linear_probe", feature_norm="batchnorm"))
    assert isinstance(task.head[0], nn.BatchNorm1d) and not task.head[0].affine
    trainable = [n for n, p in task.named_parameters() if p.requires_grad]
    assert trainable == ["head.2.weight", "head.2.bias"]
    plain = FinetuneTask(Transformer(SPEC.input_shape, width=32, depth=2, heads=4, patch_size=4), SPEC, OPT, SCHED,
                         name="finetune", adaptation=LinearProbe("linear_probe", feature_norm="none"))
    assert isinstance(plain.head[-1], nn.Linear) and len(plain.head) == 2
    with pytest.raises(ConfigError, match="peft.feature_norm"):
        LinearProbe("linear_probe", feature_norm="layernorm")


def test_linear_probe_head_folds_into_a_plain_linear_for_export():
    backbone = Transformer(SPEC.input_shape, width=32, depth=2, heads=4, patch_size=4)
    probe = LinearProbe("linear_probe", feature_norm="batchnorm")
    task = FinetuneTask(backbone, SPEC, OPT, SCHED, name="finetune", adaptation=probe)
    x = torch.randn(64, 1, 40)
    task.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics move away from (0, 1)
            task(3 * x + 1)
    task.eval()
    folded = probe.merge_head(task.head)
    assert [type(m) for m in folded] == [nn.Dropout, nn.Linear]  # the keys a peft=full head has
    with torch.no_grad():
        torch.testing.assert_close(folded(task.backbone(x)), task(x), atol=1e-5, rtol=1e-5)


def test_block_masking_hides_one_contiguous_run_at_varied_starts(compose_fn):
    task = mae(mask_mode="block")
    _, _, _, keep, masked = x_and_mask(task, b=64)
    assert keep == 5 and masked.sum(1).eq(5).all()
    starts = masked.argmax(1)
    for row, start in zip(masked, starts):
        assert row[start:start + 5].eq(1).all()  # the 5 hidden patches are adjacent
    assert len(set(starts.tolist())) == 6  # every start 0-5 drawn in 64 examples
    with pytest.raises(ConfigError, match="task.mask_mode"):
        mae(mask_mode="blocks")
    assert compose_fn(["task=masked", "model=transformer"]).task.mask_mode == "random"


def test_augment_reaches_training_batches_only(compose_fn):
    """`task.augment.<modality>` (MAE's training-time augmentation): a training batch is the augmented input
    (here a gain of exactly 2) and validation reads the clean one; null = off."""
    plain, doubled = mae(), mae(augment={"signal": {"amplitude": [2.0, 2.0]}, "image": None})
    assert plain.augment is None
    x = torch.randn(8, 1, 40)

    def loss(task, inputs, draws_gain: bool):
        torch.manual_seed(1)
        if draws_gain:
            torch.rand(8)  # the gain's draw, which precedes the masking's
        return task.objective(inputs, None)[0]

    with torch.no_grad():
        torch.testing.assert_close(loss(doubled, x, False), loss(plain, x, False))  # eval: clean inputs
        doubled.train(), plain.train()
        torch.testing.assert_close(loss(doubled, x, False), loss(plain, 2 * x, True))
        assert not torch.allclose(loss(doubled, x, False), loss(plain, x, True))


def test_roll_shifts_each_signal_circularly():
    from transferlab.tasks.augment import build_augment

    x = torch.arange(40.0).repeat(64, 2, 1)  # (64, 2, 40): two channels, rolled together
    out = build_augment({"signal": {"roll": 0.25}}, "signal")(x, torch.Generator().manual_seed(0))
    shifts = (out[:, 0, 0].long() * -1) % 40  # the value now at position 0 says how far it moved
    for row, k in zip(out, shifts):
        torch.testing.assert_close(row, torch.roll(x[0], int(k), dims=-1))
    signed = (shifts + 20) % 40 - 20
    assert signed.abs().max() <= 10 and len(set(signed.tolist())) > 10  # within ±25 % of 40, and varied
    with pytest.raises(ConfigError, match="task.augment.image.roll"):
        build_augment({"image": {"roll": 0.1}}, "image")
