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


# -- user data files ------------------------------------------------------------------------------

DATA_ROWS = [
    ("empty_file", "data.csv", "", ["the file is empty"]),
    ("header_only", "data.csv", "x1,x2,label\n", ["has no rows"]),
    ("no_label_column", "data.csv", "x1,x2,y\n1,2,a\n3,4,b\n", ["data.label_column='label'", "its columns are"]),
    ("single_class", "data.csv", "x1,x2,label\n" + "1,2,a\n" * 20, ["single class"]),
    ("wrong_format", "data.xlsx", "x1,label\n1,a\n", ["a file ending in one of"]),
    ("bad_json_line", "data.jsonl", '{"x1": 1, "label": "a"}\n{"x1": 2, "label": \n', ["line 2 is not JSON"]),
    ("missing_file", None, None, ["no such file"]),
]


@pytest.mark.parametrize("name,content,expected", [r[1:] for r in DATA_ROWS], ids=[r[0] for r in DATA_ROWS])
def test_bad_data_file(tmp_path, name, content, expected):
    pytest.importorskip("transferlab.data.tabular", reason="data=csv (data/tabular.py) not present")
    from transferlab.runner.build import build_datamodule

    path = tmp_path / (name or "absent.csv")
    if content is not None:
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
