"""Attacks from files and from the command line: nothing runs, no secret is written, no run is lost.

Each code-execution attack points at a marker file; the test asserts the marker was NOT created.
"""

import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_cfg
from omegaconf import OmegaConf
from proc_helpers import run, started

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
    elif kind == "remote_code":  # Hugging Face from_pretrained would import the model folder's own Python
        config["model"]["config"] = {"trust_remote_code": True}
    elif kind == "pickled_weights":  # ... or unpickle its pytorch_model.bin
        config["model"]["config"] = {"weights_only": False}
    elif kind == "partial_model":
        config["model"]["_partial_"] = True
    elif kind == "unbuildable_value":
        config["model"]["hidden"] = -5
    elif kind == "unknown_model_key":  # MLP takes `**_`: without the key check the typo would be dropped silently
        config["model"]["hiddn"] = 64
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
    ("remote_code", "stored config key model.config.trust_remote_code is refused"),
    ("pickled_weights", "stored config key model.config.weights_only is refused"),
    ("partial_model", "stored config key model._partial_ is refused"),
    ("unbuildable_value", "its stored config does not build a model (RuntimeError: "),
    ("unknown_model_key", "stored config model.hiddn=64 is invalid: not a key of MLP: did you mean 'hidden'?"),
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


@pytest.mark.parametrize("path", ["restore_task", "restore_backbone"])
def test_the_stored_data_section_is_checked_even_when_data_is_given(tmp_path, path):
    """eval's `+data.key=v` merges into the stored data section: that section passes the gate first."""
    from transferlab.config.instantiate import DEFAULT_ALLOWED
    from transferlab.runner import restore

    marker = tmp_path / "pwned"
    config = _stored_config(tmp_path)
    config["data"]["generator"] = {"_target_": "transferlab.utils.io.atomic_write_text", "path": str(marker), "text": "x"}
    file = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": config}}, file)
    merged = OmegaConf.merge(OmegaConf.create(config["data"]), {"batch_size": 32})
    with pytest.raises(UserError, match="stored config key data.generator._target_ is refused"):
        getattr(restore, path)(file, list(DEFAULT_ALLOWED), data=merged)
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


def _real_checkpoint(tmp_path: Path, kind: str = "ckpt", **model) -> Path:
    """The weights and run config of a tiny supervised MLP (hidden 16, one block), saved as a checkpoint or an
    adapter file; `model` keys are changed in the stored config only (what a crafted file does)."""
    from transferlab.adaptation.artifact import FORMAT
    from transferlab.runner.build import build_backbone, build_datamodule, build_task

    cfg = compose_cfg(SUP + ["model.hidden=16", "model.depth=1"], tmp_path / "run")
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    task = build_task(cfg, build_backbone(cfg, datamodule.spec), datamodule.spec)
    config = OmegaConf.to_container(cfg, resolve=True)
    config["model"].update(model)
    file = tmp_path / ("adapter.pt" if kind == "adapter" else "model.ckpt")
    if kind == "adapter":
        torch.save({"format": FORMAT, "config": config, "state_dict": task.state_dict()}, file)
    else:
        torch.save({"state_dict": task.state_dict(), "hyper_parameters": {"config": config}}, file)
    return file


@pytest.fixture
def mlp_devices(monkeypatch) -> list[str]:
    """The default device each MLP backbone is constructed on (meta: shapes without memory)."""
    import functools

    from transferlab.backbones.mlp import MLP

    devices: list[str] = []
    real_init = MLP.__init__

    @functools.wraps(real_init)
    def recording_init(self, *args, **kwargs):
        devices.append(torch.get_default_device().type)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(MLP, "__init__", recording_init)
    return devices


RESTORES = [("restore_task", "ckpt"), ("restore_backbone", "ckpt"), ("restore_task", "adapter")]


