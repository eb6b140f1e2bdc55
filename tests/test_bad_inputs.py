"""A table of bad inputs, each with the one-line message a user gets (and no training step taken).

Rows run in-process through the same code the CLI runs (compose -> validate, build, load); two
true CLI runs check the one-line output and exit code 2, and that a config error never imports torch.
"""

import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import proc_helpers
import pytest
from conftest import ROOT, compose_cfg

from transferlab.errors import UserError

SUP = ["task=supervised"]  # single-stage runs (the default task=transfer is a pipeline)

# (id, overrides, expected fragments of the message)
CONFIG_ROWS = [
    ("negative_lr", SUP + ["optimizer.lr=-1"], ["optimizer.lr=-1", "a number > 0"]),
    ("string_lr", SUP + ["optimizer.lr=fast"], ["optimizer.lr='fast'", "a number > 0"]),
    ("zero_batch", SUP + ["data.batch_size=0"], ["data.batch_size=0", "an integer > 0"]),
    ("float_batch", SUP + ["data.batch_size=2.5"], ["data.batch_size=2.5", "an integer"]),
    ("zero_shot", SUP + ["data.labels_per_class=0"], ["data.labels_per_class=0", "null"]),
    ("fraction_above_one", SUP + ["data.fraction=1.5"], ["data.fraction=1.5", "(0, 1]"]),
    ("val_fraction_one", SUP + ["data.val_fraction=1"], ["data.val_fraction=1", "[0, 1)"]),
    ("mask_ratio_one", ["task=masked", "model=transformer", "task.mask_ratio=1.0"], ["task.mask_ratio=1.0", "(0, 1)"]),
    ("mask_ratio_zero", ["task=masked", "model=transformer", "task.mask_ratio=0"], ["task.mask_ratio=0", "(0, 1)"]),
    ("seed_not_int", SUP + ["seed=abc"], ["seed='abc'", "an integer"]),
    ("precision", SUP + ["trainer.precision=8"], ["trainer.precision=8", "one of"]),
    ("too_many_cpu_devices", SUP + ["trainer.devices=512"], ["trainer.devices=512", "CPU cores"]),
    ("fsdp_on_cpu", SUP + ["trainer=fsdp", "trainer.accelerator=cpu"], ["trainer.accelerator='cpu'", "trainer=ddp_cpu"]),
    ("pretrain_with_lora", SUP + ["peft=lora"], ["peft='lora'", "use peft=full, or task=finetune"]),
    ("unknown_data_key", SUP + ["+data.batchsize=32"], ["data.batchsize=32", "did you mean 'batch_size'"]),
    ("unknown_model_key", SUP + ["model=transformer", "+model.widht=8"], ["model.widht=8", "did you mean 'width'"]),
    ("test_ckpt", SUP + ["test_ckpt=middle"], ["test_ckpt='middle'", "['last', 'best']"]),
    ("unresolvable", SUP + ["data.batch_size=${nope}"], ["data.batch_size", "must resolve"]),
    ("csv_without_path", SUP + ["data=csv"], ["data.path", "is required"]),
    ("dropout", SUP + ["model.dropout=1.5"], ["model.dropout=1.5", "[0, 1)"]),
    ("warmup", SUP + ["scheduler.warmup_fraction=-0.1"], ["scheduler.warmup_fraction=-0.1", "[0, 1)"]),
    ("max_epochs", SUP + ["trainer.max_epochs=-5"], ["trainer.max_epochs=-5", "> 0"]),
    ("checkpoint_interval", SUP + ["callbacks.fault_tolerance.every_n_train_steps=0"],
     ["callbacks.fault_tolerance.every_n_train_steps=0", "> 0"]),
    ("target_not_importable", SUP + ["model._target_=transferlab.backbones.cnn.Nope"],
     ["model._target_='transferlab.backbones.cnn.Nope'", "has no attribute 'Nope'"]),
    ("target_outside_allowlist", SUP + ["model._target_=os.system"], ["model._target_='os.system'", "allowed_targets"]),
    ("pretrained_missing", ["task=finetune", "task.pretrained=/nonexistent/run"], ["task.pretrained='/nonexistent/run'", "existing"]),
    ("resume_missing", SUP + ["resume=/nonexistent.ckpt"], ["resume='/nonexistent.ckpt'", "or 'auto'"]),
    # ranges and shapes a tired user gets wrong (issue 16)
    ("seed_negative", SUP + ["seed=-1"], ["seed=-1", "an integer in [0, 4294967295]"]),
    ("seed_too_large", SUP + ["seed=4294967296"], ["seed=4294967296", "[0, 4294967295]"]),
    ("max_epochs_zero", SUP + ["trainer.max_epochs=0"], ["trainer.max_epochs=0", "an integer > 0"]),
    ("max_steps_zero", SUP + ["trainer.max_steps=0"], ["trainer.max_steps=0", "> 0"]),
    ("limit_train_zero", SUP + ["trainer.limit_train_batches=0"], ["trainer.limit_train_batches=0", "a number > 0"]),
    ("classes_empty", SUP + ["data.classes=[]"], ["data.classes=[]", "at least two class ids"]),
    ("classes_single", SUP + ["data.classes=[3]"], ["data.classes=[3]", "at least two class ids"]),
    ("classes_duplicate", SUP + ["data.classes=[1,1]"], ["data.classes=[1, 1]", "distinct class ids"]),
    ("betas_one", SUP + ["optimizer.betas=[0.9]"], ["optimizer.betas=[0.9]", "a list of two numbers"]),
    ("betas_three", SUP + ["optimizer.betas=[0.9,0.99,0.999]"], ["optimizer.betas=[0.9, 0.99, 0.999]", "two numbers"]),
    ("lr_inf", SUP + ["optimizer.lr=inf"], ["optimizer.lr=inf", "a number > 0"]),
    ("lr_nan", SUP + ["optimizer.lr=nan"], ["optimizer.lr=nan", "a number > 0"]),
    ("weight_decay_negative", SUP + ["optimizer.weight_decay=-1"], ["optimizer.weight_decay=-1", ">= 0"]),
    ("momentum", SUP + ["optimizer=sgd", "optimizer.momentum=1.5"], ["optimizer.momentum=1.5", "[0, 1)"]),
    ("layer_decay_zero", SUP + ["optimizer.layer_decay=0"], ["optimizer.layer_decay=0", "(0, 1]"]),
    ("label_smoothing_one", SUP + ["task.label_smoothing=1.0"], ["task.label_smoothing=1.0", "[0, 1)"]),
    ("head_dropout_one", SUP + ["task.head_dropout=1"], ["task.head_dropout=1", "[0, 1)"]),
    ("monitor_mode", SUP + ["task.monitor_mode=up"], ["task.monitor_mode='up'", "['min', 'max']"]),
    ("batch_negative", SUP + ["data.batch_size=-4"], ["data.batch_size=-4", "an integer > 0"]),
    ("eval_batch_zero", SUP + ["data.eval_batch_size=0"], ["data.eval_batch_size=0", "> 0"]),
    ("val_fraction_negative", SUP + ["data.val_fraction=-0.1"], ["data.val_fraction=-0.1", "[0, 1)"]),
    ("fraction_zero", SUP + ["data.fraction=0"], ["data.fraction=0", "(0, 1]"]),
    ("workers_negative", SUP + ["data.num_workers=-1"], ["data.num_workers=-1", ">= 0"]),
    ("dropout_negative", SUP + ["model.dropout=-0.1"], ["model.dropout=-0.1", "[0, 1)"]),
    ("pool", SUP + ["model=transformer", "model.pool=max"], ["model.pool='max'", "'cls', 'mean'"]),
    ("devices_zero", SUP + ["trainer.devices=0"], ["trainer.devices=0", "> 0"]),
    ("precision_word", SUP + ["trainer.precision=fp8"], ["trainer.precision='fp8'", "'bf16-mixed'"]),
    ("accelerator", SUP + ["trainer.accelerator=quantum"], ["trainer.accelerator='quantum'", "'cpu', 'gpu'"]),
    ("accumulate_zero", SUP + ["trainer.accumulate_grad_batches=0"], ["trainer.accumulate_grad_batches=0", "> 0"]),
    ("clip_negative", SUP + ["trainer.gradient_clip_val=-1"], ["trainer.gradient_clip_val=-1", ">= 0"]),
    ("val_every_zero", SUP + ["trainer.check_val_every_n_epoch=0"], ["trainer.check_val_every_n_epoch=0", "> 0"]),
    ("log_every_zero", SUP + ["trainer.log_every_n_steps=0"], ["trainer.log_every_n_steps=0", "> 0"]),
    ("sanity_steps", SUP + ["trainer.num_sanity_val_steps=-2"], ["trainer.num_sanity_val_steps=-2", "(or -1)"]),
    ("min_epochs_negative", SUP + ["trainer.min_epochs=-1"], ["trainer.min_epochs=-1", ">= 0"]),
    ("min_lr_ratio", SUP + ["scheduler.min_lr_ratio=2"], ["scheduler.min_lr_ratio=2", "[0, 1]"]),
    ("warmup_steps_negative", SUP + ["scheduler.warmup_steps=-1"], ["scheduler.warmup_steps=-1", ">= 0"]),
    ("lora_rank_zero", ["task=finetune", "model=transformer", "peft=lora", "peft.r=0"], ["peft.r=0", "an integer > 0"]),
    ("overwrite_not_bool", SUP + ["overwrite=maybe"], ["overwrite='maybe'", "true or false"]),
    ("resume_force_not_bool", SUP + ["resume_force=1"], ["resume_force=1", "true or false"]),
    ("allowed_targets_string", SUP + ["allowed_targets=transferlab."], ["allowed_targets='transferlab.'", "a list of strings"]),
    # unknown keys in every node, `_target_` or not
    ("scheduler_typo", SUP + ["+scheduler.warmup_stepz=3"], ["scheduler.warmup_stepz=3", "did you mean 'warmup_steps'"]),
    ("callback_typo", SUP + ["+callbacks.fault_tolerance.every_n_train_stepz=3"],
     ["callbacks.fault_tolerance.every_n_train_stepz=3", "did you mean 'every_n_train_steps'"]),
    ("logger_typo", SUP + ["+logger.csv.nme=x"], ["logger.csv.nme='x'", "did you mean 'name'"]),
    ("task_monitor_typo", SUP + ["+task.monitr=val/acc"], ["task.monitr='val/acc'", "did you mean 'monitor'"]),
    ("callback_not_a_config", SUP + ["+callbacks.foo=1"], ["callbacks.foo=1", "a callbacks config with a _target_"]),
    ("root_typo", SUP + ["resume=auto", "+resume_forse=true"], ["resume_forse=True", "did you mean 'resume_force'"]),
    # a new key under a section whose keys code reads one by one (schema.CLOSED_SECTIONS): read by nobody
    ("generator_typo", SUP + ["+data.generator.num_sample=300"],
     ["data.generator.num_sample=300", "did you mean 'num_samples'?", "valid keys are ['corr_noise_scale', "]),
    ("decoder_typo", ["task=masked", "model=transformer", "+task.decoder.dpeth=2"],
     ["task.decoder.dpeth=2", "did you mean 'depth'?", "valid keys are ['depth', 'heads', 'mlp_ratio', 'width']"]),
    ("knn_probe_typo", ["task=masked", "model=transformer", "+task.probe.knn.kk=5"],
     ["task.probe.knn.kk=5", "did you mean 'k'?", "'bank_size'"]),
    ("peft_trainer_unread", ["task=finetune", "model=transformer", "peft=lora", "+peft.trainer.gradient_clip_val=1"],
     ["peft.trainer.gradient_clip_val=1", "not a key of peft.trainer", "valid keys are ['max_epochs']"]),
    ("extras_typo", SUP + ["+extras.print_confg=true"], ["extras.print_confg=True", "did you mean 'print_config'?"]),
    # integer keys the code casts with int(): a float would be truncated
    ("decoder_depth_float", ["task=masked", "model=transformer", "task.decoder.depth=2.5"],
     ["task.decoder.depth=2.5", "an integer > 0"]),
    ("decoder_heads_float", ["task=masked", "model=transformer", "task.decoder.heads=2.0"],
     ["task.decoder.heads=2.0", "an integer > 0"]),
    ("projection_float", ["task=contrastive", "task.projection.dim=16.5"], ["task.projection.dim=16.5", "an integer > 0"]),
    ("knn_k_float", ["task=masked", "model=transformer", "task.probe.knn.k=2.5"], ["task.probe.knn.k=2.5", "an integer > 0"]),
    ("generator_samples_float", SUP + ["data.generator.num_samples=300.5"],
     ["data.generator.num_samples=300.5", "an integer > 0"]),
    ("hf_layers_float", SUP + ["data=bbc_news", "model=hf", "model.num_layers=1.5"], ["model.num_layers=1.5", "an integer > 0"]),
    ("freeze_blocks_float", ["task=finetune", "peft=freeze", "peft.trainable_blocks=1.5"],
     ["peft.trainable_blocks=1.5", "an integer >= 0"]),
    # task.monitor names a metric the task logs (else Lightning fails after the first epoch)
    ("monitor_typo", SUP + ["task.monitor=val/acc_typo"],
     ["task.monitor='val/acc_typo'", "did you mean 'val/acc'?", "one of val/acc, val/f1, val/loss, train/acc"]),
    ("monitor_ssl", ["task=masked", "model=transformer", "task.probe.linear.enabled=true", "task.probe.knn.enabled=true",
                     "task.monitor=val/acc", "task.monitor_mode=max"],
     ["task.monitor='val/acc'", "task=masked logs each epoch", "val/loss, val/linear_acc, val/knn_acc"]),
    ("monitor_probe_off", ["task=contrastive", "task.probe.knn.enabled=false", "task.monitor=val/knn_acc", "task.monitor_mode=max"],
     ["task.monitor='val/knn_acc'", "one of val/loss, val/linear_acc, train/loss"]),
    ("monitor_causal_lm", ["task=causal_lm", "data=bbc_news", "model=transformer", "task.monitor=val/ppl"],
     ["task.monitor='val/ppl'", "did you mean 'val/perplexity'?"]),
    ("monitor_pipeline_stage", ["task.stages.finetune.task.monitor=val/accuracy"],
     ["task.monitor='val/accuracy'", "did you mean 'val/acc'?", "(in pipeline stage 'finetune')"]),
    # targets judged by what they resolve to
    ("disguised_os_system", SUP + ["model._target_=transferlab.config.validate.os.system"],
     ["model._target_='transferlab.config.validate.os.system'", "resolves to posix.system"]),
    ("disguised_torch_load", SUP + ["optimizer._target_=torch.optim.optimizer.torch.load"],
     ["optimizer._target_='torch.optim.optimizer.torch.load'", "resolves to torch.serialization.load"]),
    ("target_is_a_module", SUP + ["model._target_=transferlab.backbones"], ["model._target_='transferlab.backbones'", "not a module"]),
    ("callback_outside_allowlist", SUP + ["+callbacks.x._target_=subprocess.Popen"],
     ["callbacks.x._target_='subprocess.Popen'", "allowed_targets"]),
    # pipeline: later stages' mistakes are found before the first stage trains
    ("pipeline_k_shot_too_large", ["task.target.labels_per_class=100000"],
     ["data.labels_per_class=100000", "at most", "stage 'finetune'"]),
    ("pipeline_lora_unknown_target", ["model=transformer", "peft=lora", "peft.target_modules=[qq]"],
     ["peft.target_modules=['qq']", "unknown layer(s) ['qq']", "q_proj"]),
]


