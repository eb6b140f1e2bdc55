"""Overrides mean what they say on a pipeline, and the model follows the data (pre-flight, one line)."""

import sys
from pathlib import Path

import pytest
from conftest import compose_cfg

from transferlab.config.stages import stage_config
from transferlab.errors import ConfigError


def _stage(overrides: list[str], name: str, tmp_path: Path):
    return stage_config(compose_cfg(overrides, tmp_path), name, tmp_path, overrides=overrides)


@pytest.mark.parametrize("overrides, stage, key, expected", [
    ([], "pretrain", "trainer.max_epochs", 15),                                  # the stage's own defaults
    ([], "finetune", "optimizer.lr", 1e-3),
    ([], "linear_probe", "optimizer.lr", 0.03),                                 # peft=linear_probe's own lr
    ([], "scratch", "optimizer.lr", 3e-3),                                       # the optimizer group
    (["trainer.max_epochs=1"], "pretrain", "trainer.max_epochs", 1),             # command line: every stage
    (["trainer.max_epochs=1"], "scratch", "trainer.max_epochs", 1),
    (["trainer.max_epochs=1", "task.pretrain_trainer.max_epochs=5"], "pretrain", "trainer.max_epochs", 5),
    (["trainer.max_epochs=1", "task.pretrain_trainer.max_epochs=5"], "finetune", "trainer.max_epochs", 1),
    (["trainer.max_epochs=1", "task.target_trainer.max_epochs=4"], "scratch", "trainer.max_epochs", 4),
    (["optimizer.lr=0.1"], "finetune", "optimizer.lr", 0.1),
    (["optimizer.lr=0.1"], "linear_probe", "optimizer.lr", 0.1),
    (["optimizer.lr=0.1", "task.finetune_optimizer.lr=0.5"], "finetune", "optimizer.lr", 0.5),
    (["optimizer.lr=0.1", "task.finetune_optimizer.lr=0.5"], "linear_probe", "optimizer.lr", 0.1),
    (["data.batch_size=7"], "finetune", "data.batch_size", 7),                   # keys no stage sets
])
def test_command_line_beats_stage_defaults_and_stage_keys_beat_it(overrides, stage, key, expected, tmp_path):
    from omegaconf import OmegaConf

    assert OmegaConf.select(_stage(overrides, stage, tmp_path), key) == expected


@pytest.mark.parametrize("override", ["data.labels_per_class=-3", "data.classes=[3,42]"])
def test_data_keys_a_stage_sets_are_refused_naming_the_stage_keys(override, tmp_path):
    key = override.split("=")[0].split(".")[1]
    with pytest.raises(ConfigError, match=rf"set task.source.{key}=\.\.\. / task.target.{key}=\.\.\. instead"):
        _stage([override], "finetune", tmp_path)


def test_refusal_reaches_preflight_through_hydras_command_line(tmp_path):
    """The real path: validate() reads the overrides from Hydra's run context, before anything trains."""
    from conftest import CONF
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from transferlab.config.validate import validate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["data.labels_per_class=-3", f"paths.output_dir={tmp_path}"],
                      return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path)
        HydraConfig.instance().set_config(cfg)
        try:
            with pytest.raises(ConfigError, match="data.labels_per_class=-3 is invalid: the pipeline task=transfer sets it"):
                validate(cfg)
        finally:
            HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


def test_peft_sweep_rows_say_which_method_and_lr(tmp_path):
    cfg = compose_cfg(["peft=linear_probe"], tmp_path)
    assert cfg.task.stages.finetune.label == "pretrained + peft=linear_probe"
    assert _stage(["peft=linear_probe"], "finetune", tmp_path).peft.name == "linear_probe"


@pytest.mark.parametrize("overrides, fits", [
    (["data=bbc_news"], "model=hf or model=transformer"),
    (["data=csv", "data.path=x.csv", "data.text_column=text"], "model=hf or model=transformer"),
    (["data=csv", "data.path=x.csv"], "model=mlp"),
    (["data=csv", "data.path=x.csv", "model=transformer"], "model=mlp"),
])
def test_data_that_needs_another_model_is_a_preflight_error(overrides, fits, tmp_path):
    from transferlab.config.validate import validate

    with pytest.raises(ConfigError, match=rf"data=\w+ is (text|tabular) data, which model=\w+ cannot read: use {fits}"):
        validate(compose_cfg(overrides + ["task=supervised"], tmp_path))
    assert validate(compose_cfg(["data=bbc_news", "model=transformer", "task=supervised"], tmp_path)) is None