@pytest.mark.parametrize("path,kind", RESTORES, ids=["task", "backbone", "adapter_file"])
def test_a_stored_size_the_weights_do_not_have_is_refused_before_a_real_model_is_built(tmp_path, mlp_devices, path, kind):
    """`model.hidden: 2**40` over hidden-16 weights: a 256 TiB first layer. It is built on the meta device only
    and refused by the shapes; a real build would try to allocate it first."""
    from transferlab.config.instantiate import DEFAULT_ALLOWED
    from transferlab.runner import restore

    file = _real_checkpoint(tmp_path, kind, hidden=2**40)
    mlp_devices.clear()
    with pytest.raises(UserError) as err:
        getattr(restore, path)(file, list(DEFAULT_ALLOWED))
    message = str(err.value)
    what = {"restore_task": "the rebuilt model" if kind == "ckpt" else "this model (peft=None in the file)",
            "restore_backbone": "model backbone"}[path]
    prefix = "backbone." if path == "restore_task" else ""
    assert message.startswith(f"{file} does not match {what}: shape mismatch {prefix}blocks.0.fc.bias (16,) vs "
                              f"({2**40},)"), message
    assert "\n" not in message
    assert mlp_devices == ["meta"]  # the backbone was never constructed with memory


@pytest.mark.parametrize("path,kind", RESTORES, ids=["task", "backbone", "adapter_file"])
def test_a_stored_depth_the_weights_do_not_have_stops_the_meta_build_at_the_files_tensor_count(tmp_path, monkeypatch,
                                                                                           path, kind):
    """`model.depth: 10**6` over one block's weights: without memory each block still takes time to construct
    (minutes for 10**6); the build stops once it registers more parameters than twice the file's tensors."""
    from torch import nn

    from transferlab.config.instantiate import DEFAULT_ALLOWED
    from transferlab.runner import restore

    file = _real_checkpoint(tmp_path, kind, depth=10**6)
    blocks, real_init = [], nn.LayerNorm.__init__  # one LayerNorm a block
    monkeypatch.setattr(nn.LayerNorm, "__init__", lambda self, *a, **k: (blocks.append(1), real_init(self, *a, **k))[1])
    with pytest.raises(UserError) as err:
        getattr(restore, path)(file, list(DEFAULT_ALLOWED))
    tensors = 6  # the file's fc, norm and head weights and biases (this adapter file has no base)
    assert str(err.value) == (f"{file}: its stored config builds more than {2 * tensors + 64} parameters, but the file "
                              f"holds {tensors} tensors (a size or depth its weights do not have)")
    assert len(blocks) < 40  # stopped within the first blocks, not after 10**6


@pytest.mark.parametrize("path,kind", RESTORES, ids=["task", "backbone", "adapter_file"])
def test_a_fitting_file_is_checked_on_meta_then_built_for_real_with_its_weights(tmp_path, mlp_devices, path, kind):
    from transferlab.config.instantiate import DEFAULT_ALLOWED
    from transferlab.runner import restore

    file = _real_checkpoint(tmp_path, kind)
    saved = torch.load(file, weights_only=True)["state_dict"]
    mlp_devices.clear()
    restored = getattr(restore, path)(file, list(DEFAULT_ALLOWED))
    assert mlp_devices == ["meta", "cpu"]
    if path == "restore_task":
        state = restored.task.state_dict()
    else:
        state = {f"backbone.{k}": v for k, v in restored.backbone.state_dict().items()}
        saved = {k: v for k, v in saved.items() if k.startswith("backbone.")}
    assert set(state) == set(saved) and len(state) == (6 if path == "restore_task" else 4)  # fc, norm (, head)
    assert all(v.device.type == "cpu" and torch.equal(v, saved[k]) for k, v in state.items())