@pytest.mark.parametrize("overrides,expected", [r[1:] for r in CONFIG_ROWS], ids=[r[0] for r in CONFIG_ROWS])
def test_bad_config_fails_in_validation(tmp_path, overrides, expected):
    from transferlab.runner.run import preflight

    with pytest.raises(UserError) as err:
        preflight(compose_cfg(overrides, tmp_path))
    message = str(err.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, message
    assert not (tmp_path / "checkpoints").exists()  # nothing trained


OVERRIDE_ROWS = [
    ("typo_key", ["optimizer.lrr=1"], ["optimizer.lrr is not a config key", "lr, weight_decay", "+optimizer.lrr=..."]),
    ("unknown_option", ["model=resnet"], ["model=resnet is not an option of group 'model'", "cnn, ", "transformer"]),
    ("bad_syntax", ["optimizer.lr=["], ["'optimizer.lr=['", "not valid override syntax"]),
    ("append_existing", ["+optimizer.lr=1"], ["An item is already at 'optimizer.lr'"]),
    ("unknown_peft", ["peft=qlora"], ["peft=qlora is not an option of group 'peft'", "lora"]),
    ("unknown_data", ["data=nope"], ["data=nope is not an option of group 'data'", "mnist1d"]),
    ("delete_missing", ["~nokey"], ["Could not delete from config. 'nokey' does not exist."]),
    ("no_value", ["trainer.max_epochs"], ["'trainer.max_epochs' is not valid override syntax"]),
    ("unclosed_interpolation", ["hydra.run.dir=${x"], ["'hydra.run.dir=${x' is not valid override syntax"]),
    ("append_existing_root", ["+seed=3"], ["An item is already at 'seed'", "'++seed=3'"]),
]


@pytest.mark.parametrize("overrides,expected", [r[1:] for r in OVERRIDE_ROWS], ids=[r[0] for r in OVERRIDE_ROWS])
def test_bad_override_is_one_line(tmp_path, overrides, expected):
    from transferlab.runner.entry import hydra_error_line

    with pytest.raises(Exception) as err:
        compose_cfg(overrides, tmp_path)
    line = hydra_error_line(err.value)
    assert line is not None and "\n" not in line
    for fragment in expected:
        assert fragment in line, line


def test_a_group_set_to_null_is_one_line_saying_how_to_leave_it_out(tmp_path, monkeypatch):
    from transferlab.runner.entry import hydra_error_line

    monkeypatch.setattr(sys, "argv", ["train", "task=supervised", "logger=null"])
    with pytest.raises(ValueError) as err:  # Hydra's own: "Config group override must be a string or a list"
        compose_cfg(["task=supervised", "logger=null"], tmp_path)
    assert hydra_error_line(err.value) == "logger=null: a config group takes an option name; to leave the group out type ~logger"


# -- checkpoints ----------------------------------------------------------------------------------

def _mlp(**kw):
    from transferlab.backbones.mlp import MLP

    return MLP(input_shape=[40], hidden=16, depth=2, **kw)


@pytest.fixture
def good_ckpt(tmp_path):
    import torch

    path = tmp_path / "good.ckpt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in _mlp().state_dict().items()}}, path)
    return path


def _crafted(tmp_path: Path, kind: str, good: Path) -> Path:
    import torch

    path = tmp_path / f"{kind}.ckpt"
    if kind == "missing":
        return tmp_path / "nope.ckpt"
    if kind == "empty_folder":
        path = tmp_path / "run"
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif kind == "empty_file":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind in ("pickled_callable", "raw_pickle"):
        marker = tmp_path / "pwned"

        class Evil:  # what an attacker ships: unpickling it would run a shell command
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        if kind == "pickled_callable":
            torch.save({"state_dict": {}, "hook": Evil()}, path)
        else:
            with open(path, "wb") as f:
                pickle.dump({"state_dict": {}, "hook": Evil()}, f)
    elif kind == "torch_saved_function":
        torch.save({"state_dict": {}, "fn": os.getcwd}, path)
    elif kind == "not_a_dict":
        torch.save([1, 2, 3], path)
    elif kind == "no_backbone":
        torch.save({"state_dict": {}, "epoch": 1}, path)
    elif kind == "other_model":
        torch.save({"state_dict": {f"backbone.{k}": v for k, v in _mlp(dropout=0.0).state_dict().items()
                                   if not k.startswith("blocks.1")}}, path)
    elif kind == "other_width":
        from transferlab.backbones.mlp import MLP

        torch.save({"state_dict": {f"backbone.{k}": v for k, v in MLP(input_shape=[40], hidden=32, depth=2).state_dict().items()}}, path)
    return path


CKPT_ROWS = [
    ("missing", ["does not exist"]),
    ("empty_folder", ["is a folder without checkpoints/last.ckpt"]),
    ("garbage", ["is not a readable checkpoint"]),
    ("empty_file", ["is not a readable checkpoint"]),
    ("truncated", ["is not a readable checkpoint"]),
    ("pickled_callable", ["was refused: loading it would import posix.system", "never code"]),
    ("raw_pickle", ["is not a readable checkpoint"]),
    ("torch_saved_function", ["was refused: loading it would import posix.getcwd"]),
    ("not_a_dict", ["holds a list, not a checkpoint dict"]),
    ("no_backbone", ["holds no backbone weights"]),
    ("other_model", ["does not match model backbone", "missing blocks.1"]),
    ("other_width", ["does not match model backbone", "shape mismatch"]),
]


@pytest.mark.parametrize("kind,expected", CKPT_ROWS, ids=[r[0] for r in CKPT_ROWS])
def test_bad_checkpoint_is_refused(tmp_path, good_ckpt, kind, expected):
    from transferlab.errors import CheckpointError
    from transferlab.utils.checkpoint import load_backbone

    path = _crafted(tmp_path, kind, good_ckpt)
    with pytest.raises(CheckpointError) as err:
        load_backbone(_mlp(), path)
    message = str(err.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, message
    assert not (tmp_path / "pwned").exists()  # nothing in the file ran
    assert load_backbone(_mlp(), good_ckpt) == good_ckpt  # the good one still loads


def test_checkpoint_config_cannot_instantiate_outside_allowlist(tmp_path):
    """eval rebuilds the model from the checkpoint's stored config: a foreign `_target_` there is refused."""
    import torch

    from transferlab.eval import evaluate

    cfg = compose_cfg(["task=supervised", "model=mlp"], tmp_path)
    stored = compose_cfg(["task=supervised", "model=mlp"], tmp_path)
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(stored, resolve=True)
    config["model"]["_target_"] = "subprocess.call"
    path = tmp_path / "evil_config.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": config}}, path)
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"ckpt_path={path}", "data=digits", f"paths.output_dir={tmp_path}",
                                                     "trainer.enable_progress_bar=false"])
    with pytest.raises(UserError) as err:  # a CheckpointError: the file's config is refused
        evaluate(cfg)
    assert "_target_='subprocess.call' is invalid" in str(err.value)
    assert "allowed_targets" in str(err.value)


