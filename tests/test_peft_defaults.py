"""Each `peft=` method may carry its own optimizer and trainer defaults (`peft.optimizer`, `peft.trainer`), and a
task its own trainer defaults (`task.trainer`); overrides still win."""

from pathlib import Path

import pytest

from transferlab.runner.build import build_adaptation

FT = ["task=finetune", "model=transformer"]


def test_method_default_applies_and_the_command_line_wins(compose_fn):
    cfg = compose_fn([*FT, "peft=linear_probe", "peft.optimizer.lr=0.05", "+peft.optimizer.weight_decay=0.0"])
    assert cfg.optimizer.lr == pytest.approx(0.05) and cfg.optimizer.weight_decay == 0.0
    cfg = compose_fn([*FT, "peft=linear_probe", "peft.optimizer.lr=0.05", "optimizer.lr=1e-4"])
    assert cfg.optimizer.lr == pytest.approx(1e-4)


def test_without_a_method_default_the_optimizer_group_decides(compose_fn):
    for over in (["task=supervised"], ["task=masked", "model=transformer"], [*FT, "peft=full"]):
        cfg = compose_fn(over)
        assert cfg.get("peft", {}).get("optimizer") is None
        assert cfg.optimizer.lr == pytest.approx(3e-3) and cfg.optimizer.weight_decay == pytest.approx(0.01)


def test_every_methods_defaults_are_optimizer_keys_not_constructor_arguments(compose_fn):
    for method in ("full", "linear_probe", "lora", "dora", "ia3", "adapter", "bitfit"):
        cfg = compose_fn([*FT, f"peft={method}"])
        extra = set((cfg.peft.get("optimizer") or {}).keys()) - {"lr", "weight_decay"}
        assert not extra, f"peft={method}: optimizer defaults other than lr/weight_decay: {extra}"
        extra = set((cfg.peft.get("trainer") or {}).keys()) - {"max_epochs"}
        assert not extra, f"peft={method}: trainer defaults other than max_epochs: {extra}"
        build_adaptation(cfg.peft, tuple(cfg.allowed_targets))  # `optimizer`, `trainer` are not passed to the constructor


def test_pipeline_stages_take_the_method_default_only_where_they_fine_tune(compose_fn, tmp_path):
    from transferlab.config.stages import stage_config

    cfg = compose_fn(["model=transformer", "peft=lora", "peft.optimizer.lr=0.05"])
    lrs = {name: stage_config(cfg, name, tmp_path).optimizer.lr for name in cfg.task.stages}
    assert lrs["finetune"] == pytest.approx(0.05)      # the method's default
    assert lrs["pretrain"] == pytest.approx(3e-3)      # pretraining adapts nothing: the optimizer group
    assert lrs["scratch"] == pytest.approx(3e-3)       # peft=full: no method default
    assert lrs["linear_probe"] == pytest.approx(0.03)  # the stage's optimizer key reads its own method's default


def test_method_defaults_pass_validation_and_bad_ones_are_refused(compose_fn, tmp_path):
    from transferlab.config.validate import validate, validate_config_only
    from transferlab.errors import ConfigError

    validate(compose_fn([*FT, "peft=lora", "peft.optimizer.lr=0.01"], tmp_path))  # a known key of peft
    with pytest.raises(ConfigError, match="peft.optimizer.lr"):
        validate_config_only(compose_fn([*FT, "peft=lora", "peft.optimizer.lr=-1"], tmp_path))


def test_lora_carries_its_swept_lr(compose_fn):
    cfg = compose_fn([*FT, "peft=lora"])
    assert cfg.optimizer.lr == pytest.approx(5e-3)  # experiments/peft_defaults: best validation accuracy


def test_the_linear_probe_carries_its_swept_lr_and_epochs(compose_fn, tmp_path):
    from transferlab.config.stages import stage_config

    cfg = compose_fn([*FT, "peft=linear_probe"])  # experiments/probe_defaults: best validation accuracy
    assert (cfg.optimizer.lr, cfg.trainer.max_epochs, cfg.peft.feature_norm) == (pytest.approx(0.03), 100, "none")
    typed = compose_fn(["model=transformer", "task.probe_optimizer.lr=2e-4"])  # the pipeline's stage key typed wins
    assert stage_config(typed, "linear_probe", tmp_path).optimizer.lr == pytest.approx(2e-4)