@pytest.mark.parametrize("key,value,target,valid", [
    ("hiddn", 64, "MLP", "did you mean 'hidden'? valid keys are ['depth', 'dropout', 'hidden', 'name']"),
    ("vocab_size", 5, "MLP", "valid keys are ['depth', 'dropout', 'hidden', 'name']"),  # build.py passes it, not a file
])
@pytest.mark.parametrize("path,kind", RESTORES, ids=["task", "backbone", "adapter_file"])
def test_a_stored_model_key_the_backbone_does_not_take_is_refused_as_a_typed_one(tmp_path, key, value, target, valid,
                                                                               path, kind):
    """The backbones take `**_` (the contract passes every one vocab_size and pad_id), so without the check the
    file's key would be dropped and its weights loaded as if it were not there. The message is the typed one's."""
    from transferlab.config.instantiate import DEFAULT_ALLOWED
    from transferlab.runner import restore
    from transferlab.runner.run import preflight

    typed = f"model.{key}={value!r} is invalid: not a key of {target}: {valid}"
    with pytest.raises(UserError) as err:
        preflight(compose_cfg(SUP + [f"+model.{key}={value}"], tmp_path / "typed"))
    assert str(err.value) == typed
    file = _real_checkpoint(tmp_path, kind, **{key: value})
    with pytest.raises(UserError) as err:
        getattr(restore, path)(file, list(DEFAULT_ALLOWED))
    assert str(err.value) == f"{file}: stored config {typed}"
    assert getattr(restore, path)(_real_checkpoint(tmp_path, kind), list(DEFAULT_ALLOWED)).backbone.feature_dim == 16


def test_a_checkpoint_path_that_is_not_a_regular_file_is_named_and_never_read(tmp_path):
    """A symlink to /dev/zero (torch.load would read it until memory runs out) or a FIFO (opening waits for a writer)."""
    import os

    from transferlab.errors import CheckpointError
    from transferlab.utils.checkpoint import load_checkpoint

    os.symlink("/dev/zero", tmp_path / "zero.ckpt")
    os.mkfifo(tmp_path / "pipe.ckpt")
    for name, what in (("zero.ckpt", "a character device (a symlink to '/dev/zero')"), ("pipe.ckpt", "a FIFO (named pipe)")):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(tmp_path / name)
        assert str(err.value) == (f"checkpoint {tmp_path / name} is not a regular file but {what}: pass a checkpoint "
                                  "file or a run folder")
    with pytest.raises(CheckpointError, match="nope.ckpt does not exist$"):
        load_checkpoint(tmp_path / "nope.ckpt")


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


def test_weights_that_would_load_silently_wrong_are_refused():
    from transferlab.errors import CheckpointError
    from transferlab.utils.checkpoint import check_state_matches

    own = {"w": torch.zeros(2, 2), "head.w": torch.zeros(3), "steps": torch.zeros((), dtype=torch.long)}
    good = {"w": torch.ones(2, 2), "head.w": torch.ones(3), "steps": torch.tensor(4)}
    check_state_matches(own, good, "f.ckpt", "the model")
    for state, expected in [
        ({**good, "w": torch.ones(2, 2, dtype=torch.long)}, "dtype mismatch w torch.int64 vs torch.float32"),
        ({**good, "w": torch.ones(2, 2, dtype=torch.complex64)}, "dtype mismatch w torch.complex64"),
        ({**good, "head.w": torch.tensor([1.0, float("nan"), 0.0])}, "not finite (NaN/inf) head.w"),
        ({**good, "w": [[1.0, 1.0], [1.0, 1.0]]}, "not tensors w"),
        ([1, 2], "its weights are a list, not a dict of tensors"),
    ]:
        with pytest.raises(CheckpointError) as err:
            check_state_matches(own, state, "f.ckpt", "the model")
        assert str(err.value).startswith("f.ckpt does not match the model: ") and expected in str(err.value), err.value
    # an adapter file (strict=False) must still hold every trainable tensor: a left-out head would stay random
    check_state_matches(own, {"w": torch.ones(2, 2)}, "a.pt", "this model", strict=False)
    with pytest.raises(CheckpointError, match="missing head.w"):
        check_state_matches(own, {"w": torch.ones(2, 2)}, "a.pt", "this model", strict=False, required={"w", "head.w"})


def test_a_non_positive_normalization_std_in_a_checkpoint_is_refused(tmp_path):
    from transferlab.errors import CheckpointError
    from transferlab.runner.build import build_datamodule
    from transferlab.runner.restore import restore_datamodule_state

    dm = build_datamodule(compose_cfg(SUP, tmp_path))
    for std in (0.0, -1.0, torch.tensor([1.0, 0.0])):
        with pytest.raises(CheckpointError, match="normalization's std .* is not positive"):
            restore_datamodule_state(dm, {type(dm).__qualname__: {"normalization": [0.5, std]}}, "x.ckpt")


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