# -- overrides that were accepted and then ignored (audit): now refused in one line, or doing what they say --

@pytest.mark.parametrize("overrides,key,expected", [
    (["task=supervised", "compile=no"], "compile", "true or false"),
    (["task=finetune", "task.save_adapter=off"], "task.save_adapter", "true or false"),
    (["task=supervised", "trainer.enable_progress_bar=no"], "trainer.enable_progress_bar", "true or false"),
    (["task=supervised", "task.monitor=val/loss"], "task.monitor_mode", "'min' for task.monitor=val/loss"),
    (["task=supervised", "task.monitor=val/loss", "task.monitor_mode=min", "data.labels_per_class=5", "data.fraction=0.5"],
     "data.fraction", "null when data.labels_per_class is set"),
    (["resume=outputs/some/checkpoints/last.ckpt"], "resume", "auto or null for the pipeline task=transfer"),
    (["ckpt_path=outputs/some/checkpoints/last.ckpt"], "ckpt_path", "auto or null for the pipeline task=transfer"),
    (["task=supervised", "+max_epochs=3"], "max_epochs", "not a root config key (no code reads it): did you mean 'trainer.max_epochs'?"),
    (["task=supervised", "+lr=0.1"], "lr", "did you mean 'optimizer.lr'?"),
    (["task=supervised", "+epochs=3"], "epochs", "did you mean 'trainer.max_epochs'?"),
    (["callbacks=none"], "callbacks", "a model_checkpoint for the pipeline task=transfer: stages finetune, linear_probe"),
])
def test_an_override_that_would_be_ignored_is_refused(tmp_path, overrides, key, expected):
    from transferlab.config.validate import validate

    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(overrides, tmp_path))
    assert err.value.key == key and expected in str(err.value) and "\n" not in str(err.value), err.value


def test_a_new_root_task_key_on_a_pipeline_is_refused_and_a_stage_key_is_the_way(tmp_path):
    from transferlab.config.validate import check_pipeline_root

    typed = ["+task.label_smoothing=0.3"]
    with pytest.raises(ConfigError, match=r"task.label_smoothing=0.3 is invalid: a key of one stage.*"
                                          r"task.stages.<stage>.task.label_smoothing=\.\.\. \(stages: pretrain, finetune"):
        check_pipeline_root(compose_cfg(typed, tmp_path), typed)
    check_pipeline_root(compose_cfg(["+task.source.fraction=0.5"], tmp_path), ["+task.source.fraction=0.5"])  # an existing node
    stage = stage_config(compose_cfg(["task.stages.finetune.task.label_smoothing=0.3"], tmp_path), "finetune", tmp_path)
    assert stage.task.label_smoothing == 0.3


def test_warmup_steps_zero_means_no_warmup_and_null_means_the_fraction():
    import torch

    from transferlab.tasks.optim import warmup_cosine, warmup_steps_of

    assert warmup_steps_of(200, None, 0.05) == 10
    assert warmup_steps_of(200, 0, 0.05) == 0  # was 10: 0 read as "unset"
    assert warmup_steps_of(200, 7, 0.05) == 7
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert isinstance(warmup_cosine(opt, 200, warmup_steps=0, warmup_fraction=0.05), torch.optim.lr_scheduler.LambdaLR)
    assert opt.param_groups[0]["lr"] == 1.0  # no warm-up: the first step runs at the full lr


