"""Attacks from files and from the command line: nothing runs, no secret is written, no run is lost.

Each code-execution attack points at a marker file; the test asserts the marker was NOT created.
"""

import os
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_cfg
from omegaconf import OmegaConf
from proc_helpers import run

from transferlab.errors import UserError

SUP = ["task=supervised", "model=mlp", "data=digits"]


# -- 1. instantiate only what is allowed --------------------------------------------------------------

@pytest.mark.parametrize("path,expected", [
    ("torch.optim.optimizer.torch.load", "resolves to torch.serialization.load"),
    ("torch.optim.optimizer.torch.save", "resolves to torch.serialization.save"),
    ("transferlab.config.validate.os.system", "resolves to posix.system"),
    ("transferlab.runner.entry.os.kill", "resolves to posix.kill"),
    ("torch.optim.optimizer.torch.hub.load", "resolves to torch.hub.load"),
    ("transferlab.runner.entry.INTERRUPTED", "must name a class or function, not a dict"),
    ("transferlab.backbones", "must name a class or function, not a module"),
    ("os.system", "targets must start with one of"),
    ("transferlab.nope.Nope", "an importable class or function"),
    ("transferlab..x", "not a dotted Python name"),
])
def test_gate_judges_what_a_target_resolves_to(path, expected):
    from transferlab.config.instantiate import DEFAULT_ALLOWED, resolve_target

    with pytest.raises(UserError) as err:
        resolve_target(path, DEFAULT_ALLOWED)
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("path", ["torch.optim.AdamW", "transferlab.tasks.optim.warmup_cosine",
                                  "pytorch_lightning.Trainer", "transferlab.backbones.mlp.MLP"])
def test_gate_allows_the_real_targets(path):
    from transferlab.config.instantiate import DEFAULT_ALLOWED, resolve_target

    assert callable(resolve_target(path, DEFAULT_ALLOWED))


def test_instantiate_refuses_a_disguised_target_before_calling_it(tmp_path):
    from transferlab.config.instantiate import instantiate

    marker = tmp_path / "pwned"
    with pytest.raises(UserError, match="resolves to posix.system"):
        instantiate({"_target_": "transferlab.config.validate.os.system", "command": f"touch {marker}"})
    with pytest.raises(UserError, match="resolves to posix.system"):  # nested, as a constructor argument
        instantiate({"_target_": "transferlab.backbones.mlp.MLP", "input_shape": [4],
                     "dropout": {"_target_": "transferlab.config.validate.os.system", "command": f"touch {marker}"}})
    assert not marker.exists()


@pytest.mark.parametrize("override,expected", [
    ("model._target_=transferlab.config.validate.os.system", "resolves to posix.system"),
    ("optimizer._target_=torch.optim.optimizer.torch.load", "resolves to torch.serialization.load"),
    ("+callbacks.evil={_target_:transferlab.config.validate.os.system,command:'touch PWNED'}", "resolves to posix.system"),
    ("+logger.evil={_target_:transferlab.runner.entry.os.system,command:'touch PWNED'}", "resolves to posix.system"),
])
def test_config_targets_are_judged_in_validation(tmp_path, override, expected):
    from transferlab.runner.run import preflight

    with pytest.raises(UserError) as err:
        preflight(compose_cfg(SUP + [override], tmp_path))
    assert expected in str(err.value)
    assert not (ROOT / "PWNED").exists()


def _stored_config(tmp_path: Path) -> dict:
    return OmegaConf.to_container(compose_cfg(SUP, tmp_path / "run"), resolve=True)


def _attack(config: dict, kind: str, marker: Path) -> dict:
    sh = {"command": f"touch {marker}"}
    if kind == "model_reaches_os_system":
        config["model"] = {"_target_": "transferlab.config.validate.os.system", **sh}
    elif kind == "model_reaches_torch_load":
        config["model"] = {"_target_": "torch.optim.optimizer.torch.load", "f": str(marker)}
    elif kind == "nested_target":
        config["model"]["dropout"] = {"_target_": "transferlab.config.validate.os.system", **sh}
    elif kind == "args_key":
        config["model"]["_args_"] = [f"touch {marker}"]
    elif kind == "allowed_function_not_a_task":
        config["task"] = {"_target_": "transferlab.utils.io.atomic_write_text", "path": str(marker), "text": "x"}
    elif kind == "optimizer_reaches_torch_save":
        config["optimizer"] = {"_target_": "torch.optim.optimizer.torch.save", "obj": 1, "f": str(marker)}
    elif kind == "scheduler_reaches_os_system":
        config["scheduler"] = {"_target_": "transferlab.runner.entry.os.system", "_partial_": False, **sh}
    elif kind == "data_reaches_os_system":
        config["data"] = {"_target_": "transferlab.distributed.launch.os.system", **sh}
    elif kind == "widened_allowlist":
        config["allowed_targets"] = ["os.", "posix."]
        config["model"] = {"_target_": "os.system", **sh}
    elif kind == "interpolation":
        config["model"]["hidden"] = "${oc.env:HOME}"
    elif kind == "peft_reaches_builtin":
        config["peft"] = {"_target_": "transferlab.adaptation.base.nn.Module"}
    return config