# -- 2. secrets never touch disk ----------------------------------------------------------------------

SECRET_ARGS = [
    ("+logger.wandb.api_key=abc123def456", "logger.wandb.api_key: a literal secret", "${oc.env:WANDB_API_KEY}"),
    ("+logger.wandb={api_key:abc123def456}", "logger.wandb.api_key: a literal secret", "${oc.env:"),
    ("+token=abc123def456", "token: a literal secret", "token='${oc.env:TOKEN}'"),
    ("+hub.hf_token=hf_abcdefgh", "hub.hf_token: a literal secret", "${oc.env:HF_TOKEN}"),
    ("+db.password=hunter2hunter2", "db.password: a literal secret", "${oc.env:PASSWORD}"),
    ("+aws.secret_access_key=AKIAxyz", None, None),  # not a key name we mask (see below): allowed
    ("+logger.wandb.api_key=aaaaaaaa,bbbbbbbb", "logger.wandb.api_key: a literal secret", "${oc.env:"),
    ("+x.list=[1,{auth_token:abcdefgh}]", "x.list[1].auth_token: a literal secret", "${oc.env:"),
    ("+note=my-env-secret-value", "note: the override holds the value of a secret environment variable", "${oc.env:NAME}"),
    ("+logger.wandb.api_key=${oc.env:WANDB_API_KEY}", None, None),
    ("+tokenizer.pad_token=[PAD]", None, None),
    ("+logger.wandb.api_key=null", None, None),
    # a reference is safe only as a pure reference: a default with text in it, or text around it, is a literal
    ("+x.api_key=${oc.env:UNSET_VAR,abc123def456}", "x.api_key: a literal secret", "${oc.env:"),
    ("+x.api_key=${oc.env:HOME}abc123def456", "x.api_key: a literal secret", "${oc.env:"),
    ("+x.api_key=${oc.env:WANDB_API_KEY,null}", None, None),
    # every text inside a secret-named key's list or dict
    ("+x.api_key=[abc123def456]", "x.api_key: a literal secret", "${oc.env:"),
    ("+x.credentials={user:bob,pass:abc123def456}", "x.credentials: a literal secret", "${oc.env:"),
    # camelCase and hyphens read as snake_case
    ("+x.clientSecret=abc123def456", "x.clientSecret: a literal secret", "${oc.env:"),
    ("+x.dbPassword=abc123def456", "x.dbPassword: a literal secret", "${oc.env:"),
    ("+x.private-key=abc123def456", "x.private-key: a literal secret", "${oc.env:"),
    ("+x.oauth_token=abc123def456", "x.oauth_token: a literal secret", "${oc.env:"),
    ("+tokenizer.mask_token=[MASK]", None, None),
]


@pytest.mark.parametrize("arg,expected,hint", SECRET_ARGS, ids=[a[0][:40] for a in SECRET_ARGS])
def test_literal_secret_on_the_command_line_is_refused(monkeypatch, arg, expected, hint):
    from transferlab.runner.cli_guard import check_command_line

    monkeypatch.setenv("MY_SERVICE_TOKEN", "my-env-secret-value")
    if expected is None:
        if "secret_access_key" in arg:  # secret_access_key ends in access_key: refused after all
            with pytest.raises(UserError, match="a literal secret"):
                check_command_line([arg])
            return
        check_command_line([arg])
        return
    with pytest.raises(UserError) as err:
        check_command_line(["task=supervised", arg])
    message = str(err.value)
    assert message.startswith(expected) and hint in message and "\n" not in message, message
    assert "abc123def456" not in message and "my-env-secret-value" not in message


