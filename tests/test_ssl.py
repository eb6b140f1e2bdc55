"""Self-supervised objectives: losses fall, probes stay off the backbone, kNN works, hand-off works."""

import json

import pytest
import torch

from transferlab.backbones.cnn import CNN
from transferlab.backbones.transformer import Transformer
from transferlab.callbacks.online_probes import OnlineProbes, knn_predict
from transferlab.data.spec import DataSpec
from transferlab.errors import ConfigError
from transferlab.tasks.augment import build_augment
from transferlab.tasks.causal_lm import CausalLMTask
from transferlab.tasks.contrastive import ContrastiveTask, nt_xent
from transferlab.tasks.masked import MaskedTask

OPT = {"_target_": "torch.optim.AdamW", "lr": 3e-3, "weight_decay": 0.0}
SCHED = {"name": "constant"}
PROBE = {"enabled": True, "linear": {"lr": 1e-2}, "knn": {"k": 5}}
AUG = {"signal": {"crop": [0.7, 1.0], "shift": 0.1, "amplitude": [0.8, 1.2], "noise": 0.1},
       "image": {"crop": [0.6, 1.0], "shift": 0.1, "amplitude": None, "noise": 0.1}}
VOCAB, PAD, MASK, LENGTH = 24, 0, 1, 12