def test_a_debug_preset_reaches_every_stage_of_a_pipeline(tmp_path, monkeypatch):
    """`debug=fast` sets trainer.max_epochs=1 in a config file: it beats the stages' own epochs like a typed override."""
    from types import SimpleNamespace

    from conftest import CONF
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import transferlab.utils.hydra as hydra_utils

    cfg = compose_cfg(["debug=fast"], tmp_path)
    assert stage_config(cfg, "pretrain", tmp_path, overrides=[]).trainer.max_epochs == 15  # without the preset known
    running = SimpleNamespace(runtime=SimpleNamespace(choices={"debug": "fast"}), overrides=SimpleNamespace(task=[]))
    monkeypatch.setattr(hydra_utils, "hydra_config", lambda: running)
    monkeypatch.setattr("transferlab.config.stages.command_line", lambda: ["debug=fast"])
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        epochs = {name: stage_config(cfg, name, tmp_path).trainer.max_epochs for name in cfg.task.stages}
    assert epochs == {"pretrain": 1, "finetune": 1, "linear_probe": 1, "scratch": 1}


# -- audit 2: new keys under a section, a stage an experiment gave its own node, the monitored metric --

@pytest.mark.parametrize("overrides", [
    ["task=supervised", "+trainer.overfit_batches=2"],                       # trainer: Lightning Trainer's signature
    ["task=supervised", "+paths.data_dir=/tmp/data"],                        # paths: open (interpolation targets)
    ["task=supervised", "data=mnist1d_shift", "+data.test_shifts.far.max_translation=60"],   # a new shift's name
    ["task=supervised", "data=bbc_news", "model=hf", "+model.config.hidden_dropout_prob=0.0"],  # to transformers as is
    ["task=supervised", "+callbacks.lr_monitor._target_=pytorch_lightning.callbacks.LearningRateMonitor"],
    ["task=finetune", "model=transformer", "peft=lora", "+peft.optimizer.weight_decay=0.0"],  # read by adamw.yaml
    ["task=masked", "model=transformer", "task.decoder.depth=2", "task.probe.knn.k=5"],
    ["+task.source.generator.num_samples=300"],                              # lands in the pretrain stage's data.generator
])
def test_a_new_key_that_something_reads_is_accepted(overrides, tmp_path):
    from transferlab.config.validate import validate

    assert validate(compose_cfg(overrides, tmp_path)) is None


@pytest.mark.parametrize("overrides, key, expected", [
    (["task=supervised", "+trainer.max_epoch=3"], "trainer.max_epoch", "did you mean 'max_epochs'?"),
    (["task=supervised", "+data.generator.num_sample=300"], "data.generator.num_sample", "did you mean 'num_samples'?"),
    (["+data.generator.num_sample=300"], "data.generator.num_sample", "(in pipeline stage 'pretrain')"),
    (["+task.source.generator.num_sample=300"], "data.generator.num_sample", "did you mean 'num_samples'?"),
    (["task=contrastive", "+task.projection.hiden=8"], "task.projection.hiden", "did you mean 'hidden'?"),
    (["task=masked", "model=transformer", "+task.mlm.mask_prob=0.2"], "task.mlm.mask_prob",
     "valid keys are ['keep_prob', 'mask_id', 'mask_ratio', 'random_prob', 'tie_weights']"),
    (["task=masked", "model=transformer", "+task.probe.linaer.lr=0.1"], "task.probe.linaer", "did you mean 'linear'?"),
])
def test_a_new_key_nobody_reads_is_refused_naming_the_valid_ones(overrides, key, expected, tmp_path):
    from transferlab.config.validate import validate

    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(overrides, tmp_path))
    assert err.value.key == key and expected in str(err.value) and "\n" not in str(err.value), err.value


def test_the_generator_keys_the_schema_knows_are_the_ones_mnist1d_reads():
    from transferlab.config.schema import section_keys
    from transferlab.data.mnist1d import GENERATOR_DEFAULTS

    assert section_keys("data.generator") == sorted(GENERATOR_DEFAULTS)


def _stages_under_hydra(overrides: list[str], tmp_path: Path) -> dict:
    """Every stage's config as a CLI run sees it: Hydra's run context holds the command line and the task choice."""
    from conftest import CONF
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from transferlab.config.stages import stages

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, f"paths.output_dir={tmp_path}"], return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path)
        HydraConfig.instance().set_config(cfg)
        try:
            return dict(stages(cfg))
        finally:
            HydraConfig.instance().cfg = None
            GlobalHydra.instance().clear()