def test_pipeline_finetune_stage_gets_each_methods_default_and_full_keeps_1e_3(compose_fn, tmp_path):
    from transferlab.config.stages import stage_config

    lora = compose_fn(["model=transformer", "peft=lora"])
    assert stage_config(lora, "finetune", tmp_path).optimizer.lr == pytest.approx(lora.peft.optimizer.lr)
    full = compose_fn(["model=transformer", "peft=full"])
    assert stage_config(full, "finetune", tmp_path).optimizer.lr == pytest.approx(1e-3)
    typed = compose_fn(["model=transformer", "peft=lora", "task.finetune_optimizer.lr=2e-4"])
    assert stage_config(typed, "finetune", tmp_path).optimizer.lr == pytest.approx(2e-4)  # the stage key typed wins


def test_lora_carries_its_epochs_and_the_command_line_wins(compose_fn):
    assert compose_fn([*FT, "peft=lora"]).trainer.max_epochs == 300  # experiments/peft_defaults: best val/acc
    assert compose_fn([*FT, "peft=full"]).trainer.max_epochs == 20   # no method default: the trainer group's
    assert compose_fn([*FT, "peft=lora", "trainer.max_epochs=3"]).trainer.max_epochs == 3
    assert compose_fn([*FT, "peft=lora", "trainer=cpu"]).trainer.max_epochs == 300


def test_pipeline_stages_take_the_method_epochs_only_where_they_fine_tune_with_it(compose_fn, tmp_path):
    from transferlab.config.stages import stage_config

    cfg = compose_fn(["model=transformer", "peft=lora"])
    epochs = {name: stage_config(cfg, name, tmp_path).trainer.max_epochs for name in cfg.task.stages}
    assert epochs == {"pretrain": 15, "finetune": 300, "linear_probe": 100, "scratch": 60}
    typed = compose_fn(["model=transformer", "peft=lora", "task.target_trainer.max_epochs=7"])
    assert {stage_config(typed, n, tmp_path).trainer.max_epochs for n in ("finetune", "linear_probe", "scratch")} == {7}
    full = compose_fn(["model=transformer", "peft=full"])
    assert stage_config(full, "finetune", tmp_path).trainer.max_epochs == 60


def test_bad_method_epochs_are_refused(compose_fn, tmp_path):
    from transferlab.config.validate import validate_config_only
    from transferlab.errors import ConfigError

    with pytest.raises(ConfigError, match="peft.trainer.max_epochs"):
        validate_config_only(compose_fn([*FT, "peft=lora", "peft.trainer.max_epochs=0"], tmp_path))