def test_redaction_masks_every_value_under_a_secret_name_and_overrides_stay_references(monkeypatch):
    from transferlab.tracking.redact import mask_overrides, redact
    from transferlab.utils.hydra import task_overrides

    monkeypatch.setenv("DB_PASSWORD", "s3cr3t-value")
    masked = redact({"db": {"dbPassword": "a", "api_key": ["b", {"x": "c"}], "credentials": {"user": "bob"},
                            "token": None, "pad_token": "[PAD]"}})
    assert masked == {"db": {"dbPassword": "***", "api_key": ["***", {"x": "***"}], "credentials": {"user": "***"},
                             "token": None, "pad_token": "[PAD]"}}
    # Hydra's override list resolves `${oc.env:...}` when iterated; records read it as typed, then mask
    hc = OmegaConf.create({"overrides": {"task": ["+db.password=${oc.env:DB_PASSWORD}", "+note=${oc.env:DB_PASSWORD}", "seed=1"]}})
    assert list(hc.overrides.task)[0] == "+db.password=s3cr3t-value"  # what the old code used
    typed = task_overrides(hc)
    assert typed == ["+db.password=${oc.env:DB_PASSWORD}", "+note=${oc.env:DB_PASSWORD}", "seed=1"]
    assert mask_overrides(typed + ["+x.clientSecret=abc", "lr=s3cr3t-value"]) == [
        "+db.password=***", "+note=${oc.env:DB_PASSWORD}", "seed=1", "+x.clientSecret=***", "lr=***"]


def test_config_tree_masks_secret_keys_and_shows_a_pipelines_stage_keys_as_written(tmp_path, monkeypatch):
    from transferlab.runner.extras import config_tree

    monkeypatch.setenv("MY_PLAIN_VAR", "value-of-a-plain-var")  # a name that does not look secret
    cfg = compose_cfg(["+db.password=${oc.env:MY_PLAIN_VAR}", "+token=${oc.env:MY_PLAIN_VAR}"], tmp_path)  # task=transfer
    tree = config_tree(cfg)
    assert "value-of-a-plain-var" not in tree
    lines = tree.splitlines()
    assert lines[lines.index(next(x for x in lines if x.endswith("── db"))) + 1].endswith("password: '***'")
    assert lines[lines.index(next(x for x in lines if x.endswith("── token"))) + 1].endswith("***")
    assert any("monitor: ${task.monitor}" in x for x in lines)  # the pipeline's callbacks: per stage, as written


def test_a_failed_sweep_jobs_record_masks_secret_values(tmp_path, monkeypatch):
    import json

    from transferlab.sweeps.job import record_failure

    monkeypatch.setenv("MY_API_KEY", "s3cr3t-value")
    path = record_failure(tmp_path, "user_error", "ConfigError: optimizer.lr='s3cr3t-value' is invalid",
                          ["optimizer.lr=${oc.env:MY_API_KEY}", "+x.api_key=${oc.env:MY_API_KEY}"],
                          "Traceback ... lr='s3cr3t-value'")
    text = path.read_text()
    assert "s3cr3t-value" not in text
    record = json.loads(text)
    assert record["error"] == "ConfigError: optimizer.lr='***' is invalid"
    assert record["overrides"] == ["optimizer.lr=${oc.env:MY_API_KEY}", "+x.api_key=***"]


def test_secret_refused_before_hydra_writes_and_masked_when_in_a_config_file(tmp_path):
    r = _cli("+logger.wandb.api_key=abc123def456", f"hydra.run.dir={tmp_path / 'cli'}")
    assert r.returncode == 2 and r.stderr.startswith("error: logger.wandb.api_key: a literal secret"), r.stderr
    assert "${oc.env:WANDB_API_KEY}" in r.stderr and not (tmp_path / "cli").exists()
    # a secret in a config file: masked in .hydra/ at job start, even though validation then fails
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "leak.yaml").write_text("# @package _global_\nservice:\n  api_key: s3cr3t-from-a-file\n")
    r = _cli("-cd", str(tmp_path / "conf"), "experiment=leak", "task=supervised", "optimizer.lr=-1",
             f"hydra.run.dir={tmp_path / 'file'}")
    assert r.returncode == 2 and "optimizer.lr=-1 is invalid" in r.stderr, r.stderr
    written = [p for p in (tmp_path / "file").rglob("*") if p.is_file()]
    assert any(p.name == "config.yaml" for p in written)
    assert not [p for p in written if "s3cr3t-from-a-file" in p.read_text(errors="ignore")]


# -- 3. no run is lost --------------------------------------------------------------------------------