def signals(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of noisy sinusoids (B, 1, 40)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    t = torch.linspace(0, 1, 40)
    x = torch.sin(2 * torch.pi * (2 + 3 * y[:, None]) * t) + 0.1 * torch.randn(n, 40, generator=g)
    return x[:, None], y


def token_ids(n: int = 16, seed: int = 0) -> torch.Tensor:
    """Synthetic text: counting sequences mod the vocabulary (ids 2..), right-padded."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(2, VOCAB, (n, 1), generator=g)
    x = 2 + (start - 2 + torch.arange(LENGTH)) % (VOCAB - 2)
    lengths = torch.randint(LENGTH // 2, LENGTH + 1, (n,), generator=g)
    return x.masked_fill(torch.arange(LENGTH) >= lengths[:, None], PAD)


def signal_spec() -> DataSpec:
    return DataSpec("signal", (1, 40), 2, ("a", "b"))


def text_spec() -> DataSpec:
    return DataSpec("text", (LENGTH,), 2, ("a", "b"), vocab_size=VOCAB, pad_id=PAD)


def tiny_transformer(spec: DataSpec) -> Transformer:
    return Transformer(spec.input_shape, width=32, depth=2, heads=4, patch_size=4, vocab_size=spec.vocab_size, pad_id=spec.pad_id)


def make(cls, backbone, spec, **kwargs):
    return cls(backbone, spec, OPT, SCHED, name=cls.__name__, probe=PROBE, **kwargs)


def loss_curve(task, x: torch.Tensor, steps: int = 30) -> tuple[float, float]:
    """Loss on a fixed batch (fixed augmentation/mask seed) before and after `steps` Adam steps."""
    opt = torch.optim.Adam([p for p in task.parameters() if p.requires_grad], lr=3e-3)

    def evaluate() -> float:
        with torch.no_grad():
            return float(task.objective(x, torch.Generator().manual_seed(0))[0])

    first = evaluate()
    task.train()
    for step in range(steps):
        loss = task.objective(x, torch.Generator().manual_seed(step % 4))[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, evaluate()


@pytest.mark.parametrize("case", ["contrastive_cnn", "contrastive_transformer", "masked_signal", "masked_text", "causal_lm"])
def test_objective_loss_falls_on_a_fixed_batch(case):
    torch.manual_seed(0)
    if case == "contrastive_cnn":
        task, x = make(ContrastiveTask, CNN((1, 40), channels=(8, 16), hidden=32), signal_spec(), augment=AUG), signals()[0]
    elif case == "contrastive_transformer":
        task, x = make(ContrastiveTask, tiny_transformer(signal_spec()), signal_spec(), augment=AUG), signals()[0]
    elif case == "masked_signal":
        task, x = make(MaskedTask, tiny_transformer(signal_spec()), signal_spec(), mask_ratio=0.5,
                       decoder={"width": 32, "depth": 1}), signals()[0]
    elif case == "masked_text":
        task, x = make(MaskedTask, tiny_transformer(text_spec()), text_spec(), mlm={"mask_ratio": 0.3, "mask_id": MASK}), token_ids()
    else:
        task, x = make(CausalLMTask, tiny_transformer(text_spec()), text_spec()), token_ids()
    first, last = loss_curve(task, x)
    # InfoNCE starts near log(2B - 1) and its floor is above 0 under random views: a smaller drop is asked
    assert last < (0.85 if case.startswith("contrastive") else 0.7) * first, (case, first, last)


def test_nt_xent_over_gathered_ranks_equals_the_global_batch():
    """DDP with gather_negatives: the mean of the ranks' losses (DDP averages their gradients) is the global batch's."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    z1, z2 = torch.randn(8, 4, requires_grad=True), torch.randn(8, 4, requires_grad=True)
    whole = nt_xent(z1, z2, 0.5)
    shards = [(z1[:4], z2[:4]), (z1[4:], z2[4:])]

    def gather(_):  # every rank's normalized projections, as all_gather(sync_grads=True) returns them
        return torch.stack([F.normalize(torch.cat(s), dim=1) for s in shards])

    ranks = sum(nt_xent(a, b, 0.5, gather, rank) for rank, (a, b) in enumerate(shards)) / 2
    assert float(ranks) == pytest.approx(float(whole), rel=1e-6)
    for g_ranks, g_whole in zip(torch.autograd.grad(ranks, [z1, z2]), torch.autograd.grad(whole, [z1, z2])):
        assert torch.allclose(g_ranks, g_whole, atol=1e-6)
    local = sum(nt_xent(a, b, 0.5) for a, b in shards) / 2  # each rank's own 2B - 2 negatives only
    assert float(local) < float(whole) - 0.1


def test_nt_xent_is_low_for_matching_views_and_high_for_random_ones():
    z = torch.eye(16)  # twins identical, all negatives orthogonal: loss = log(1 + 30 e^-10)
    assert float(nt_xent(z, z, 0.1)) == pytest.approx(float(torch.log1p(torch.tensor(30.0) * torch.exp(torch.tensor(-10.0)))), rel=1e-4)
    assert float(nt_xent(z, torch.randn(16, 16), 0.1)) > 2.0


def test_augment_is_batched_seeded_and_shape_preserving():
    x = signals(8)[0]
    aug = build_augment(AUG, "signal")
    a, b = aug(x, torch.Generator().manual_seed(1)), aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.allclose(a, x)
    img = torch.randn(4, 1, 8, 8)
    assert build_augment(AUG, "image")(img).shape == img.shape
    with pytest.raises(ConfigError, match="task.augment.text"):
        build_augment(AUG, "text")
    with pytest.raises(ConfigError, match="task.augment.signal.blur"):
        build_augment({"signal": {"blur": 1}}, "signal")


def test_online_probe_trains_its_head_without_touching_the_backbone():
    spec = signal_spec()
    task = make(ContrastiveTask, CNN((1, 40), channels=(8, 16), hidden=32), spec, augment=AUG)
    probes = task.configure_callbacks()[0]
    assert isinstance(probes, OnlineProbes)
    assert not any(n.startswith("head") or "probe" in n for n, _ in task.named_parameters())  # not in the task's optimizer
    x, y = signals()
    task.eval()  # no BatchNorm statistics update either
    before = {k: v.clone() for k, v in task.backbone.state_dict().items()}
    head_before = probes.head.weight.clone()
    losses = [probes.update(task.backbone(x), y) for _ in range(20)]  # features WITH a graph: probe must detach
    assert all(p.grad is None for p in task.backbone.parameters())
    assert all(torch.equal(before[k], v) for k, v in task.backbone.state_dict().items())
    assert not torch.equal(head_before, probes.head.weight)
    assert losses[-1] < losses[0]



@pytest.mark.parametrize(("probe", "built", "probe_metrics"), [
    ({"enabled": True, "linear": {"enabled": False}, "knn": {"enabled": False}}, False, []),  # task=masked's default
    ({"enabled": False}, False, []),
    ({"enabled": True, "linear": {"enabled": False}, "knn": {"enabled": True}}, True, ["val/knn_acc"]),
    ({"enabled": True, "linear": {"enabled": True}, "knn": {"enabled": False}}, True, ["val/linear_acc", "train/linear_loss"]),
])
def test_probes_switched_off_build_no_head_and_leave_the_random_draws_alone(probe, built, probe_metrics):
    """A head built for probes that are off would draw from the global RNG and shift the decoder's
    initialisation: both probes off must give the same weights as `probe.enabled: false`."""
    spec = signal_spec()

    def weights(probe_cfg):
        torch.manual_seed(0)
        task = MaskedTask(tiny_transformer(spec), spec, OPT, SCHED, name="masked", probe=probe_cfg)
        return task, torch.cat([p.detach().flatten() for p in task.parameters()])

    task, w = weights(probe)
    _, w_without_probes = weights({"enabled": False})
    assert task.probes_run is built and len(task.configure_callbacks()) == int(built)
    assert torch.equal(w, w_without_probes) is not built
    names = MaskedTask.epoch_metric_names({"probe": probe})
    assert sorted(set(names) - {"val/loss", "train/loss"}) == sorted(probe_metrics)


def test_weighted_knn_on_separable_features_is_perfect():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 5
    bank_y, query_y = torch.arange(200) % 4, torch.arange(100) % 4
    bank = centers[bank_y] + torch.randn(200, 16, generator=g)
    queries = centers[query_y] + torch.randn(100, 16, generator=g)
    pred = knn_predict(bank, bank_y, queries, num_classes=4, k=10, temperature=0.07)
    assert float((pred == query_y).float().mean()) == 1.0


def test_generate_samples_tokens_from_a_tiny_causal_lm():
    torch.manual_seed(0)
    task = make(CausalLMTask, tiny_transformer(text_spec()), text_spec())
    loss_curve(task, token_ids(64), steps=60)
    prompt = torch.tensor([5, 6, 7])
    out = task.generate(prompt, max_new_tokens=20, temperature=0.0)  # longer than the context window
    assert out.shape == (20,) and out.dtype == torch.long
    assert int(out.min()) >= 0 and int(out.max()) < VOCAB and PAD not in out.tolist()
    assert out[:3].tolist() == [8, 9, 10]  # it learned to count
    from transferlab.generate import sample

    class DigitTokenizer:  # "5 6 7" <-> ids, the interface of the datamodules' tokenizers
        def encode(self, text, add_special_tokens=True):
            return [int(t) for t in text.split()]

        def decode(self, ids):
            return " ".join(str(i) for i in ids)

    new, text = sample(task, DigitTokenizer(), "5 6 7", max_new_tokens=4, temperature=0.0, top_k=None, seed=0)
    assert text == "5 6 7 8 9 10 11" and new == [8, 9, 10, 11]
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    s1 = task.generate(prompt, 8, temperature=1.0, top_k=5, generator=g1)
    assert torch.equal(s1, task.generate(prompt, 8, temperature=1.0, top_k=5, generator=g2))


def test_masked_needs_transformer_and_text_mask_id():
    with pytest.raises(ConfigError, match="model=transformer"):
        make(MaskedTask, CNN((1, 40), channels=(8,), hidden=16), signal_spec())
    with pytest.raises(ConfigError, match="task.mlm.mask_id"):
        make(MaskedTask, tiny_transformer(text_spec()), text_spec())
    with pytest.raises(ConfigError, match="needs text data"):
        make(CausalLMTask, tiny_transformer(signal_spec()), signal_spec())


def test_masked_with_cnn_fails_before_training(tmp_path):
    from conftest import compose_cfg

    from transferlab.runner.run import train

    cfg = compose_cfg(["task=masked", "model=cnn"], tmp_path)
    with pytest.raises(ConfigError, match=r"model='cnn' is invalid: task=masked needs model=transformer"):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_mnist1d_mae_recipe_pretrains_on_the_larger_pool_and_transfers_on_the_standard_split(tmp_path):
    """experiment=mnist1d_mae: only the masked stage reads the 50,000-signal pool (another generator seed);
    every downstream stage reads the standard set with 10 labels per class, the probe with its few-label settings."""
    from conftest import compose_cfg

    from transferlab.config.stages import stages

    staged = dict(stages(compose_cfg(["experiment=mnist1d_mae"], tmp_path)))
    assert list(staged) == ["pretrain", "finetune", "linear_probe", "scratch"]
    pretrain = staged.pop("pretrain")
    assert pretrain.task.name == "masked" and pretrain.trainer.max_epochs == 20
    # the committed results' masked settings (session 8), not today's task defaults: no augmentation, both online probes
    assert pretrain.task.augment.signal is None and pretrain.task.probe.linear.enabled and pretrain.task.probe.knn.enabled
    assert dict(pretrain.data.generator) == {"num_samples": 50000, "seed": 7} and pretrain.data.labels_per_class is None
    for name, stage in staged.items():
        assert dict(stage.data.generator) == {"num_samples": 5000, "seed": 42}, name
        assert stage.data.classes is None and stage.data.labels_per_class == 10, name
        assert stage.model.pool == "mean", name
    assert staged["finetune"].task.pretrained == staged["linear_probe"].task.pretrained == str(tmp_path / "pretrain" / "checkpoints" / "last.ckpt")
    assert staged["scratch"].task.get("pretrained") is None
    probe = staged["linear_probe"]
    assert (probe.peft.feature_norm, probe.optimizer.lr, probe.trainer.max_epochs) == ("batchnorm", 0.03, 200)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["contrastive", "masked"])
