"""Overrides mean what they say on a pipeline, and the model follows the data (pre-flight, one line)."""

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
    ([], "linear_probe", "optimizer.lr", 1e-2),
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