@pytest.mark.parametrize("overrides, epochs", [
    (["task.target_trainer.max_epochs=5"], {"pretrain": 20, "finetune": 5, "linear_probe": 5, "scratch": 5}),
    (["task.target_trainer.max_epochs=5", "task.stages.linear_probe.trainer.max_epochs=7"],
     {"pretrain": 20, "finetune": 5, "linear_probe": 7, "scratch": 5}),                 # the stage's own key wins
    (["trainer.max_epochs=1", "task.target_trainer.max_epochs=5"],
     {"pretrain": 1, "finetune": 5, "linear_probe": 5, "scratch": 5}),                  # the stage key beats the root
    ([], {"pretrain": 20, "finetune": 60, "linear_probe": 200, "scratch": 60}),        # the recipe as written
])
def test_a_pipeline_key_reaches_the_stage_an_experiment_gave_its_own_node(overrides, epochs, tmp_path):
    """experiment=mnist1d_mae writes `linear_probe.trainer: {max_epochs: 200, ...}` over `${task.target_trainer}`."""
    staged = _stages_under_hydra(["experiment=mnist1d_mae", *overrides], tmp_path)
    assert {name: stage.trainer.max_epochs for name, stage in staged.items()} == epochs
    assert staged["linear_probe"].trainer.check_val_every_n_epoch == 10


def test_a_new_pipeline_key_reaches_the_stage_an_experiment_gave_its_own_node(tmp_path):
    staged = _stages_under_hydra(["experiment=mnist1d_mae", "+task.target_trainer.gradient_clip_val=0.5"], tmp_path)
    assert {n: s.trainer.get("gradient_clip_val") for n, s in staged.items()} == {
        "pretrain": None, "finetune": 0.5, "linear_probe": 0.5, "scratch": 0.5}


@pytest.mark.parametrize("overrides", [
    ["task=supervised", "task.monitor=train/loss", "task.monitor_mode=min"],
    ["task=masked", "model=transformer", "task.probe.knn.enabled=true", "task.monitor=val/knn_acc", "task.monitor_mode=max"],
    ["task=causal_lm", "data=bbc_news", "model=transformer", "task.monitor=val/perplexity"],
    ["task=supervised", "task.monitor=null"],
    ["task=supervised", "task.monitor=val/mine", "allowed_targets=[transferlab.,torch.optim.,pytorch_lightning.,mypackage.]",
     "+callbacks.mine._target_=mypackage.LogsMine"],                         # a callback of the user's own may log it
])
def test_a_metric_the_task_logs_may_be_monitored(overrides, tmp_path, monkeypatch):
    import types

    from transferlab.config.validate import validate

    package = types.ModuleType("mypackage")
    package.LogsMine = type("LogsMine", (), {"__module__": "mypackage"})
    monkeypatch.setitem(sys.modules, "mypackage", package)
    assert validate(compose_cfg(overrides, tmp_path)) is None


@pytest.mark.parametrize("overrides", [
    ["task=supervised", "model=mlp", "model.hidden=16"],
    ["task=masked", "model=transformer", "model.width=16", "model.depth=1"],
    ["task=contrastive", "model=mlp", "model.hidden=16", "task.probe.knn.enabled=false"],
])
def test_the_metrics_a_task_may_monitor_are_the_ones_its_run_logs(overrides, tmp_path):
    """The list `task.monitor` is checked against, derived from the task's code, equals a real run's epoch columns."""
    import csv

    from conftest import FAST
    from hydra.utils import get_class

    from transferlab.runner.stage import run_stage

    cfg = compose_cfg([*FAST, "trainer.max_epochs=1", *overrides], tmp_path)
    run_stage(cfg, tmp_path)
    with open(tmp_path / "csv" / "metrics.csv") as f:
        header = next(csv.reader(f))
    logged = {c for c in header if c.startswith(("val/", "train/")) and c != "train/loss_step"}
    assert set(get_class(cfg.task._target_).epoch_metric_names(cfg.task)) == logged