def test_ssl_run_logs_probes_and_hands_off_to_finetune(tmp_path, objective):
    from conftest import FAST, compose_cfg

    from transferlab.runner.stage import run_stage
    from transferlab.utils.checkpoint import backbone_state, load_checkpoint

    common = FAST + ["model=transformer", "model.width=32", "model.depth=1", "data.classes=[0,1,2]"]
    probes_on = ["task.probe.linear.enabled=true", "task.probe.knn.enabled=true"] if objective == "masked" else []  # masked: off by default
    pre = run_stage(compose_cfg(common + [f"task={objective}", *probes_on], tmp_path / "pre"), tmp_path / "pre")
    saved = json.loads((tmp_path / "pre" / "metrics.json").read_text())
    for key in ("val/loss", "val/linear_acc", "val/knn_acc", "test/loss", "test/linear_acc", "test/knn_acc"):
        assert key in saved and 0 <= saved[key] < 100, key
    assert saved["val/knn_acc"] > 1 / 3  # above chance on 3 classes, even after a few steps
    assert pre["kind"] == "pretrain" and pre["task"] == objective

    from transferlab.knn import knn_eval

    knn = knn_eval(compose_cfg([f"ckpt_path={tmp_path / 'pre'}", "data.classes=[0,1,2]", "k=5"], tmp_path / "knn", "knn"))
    assert json.loads((tmp_path / "knn" / "metrics.json").read_text())["test/knn_acc"] == knn["test/knn_acc"]
    assert knn["test/knn_acc"] > 1 / 3 and knn["knn/k"] == 5

    ft = run_stage(compose_cfg(common + ["task=finetune", f"task.pretrained={tmp_path / 'pre'}", "peft=linear_probe"],
                               tmp_path / "ft"), tmp_path / "ft")
    assert ft["pretrained"] and "test/acc" in ft
    pre_bb = backbone_state(load_checkpoint(tmp_path / "pre"))
    ft_bb = backbone_state(load_checkpoint(tmp_path / "ft"))
    assert pre_bb.keys() == ft_bb.keys()
    assert all(torch.equal(pre_bb[k], ft_bb[k]) for k in pre_bb)  # linear probe: the backbone is exactly the pretrained one