def _resume_file(tmp_path: Path, kind: str) -> Path:
    import torch
    from omegaconf import OmegaConf

    path = tmp_path / "given.ckpt"
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "truncated":
        torch.save({"state_dict": {"w": torch.zeros(1000)}, "optimizer_states": []}, path)
        path.write_bytes(path.read_bytes()[:500])
    elif kind == "weights_only":
        torch.save({"state_dict": {"w": torch.zeros(3)}}, path)
    elif kind == "other_width":
        stored = OmegaConf.to_container(compose_cfg(SUP + ["model=mlp", "model.hidden=32"], tmp_path), resolve=True)
        torch.save({"state_dict": {}, "optimizer_states": [], "hyper_parameters": {"config": stored}}, path)
    return path


RESUME_ROWS = [
    ("zero_byte", ["given.ckpt", "is not a readable checkpoint"]),
    ("text", ["given.ckpt", "is not a readable checkpoint"]),
    ("truncated", ["given.ckpt", "is not a readable checkpoint"]),
    ("weights_only", ["is not a training checkpoint (no optimizer state)", "task.pretrained"]),
    ("other_width", ["differs from the checkpoint", "model.hidden: 32 -> 256", "resume_force=true"]),
]


@pytest.mark.parametrize("kind,expected", RESUME_ROWS, ids=[r[0] for r in RESUME_ROWS])
def test_bad_resume_checkpoint_is_one_line(tmp_path, kind, expected):
    from transferlab.runner.run_folder import check_resume_matches

    path = _resume_file(tmp_path, kind)
    with pytest.raises(UserError) as err:
        check_resume_matches(compose_cfg(SUP + ["model=mlp", f"resume={path}"], tmp_path / "run"), tmp_path / "run")
    message = str(err.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, message


# -- user data files ------------------------------------------------------------------------------

DATA_ROWS = [
    ("empty_file", "data.csv", "", ["the file is empty"]),
    ("header_only", "data.csv", "x1,x2,label\n", ["has no rows"]),
    ("no_label_column", "data.csv", "x1,x2,y\n1,2,a\n3,4,b\n", ["data.label_column='label'", "its columns are"]),
    ("single_class", "data.csv", "x1,x2,label\n" + "1,2,a\n" * 20, ["single class"]),
    ("wrong_format", "data.xlsx", "x1,label\n1,a\n", ["a file ending in one of"]),
    ("bad_json_line", "data.jsonl", '{"x1": 1, "label": "a"}\n{"x1": 2, "label": \n', ["line 2 is not JSON"]),
    ("missing_file", None, None, ["no such file"]),
    ("text_cell_in_numeric_column", "data.csv", "x1,x2,label\n1,2,a\n3,abc,b\n5,6,a\n",
     ["column 'x2' row 2: 'abc' is not a number", "data.feature_columns"]),
    ("duplicate_column", "data.csv", "x1,x1,label\n1,2,a\n3,4,b\n", ["column name 'x1' appears twice in the header (columns 1 and 2)"]),
    ("inf_cell", "data.csv", "x1,x2,label\n1,2,a\n3,inf,b\n", ["column 'x2' row 2: 'inf' is not a finite number"]),
    ("negative_inf_cell", "data.csv", "x1,label\n-inf,a\n3,b\n", ["column 'x1' row 1: '-inf' is not a finite number"]),
    ("ragged_long_row", "data.csv", "x1,x2,label\n1,2,a\n3,4,b,9\n", ["line 3 has 4 cells, the header has 3"]),
    ("ragged_short_row", "data.csv", "x1,x2,label\n1,2,a\n3,b\n", ["line 3 has 2 cells, the header has 3"]),
    ("binary_file", "data.csv", bytes(range(256)) * 8, ["not a UTF-8 text file"]),
    ("nul_byte_in_cell", "data.csv", "x1,label\n1\x00,a\n3,b\n", ["column 'x1' row 1: '1\\x00' is not a number"]),
    ("missing_feature", "data.csv", "x1,x2,label\n1,,a\n3,4,b\n", ["column 'x2' has 1 missing value(s)"]),
    ("missing_label", "data.csv", "x1,label\n1,a\n3,\n", ["column 'label' has 1 missing label(s)"]),
    ("label_only", "data.csv", "label\na\nb\n", ["no numeric feature column besides the label"]),
    ("json_scalar", "data.json", "5", ["a JSON file must hold a list of row objects"]),
    ("json_invalid", "data.json", "[{\"x1\": 1,", ["not valid JSON"]),
    ("jsonl_row_not_object", "data.jsonl", '{"x1": 1, "label": "a"}\n[1, 2]\n', ["row 2 is a list, not an object"]),
    ("tsv_duplicate_column", "data.tsv", "a\ta\tlabel\n1\t2\tx\n", ["column name 'a' appears twice"]),
]


@pytest.mark.parametrize("name,content,expected", [r[1:] for r in DATA_ROWS], ids=[r[0] for r in DATA_ROWS])
def test_bad_data_file(tmp_path, name, content, expected):
    pytest.importorskip("transferlab.data.tabular", reason="data=csv (data/tabular.py) not present")
    from transferlab.runner.build import build_datamodule

    path = tmp_path / (name or "absent.csv")
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    cfg = compose_cfg(SUP + ["data=csv", "model=mlp", f"data.path={path}"], tmp_path)
    with pytest.raises(UserError) as err:
        dm = build_datamodule(cfg)
        dm.setup("fit")
    message = str(err.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, message


# -- the real command line ------------------------------------------------------------------------

def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return proc_helpers.run([sys.executable, "-m", "transferlab.train", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                            timeout=120)


@pytest.mark.parametrize("args,expected", [
    (["optimizer.lrr=1"], "error: optimizer.lrr is not a config key; valid keys here: name, lr"),
    (["task=supervised", "optimizer.lr=-1"], "error: optimizer.lr=-1 is invalid: a number > 0"),
], ids=["hydra_override", "schema"])
def test_cli_one_line_exit_2(tmp_path, args, expected):
    r = _cli(*args, f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines == [expected + lines[0][len(expected):]] and lines[0].startswith(expected), r.stderr
    assert "Traceback" not in r.stderr


def test_config_error_never_imports_torch(tmp_path):
    code = ("import sys; sys.path.insert(0, 'tests'); from conftest import compose_cfg; "
            "from transferlab.config.validate import validate; from transferlab.errors import UserError\n"
            f"try:\n    validate(compose_cfg(['task=supervised', 'optimizer.lr=-1'], {str(tmp_path)!r}))\n"
            "except UserError as e:\n    print('caught', e)\n"
            "print('torch' in sys.modules, 'pytorch_lightning' in sys.modules)")
    r = proc_helpers.run([sys.executable, "-c", code], cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "caught optimizer.lr=-1" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "False False"