ATTACKS = [
    ("model_reaches_os_system", "resolves to posix.system"),
    ("model_reaches_torch_load", "resolves to torch.serialization.load"),
    ("nested_target", "stored config key model.dropout._target_ is refused"),
    ("args_key", "stored config key model._args_ is refused"),
    ("allowed_function_not_a_task", "is not a pytorch_lightning.LightningModule"),
    ("optimizer_reaches_torch_save", "resolves to torch.serialization.save"),
    ("scheduler_reaches_os_system", "resolves to posix.system"),
    ("data_reaches_os_system", "resolves to posix.system"),
    ("widened_allowlist", "targets must start with one of ['transferlab."),
    ("interpolation", "no interpolation from a file"),
    ("peft_reaches_builtin", "resolves to torch.nn.modules.module.Module"),
]


@pytest.mark.parametrize("kind,expected", ATTACKS, ids=[a[0] for a in ATTACKS])
@pytest.mark.parametrize("path", ["restore_task", "restore_backbone"])
def test_checkpoint_config_attack_is_refused(tmp_path, kind, expected, path):
    """eval, generate, export (restore_task) and knn (restore_backbone) rebuild through these two functions."""
    from transferlab.config.instantiate import DEFAULT_ALLOWED
    from transferlab.runner import restore

    marker = tmp_path / "pwned"
    config = _attack(_stored_config(tmp_path), kind, marker)
    if path == "restore_backbone" and kind in ("allowed_function_not_a_task", "optimizer_reaches_torch_save",
                                               "scheduler_reaches_os_system", "peft_reaches_builtin"):
        pytest.skip("restore_backbone reads only the model (and data) sections")
    file = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": config}}, file)
    with pytest.raises(UserError) as err:
        getattr(restore, path)(file, list(DEFAULT_ALLOWED))
    message = str(err.value)
    assert expected in message and "\n" not in message, message
    assert not marker.exists()


def test_adapter_file_config_goes_through_the_same_gate(tmp_path):
    from transferlab.adaptation.artifact import FORMAT
    from transferlab.config.instantiate import DEFAULT_ALLOWED
    from transferlab.runner.restore import restore_task

    marker = tmp_path / "pwned"
    config = _attack(_stored_config(tmp_path), "model_reaches_os_system", marker)
    file = tmp_path / "adapter.pt"
    torch.save({"format": FORMAT, "config": config, "adapter": {}}, file)
    with pytest.raises(UserError, match="resolves to posix.system"):
        restore_task(file, list(DEFAULT_ALLOWED))
    assert not marker.exists()


def test_export_ignores_the_checkpoints_own_allowlist(tmp_path):
    from transferlab.export import export

    marker = tmp_path / "pwned"
    config = _attack(_stored_config(tmp_path), "widened_allowlist", marker)
    file = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": config}}, file)
    with pytest.raises(UserError, match="a checkpoint never widens allowed_targets"):
        export(str(file), ["transferlab.", "torch.optim."])
    assert not marker.exists()


def test_a_good_stored_config_passes_the_schema(tmp_path):
    from transferlab.config.instantiate import DEFAULT_ALLOWED
    from transferlab.runner.restore import MODEL_SECTIONS, check_stored_config

    check_stored_config(_stored_config(tmp_path), MODEL_SECTIONS + ("data",), DEFAULT_ALLOWED, tmp_path / "x.ckpt")


def test_nan_normalization_in_a_checkpoint_is_refused(tmp_path):
    from transferlab.errors import CheckpointError
    from transferlab.runner.build import build_datamodule
    from transferlab.runner.restore import restore_datamodule_state

    dm = build_datamodule(compose_cfg(SUP, tmp_path))
    ckpt = {type(dm).__qualname__: {"normalization": [torch.tensor([0.0, float("nan")]), torch.tensor([1.0, 1.0])]}}
    with pytest.raises(CheckpointError, match=r"normalization\[0\] is not finite"):
        restore_datamodule_state(dm, ckpt, "x.ckpt")
    restore_datamodule_state(dm, {type(dm).__qualname__: {"normalization": [0.5, 2.0]}}, "x.ckpt")
    assert dm.normalization == (0.5, 2.0)


def _cli(*args: str, env: dict | None = None, module: str = "transferlab.train", timeout: float = 180):
    full = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}
    return run([sys.executable, "-m", module, *args], timeout=timeout, cwd=ROOT, env=full)


def test_hydra_callbacks_from_the_command_line_go_through_the_gate(tmp_path):
    marker = tmp_path / "pwned"
    r = _cli(f"+hydra.callbacks.evil={{_target_:transferlab.config.validate.os.system,command:'touch {marker}'}}",
             f"hydra.run.dir={tmp_path / 'run'}", "task=supervised")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "resolves to posix.system" in r.stderr
    assert not marker.exists() and not (tmp_path / "run").exists()  # refused before Hydra wrote anything