def test_online_probe_under_ddp_steps_on_every_ranks_batch(monkeypatch):
    """With 2 ranks the probe head takes one step on both ranks' features (gathered), as one process would."""
    from types import SimpleNamespace

    from transferlab.callbacks import online_probes as probes

    torch.manual_seed(0)
    mine, other = torch.randn(4, 8), torch.randn(4, 8)
    y_mine, y_other = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 2, 2])

    def all_gather(t):  # what Lightning's all_gather returns on 2 ranks: (world, batch, ...)
        return torch.stack([t, other if t.is_floating_point() else y_other])

    module = SimpleNamespace(all_gather=all_gather, log=lambda *a, **k: None)
    ddp, single = probes.OnlineProbes(8, 3), probes.OnlineProbes(8, 3)
    single.head.load_state_dict(ddp.head.state_dict())
    monkeypatch.setattr(probes, "world_size", lambda: 2)
    ddp.on_train_batch_end(None, module, {"features": mine}, (mine, y_mine), 0)
    single.update(torch.cat([mine, other]), torch.cat([y_mine, y_other]))
    assert all(torch.equal(a, b) for a, b in zip(ddp.head.parameters(), single.head.parameters()))


def test_probe_accuracy_over_ranks_counts_every_sample(monkeypatch):
    """Test shards of 3 and 1 samples: 3/4 correct overall, not the mean of the ranks' 2/3 and 1/1."""
    from types import SimpleNamespace

    from transferlab.callbacks import online_probes as probes

    other = torch.tensor([1.0, 1.0])  # the other rank: 1 hit of 1 sample
    module = SimpleNamespace(all_gather=lambda t: torch.stack([t, other]))
    monkeypatch.setattr(probes, "world_size", lambda: 2)
    assert float(probes.accuracy_over_ranks(module, torch.tensor([True, False, True]))) == 0.75