def test_lora_targets_the_patch_embedding_on_signals_but_not_on_text():
    from transferlab.backbones.transformer import Transformer

    signal = Transformer(input_shape=(1, 40), width=16, depth=1, heads=2)
    assert signal.lora_targets == ("patch_embed", "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    text = Transformer(input_shape=(12,), width=16, depth=1, heads=2, vocab_size=50, pad_id=0)
    assert text.lora_targets == ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def test_a_task_carries_its_epochs_and_the_command_line_and_pipeline_stages_win(compose_fn, tmp_path):
    from transferlab.config.stages import stage_config
    from transferlab.config.validate import validate, validate_config_only
    from transferlab.errors import ConfigError

    masked = ["task=masked", "model=transformer"]
    own = compose_fn(masked).task.trainer.max_epochs
    assert own != 20 and compose_fn(masked).trainer.max_epochs == own  # not the trainer group's 20
    assert compose_fn([*masked, "task.trainer.max_epochs=7"]).trainer.max_epochs == 7
    assert compose_fn([*masked, "task.trainer.max_epochs=7", "trainer.max_epochs=3"]).trainer.max_epochs == 3
    assert compose_fn([*masked, "trainer=cpu"]).trainer.max_epochs == own
    assert compose_fn([*FT, "peft=full"]).trainer.max_epochs == 20  # a task without its own: the trainer group's
    validate(compose_fn([*masked, "task.trainer.max_epochs=7"], tmp_path))  # `trainer` is not a constructor argument
    with pytest.raises(ConfigError, match="task.trainer.max_epochs"):
        validate_config_only(compose_fn([*masked, "task.trainer.max_epochs=0"], tmp_path))
    mae = compose_fn(["experiment=mnist1d_mae"])  # a pipeline's pretraining stage: its pretrain_trainer wins
    assert stage_config(mae, "pretrain", tmp_path).trainer.max_epochs == mae.task.pretrain_trainer.max_epochs != own


def test_the_linear_probe_reads_mean_pooled_features_and_the_command_line_wins(compose_fn, tmp_path):
    from transferlab.config.stages import stage_config
    from transferlab.config.validate import validate_config_only
    from transferlab.errors import ConfigError

    assert compose_fn([*FT, "peft=linear_probe"]).model.pool == "mean"  # experiments/probe_defaults: best validation accuracy
    assert compose_fn([*FT, "peft=full"]).model.pool == "cls"           # no method default: the model group's
    assert compose_fn([*FT, "peft=linear_probe", "model.pool=cls"]).model.pool == "cls"
    assert compose_fn(["task=finetune", "model=hf", "peft=linear_probe"]).model.pool == "mean"
    assert compose_fn(["task=finetune", "model=hf", "peft=full"]).model.pool == "auto"
    cfg = compose_fn(["model=transformer"])  # the pipeline: only the stage that probes reads its method's pool
    pools = {name: stage_config(cfg, name, tmp_path).model.pool for name in cfg.task.stages}
    assert pools == {"pretrain": "cls", "finetune": "cls", "linear_probe": "mean", "scratch": "cls"}
    with pytest.raises(ConfigError, match="peft.model.pool"):
        validate_config_only(compose_fn([*FT, "peft=linear_probe", "peft.model.pool=last"], tmp_path))
    with pytest.raises(ConfigError, match="peft.model"):
        validate_config_only(compose_fn([*FT, "peft=linear_probe", "+peft.model.width=8"], tmp_path))
    from transferlab.config.validate import check_method_defaults_read

    typed = ["task=finetune", "peft=linear_probe", "peft.model.pool=cls"]
    check_method_defaults_read(compose_fn([*typed, "model=transformer"]), [*typed, "model=transformer"])  # read: fine
    with pytest.raises(ConfigError, match=r"peft.model.pool='cls' is invalid: read by nothing here.*set model.pool="):
        check_method_defaults_read(compose_fn([*typed, "model=cnn"]), [*typed, "model=cnn"])  # the CNN has no pool


def test_a_probe_checkpoint_is_rebuilt_with_the_pool_it_trained_with(compose_fn, tmp_path):
    from transferlab.runner.restore import restore_task
    from transferlab.runner.stage import run_stage

    out = tmp_path / "probe"
    cfg = compose_fn([*FT, "peft=linear_probe", "model.width=16", "model.depth=1", "model.heads=2", "data.classes=[0,1]",
                      "data.labels_per_class=4", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                      "callbacks.progress_bar=null"], out)
    run_stage(cfg, out)
    restored = restore_task(out / "checkpoints" / "last.ckpt", list(cfg.allowed_targets))
    assert restored.backbone.pool == "mean" and restored.config["model"]["pool"] == "mean"


def test_studies_run_before_the_probe_defaults_changed_reproduce_the_earlier_probe(compose_fn, tmp_path):
    import sys

    from transferlab.config.stages import stage_config

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    from studylib import PROBE_BEFORE_20261207

    cfg = compose_fn([*FT, "peft=linear_probe", *PROBE_BEFORE_20261207])
    assert (cfg.optimizer.lr, cfg.trainer.max_epochs, cfg.model.pool, cfg.peft.feature_norm) == (pytest.approx(3e-3), 20, "cls", "none")
    over = [*FT, "peft=linear_probe", *PROBE_BEFORE_20261207, "optimizer.lr=0.01", "trainer.max_epochs=60"]
    typed = compose_fn(over)
    assert (typed.optimizer.lr, typed.trainer.max_epochs) == (pytest.approx(0.01), 60)  # what a study types still wins
    from transferlab.config.validate import check_method_defaults_read

    cnn = ["task=finetune", "model=cnn", "peft=linear_probe", *PROBE_BEFORE_20261207, "trainer.max_epochs=-1", "trainer.max_steps=400"]
    for study in (over, cnn):  # a study's CLI run passes validation (no typed method default that nothing reads)
        check_method_defaults_read(compose_fn(study), study)
    from studylib import compose_train

    from transferlab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^peft.trainer.max_epochs=20 is invalid: read by nothing here"):  # as on the CLI
        compose_train([*FT, "peft=lora", "trainer.max_epochs=60", "peft.trainer.max_epochs=20"], tmp_path / "inprocess")
    assert compose_train(over, tmp_path / "inprocess").trainer.max_epochs == 60
    bbc = compose_fn(["experiment=bbc_news_mlm"])  # its committed probe: a bare head at 1e-2, 30 epochs, mean pool
    probe = stage_config(bbc, "linear_probe", tmp_path, overrides=["experiment=bbc_news_mlm"])
    assert (probe.optimizer.lr, probe.trainer.max_epochs, probe.model.pool, probe.peft.feature_norm) == (pytest.approx(1e-2), 30, "mean", "none")