def test_a_typed_method_default_that_nothing_reads_is_refused():
    """`peft.optimizer.lr` is read through `${oc.select:...}` by optimizer=adamw and a pipeline's stage keys only:
    typed with optimizer=sgd it would do nothing."""
    from transferlab.config.validate import check_method_defaults_read

    typed = ["peft=lora", "optimizer=sgd", "peft.optimizer.lr=0.02"]
    cfg = compose_cfg(["task=finetune", "model=transformer", *typed])
    with pytest.raises(ConfigError) as err:
        check_method_defaults_read(cfg, typed)
    assert str(err.value) == ("peft.optimizer.lr=0.02 is invalid: read by nothing here: a method's default that the chosen "
                              "optimizer config does not read (only ${oc.select:peft.optimizer.lr,...} references do); "
                              "set optimizer.lr=... instead")
    for ok in (["peft=lora", "peft.optimizer.lr=0.02"], ["peft=lora", "optimizer=sgd", "optimizer.lr=0.02"]):
        assert float(compose_cfg(["task=finetune", "model=transformer", *ok]).optimizer.lr) == 0.02
        check_method_defaults_read(compose_cfg(["task=finetune", "model=transformer", *ok]), ok)
    pipeline = ["task=transfer", "optimizer=sgd", "peft=lora", "peft.optimizer.lr=0.02"]  # a stage key reads it
    check_method_defaults_read(compose_cfg(pipeline), pipeline)


def test_a_typed_task_default_that_trainer_max_epochs_replaces_is_refused():
    """`task.trainer.max_epochs` (task=masked's 200) is read by conf/trainer/default.yaml's `${oc.select:...}`; typed
    beside `trainer.max_epochs`, which replaces that reference, it would be silently outranked."""
    from transferlab.config.validate import check_method_defaults_read

    typed = ["task.trainer.max_epochs=5", "trainer.max_epochs=3"]
    cfg = compose_cfg(["task=masked", "model=transformer", *typed])
    assert cfg.trainer.max_epochs == 3
    with pytest.raises(ConfigError) as err:
        check_method_defaults_read(cfg, typed)
    assert str(err.value) == ("task.trainer.max_epochs=5 is invalid: read by nothing here: a task's default that the chosen "
                              "trainer config does not read (only ${oc.select:task.trainer.max_epochs,...} references do); "
                              "set trainer.max_epochs=... instead")
    alone = ["task.trainer.max_epochs=5"]
    cfg = compose_cfg(["task=masked", "model=transformer", *alone])
    assert cfg.trainer.max_epochs == 5
    check_method_defaults_read(cfg, alone)


def test_a_probe_metric_is_refused_as_monitor_once_the_data_shows_no_labels():
    """The online probes run only on labelled data (tasks/ssl.py `probes_run`): runner/stage.py checks the monitor
    again once the data is known, so `val/knn_acc` on unlabelled data fails before training, not after epoch 1."""
    from transferlab.backbones.transformer import Transformer
    from transferlab.config.validate import check_monitor
    from transferlab.data.spec import DataSpec
    from transferlab.tasks.masked import MaskedTask

    cfg = compose_cfg(["task=masked", "model=transformer", "task.probe.knn.enabled=true", "task.monitor=val/knn_acc",
                       "task.monitor_mode=max"])
    check_monitor(cfg)  # the config alone: k-NN is on
    with pytest.raises(ConfigError) as err:
        check_monitor(cfg, probes_run=False)
    assert str(err.value).startswith("task.monitor='val/knn_acc' is invalid: a metric task=masked logs each epoch "
                                     "(the data has no labels, so the online probes do not run)")
    assert "one of val/loss, train/loss" in str(err.value)
    opt, sched = {"_target_": "torch.optim.AdamW", "lr": 1e-3}, {"name": "constant"}

    def task(num_classes: int) -> MaskedTask:
        spec = DataSpec("signal", (1, 40), num_classes, tuple(str(i) for i in range(num_classes)))
        return MaskedTask(Transformer((1, 40), width=16, depth=1, heads=2), spec, opt, sched, name="masked", probe={"enabled": True})

    assert task(3).probes_run is True and task(0).probes_run is False