def test_finished_run_folder_is_refused_unless_resume_or_overwrite(tmp_path):
    from transferlab.runner.run_folder import claim, clear_for_overwrite, release

    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(UserError, match="already holds a run .metrics.json.: rerun with resume=auto"):
        claim(compose_cfg(SUP, tmp_path), tmp_path)
    claim(compose_cfg(SUP + ["overwrite=true"], tmp_path), tmp_path)
    assert (tmp_path / "metrics.json").exists()  # removed only once validation has passed
    clear_for_overwrite(compose_cfg(SUP + ["overwrite=true"], tmp_path), tmp_path)
    assert not (tmp_path / "metrics.json").exists() and (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    release(tmp_path)
    assert not (tmp_path / ".lock").exists()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(UserError, match="checkpoints/last.ckpt"):
        claim(compose_cfg(SUP, tmp_path), tmp_path)
    claim(compose_cfg(SUP + ["overwrite=true"], tmp_path), tmp_path)
    clear_for_overwrite(compose_cfg(SUP + ["overwrite=true"], tmp_path), tmp_path)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()  # replaced: the old checkpoints are gone too
    release(tmp_path)


def test_a_typed_run_or_sweep_folder_holding_a_run_is_refused_before_hydra_writes(tmp_path):
    from transferlab.runner.run_folder import check_command_line_folder, hydra_files_replaced, put_back_hydra_files

    run_dir, sweep = tmp_path / "run", tmp_path / "sweep"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "metrics.json").write_text("{}")
    (run_dir / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (sweep / "1" / "checkpoints").mkdir(parents=True)
    (sweep / "1" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    with pytest.raises(UserError, match=r"run already holds a run \(metrics.json\): rerun with resume=auto"):
        check_command_line_folder(["seed=5", f"hydra.run.dir={run_dir}"])
    with pytest.raises(UserError, match=r"sweep already holds a sweep \(1/checkpoints/last.ckpt\).*hydra.sweep.dir"):
        check_command_line_folder(["-m", "seed=0,1", f"hydra.sweep.dir={sweep}"])
    check_command_line_folder([f"hydra.run.dir={tmp_path / 'new'}"])  # a new folder, a timestamped one: nothing to check
    check_command_line_folder(["-m", f"hydra.sweep.dir={sweep}", "resume=auto"])
    # resume/overwrite may go ahead; what Hydra then rewrites is put back if the command is refused before it trains
    check_command_line_folder([f"hydra.run.dir={run_dir}", "overwrite=true"])
    (run_dir / ".hydra" / "overrides.yaml").write_text("- seed=5\n- overwrite=true\n")  # what Hydra writes
    put_back_hydra_files(run_dir)
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == "- seed=0\n"
    check_command_line_folder([f"hydra.run.dir={run_dir}", "resume=auto"])
    (run_dir / ".hydra" / "overrides.yaml").write_text("- resume=auto\n")
    hydra_files_replaced(run_dir)  # it trained: the folder's labels are the new command's
    put_back_hydra_files(run_dir)
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == "- resume=auto\n"
    with started([sys.executable, "-c", "import time; time.sleep(60)"]) as holder:  # a live run holds the folder
        (tmp_path / "live").mkdir()
        (tmp_path / "live" / ".lock").write_text(f"{holder.pid}\n")
        with pytest.raises(UserError, match=f"in use by another live run \\(PID {holder.pid}"):
            check_command_line_folder([f"hydra.run.dir={tmp_path / 'live'}", "resume=auto"])


def test_resume_auto_on_a_finished_run_keeps_it_only_for_the_same_recipe(tmp_path):
    import json

    from transferlab.config.instantiate import to_plain
    from transferlab.runner.provenance import config_sha
    from transferlab.runner.run_folder import finished_summary

    cfg = compose_cfg(SUP + ["resume=auto"], tmp_path)
    assert config_sha(to_plain(cfg)) == config_sha(to_plain(compose_cfg(SUP, tmp_path)))  # run-control keys left out
    stored = {"test/acc": 0.5, "provenance/config_sha": config_sha(to_plain(cfg))}
    (tmp_path / "metrics.json").write_text(json.dumps(stored))
    assert finished_summary(cfg, tmp_path) == stored
    assert finished_summary(compose_cfg(SUP, tmp_path), tmp_path) is None  # not resume=auto
    assert finished_summary(compose_cfg(SUP + ["resume=auto", "seed=3"], tmp_path), tmp_path) is None  # another recipe


@pytest.mark.slow
def test_a_refused_rerun_leaves_the_finished_run_and_its_labels_as_they_were(tmp_path):
    tiny = ["task=supervised", "model=mlp", "data=digits", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false"]
    out = tmp_path / "run"
    r = _cli(*tiny, f"hydra.run.dir={out}")
    assert r.returncode == 0, r.stderr
    before = {p.name: p.read_bytes() for p in [out / "metrics.json", *(out / ".hydra").glob("*.yaml")]}
    r = _cli(*tiny, "seed=5", f"hydra.run.dir={out}")  # refused before Hydra writes
    assert r.returncode == 2 and "already holds a run" in r.stderr, r.stderr
    r = _cli(*tiny, "seed=3", "resume=auto", f"hydra.run.dir={out}")  # refused after Hydra wrote: put back
    assert r.returncode == 2 and "seed: 0 -> 3" in r.stderr, r.stderr
    assert {p.name: p.read_bytes() for p in [out / "metrics.json", *(out / ".hydra").glob("*.yaml")]} == before
    r = _cli(*tiny, "resume=auto", f"hydra.run.dir={out}")  # the same recipe, finished: nothing retrained or rewritten
    assert r.returncode == 0, r.stderr
    assert (out / "metrics.json").read_bytes() == before["metrics.json"]
    assert f"-> {out}" in r.stdout and "test/acc=" in r.stdout


def test_finetune_may_not_write_into_its_pretrained_folder(tmp_path):
    from transferlab.runner.run_folder import claim

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    for pretrained in (tmp_path, tmp_path / "checkpoints" / "last.ckpt"):
        cfg = compose_cfg(["task=finetune", "model=mlp", "data=digits", f"task.pretrained={pretrained}", "overwrite=true"], tmp_path)
        with pytest.raises(UserError, match="a checkpoint outside this run's folder"):
            claim(cfg, tmp_path)


def test_lock_keeps_a_second_live_run_out_and_takes_over_a_dead_ones(tmp_path):
    import subprocess

    from transferlab.runner.run_folder import claim, release

    with started([sys.executable, "-c", "import time; time.sleep(60)"]) as holder:
        (tmp_path / ".lock").write_text(f"{holder.pid}\n")
        with pytest.raises(UserError) as err:
            claim(compose_cfg(SUP, tmp_path), tmp_path)
        assert f"in use by another live run (PID {holder.pid}" in str(err.value)
    dead = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    dead.wait(timeout=30)
    (tmp_path / ".lock").write_text(f"{dead.pid}\n")  # a stale lock: its process is gone
    claim(compose_cfg(SUP, tmp_path), tmp_path)
    assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    release(tmp_path)


def test_resume_auto_refuses_a_changed_experiment(tmp_path):
    from transferlab.runner.run_folder import check_resume_matches
    from transferlab.tracking.redact import redact

    stored = redact(OmegaConf.to_container(compose_cfg(SUP + ["resume=auto"], tmp_path), resolve=True))
    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": {}, "optimizer_states": [], "hyper_parameters": {"config": stored}},
               tmp_path / "checkpoints" / "last.ckpt")
    check_resume_matches(compose_cfg(SUP + ["resume=auto", "data.num_workers=0"], tmp_path), tmp_path)  # same experiment
    for override, fragment in (("seed=1", "seed: 0 -> 1"), ("model.hidden=7", "model.hidden: 256 -> 7"),
                               ("data.classes=[0,1]", "data.classes: None -> [0, 1]")):
        with pytest.raises(UserError) as err:
            check_resume_matches(compose_cfg(SUP + ["resume=auto", override], tmp_path), tmp_path)
        assert fragment in str(err.value) and "resume_force=true" in str(err.value), str(err.value)
    check_resume_matches(compose_cfg(SUP + ["resume=auto", "seed=1", "resume_force=true"], tmp_path), tmp_path)


# -- 5. stray temporary files, disk full, Ctrl-C ------------------------------------------------------

def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    import subprocess

    from transferlab.utils.io import remove_stale_tmp

    dead = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    dead.wait(timeout=30)
    (tmp_path / "checkpoints").mkdir()
    stale = tmp_path / "checkpoints" / f".last.ckpt.{dead.pid}.tmp"
    live = tmp_path / "checkpoints" / f".last.ckpt.{os.getpid()}.tmp"
    other = tmp_path / "checkpoints" / "notes.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"half a checkpoint")
    assert remove_stale_tmp(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def test_disk_full_is_one_line(capsys):
    import errno

    from transferlab.runner.entry import report_user_errors

    def save():
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoints/last.ckpt")

    with pytest.raises(SystemExit) as code:
        report_user_errors(save)()
    err = capsys.readouterr().err
    assert code.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: disk full while writing /runs/x/checkpoints/last.ckpt (No space left on device)")


def test_single_ctrl_c_saves_like_sigterm_and_says_how_to_resume(tmp_path, capsys):
    from transferlab.runner import entry
    from transferlab.runner.run import train

    cfg = compose_cfg(SUP + ["trainer.enable_progress_bar=false", "trainer.max_epochs=3", "trainer.limit_train_batches=4",
                             "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                             "allowed_targets=[transferlab.,torch.optim.,pytorch_lightning.,fault_helpers.]",
                             "+callbacks.ctrl_c._target_=fault_helpers.SendSignal", "+callbacks.ctrl_c.at_step=2",
                             f"+callbacks.ctrl_c.signum={int(signal.SIGINT)}"], tmp_path)
    previous = signal.getsignal(signal.SIGINT)
    try:
        entry.install_ctrl_c_handler()
        with pytest.raises(SystemExit) as code:
            entry.report_user_errors(train)(cfg)
    finally:
        signal.signal(signal.SIGINT, previous)
        entry.INTERRUPTED["by_user"] = False
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code.value.code == 130
    assert len(err) == 1 and err[0].startswith("error: interrupted (Ctrl-C) at step 2: checkpoint saved in"), err
    assert "rerun with resume=auto" in err[0]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


@pytest.mark.slow
def test_ctrl_c_on_the_command_line_saves_and_exits_130(tmp_path):
    """The real entry point: SIGINT to the whole process group (what a terminal's Ctrl-C sends)."""
    import subprocess
    import time

    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src")])}
    args = [sys.executable, "-m", "transferlab.train", *SUP, "trainer.enable_progress_bar=false", "trainer.max_epochs=50",
            "allowed_targets=[transferlab.,torch.optim.,pytorch_lightning.,fault_helpers.]",
            "+callbacks.pace._target_=fault_helpers.Pace", f"+callbacks.pace.progress_file={tmp_path / 'progress'}",
            "+callbacks.pace.seconds=0.05", f"hydra.run.dir={run_dir}"]
    with started(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.monotonic() + 300
        while not ((tmp_path / "progress").is_file() and (tmp_path / "progress").read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended or never started"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 130, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: interrupted (Ctrl-C) at step") and "resume=auto" in lines[0], err
    assert "Traceback" not in err
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] > 0
    assert not (run_dir / ".lock").exists()


@pytest.mark.parametrize("arg,expected", [
    ("hydra.launcher._target_=transferlab.config.validate.os.system", "resolves to posix.system"),
    ("+hydra.callbacks.x={_target_:torch.optim.optimizer.torch.load,f:x}", "resolves to torch.serialization.load"),
    ("+hydra.sweeper.sampler={_target_:subprocess.Popen}", "targets must start with one of"),
    ("+hydra.job_logging.handlers.evil={class:logging.FileHandler,filename:/tmp/x}", "a logging factory runs code"),
])
def test_hydra_overrides_go_through_the_gate(arg, expected):
    from transferlab.runner.cli_guard import check_command_line

    with pytest.raises(UserError) as err:
        check_command_line([arg])
    assert expected in str(err.value) and "\n" not in str(err.value)
    check_command_line(["extra_allowed_targets=[mypkg.]", "hydra.run.dir=outputs/x", "hydra.job.chdir=false"])  # fine
