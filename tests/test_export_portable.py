"""`export format=onnx|torch_export`: the whole classifier gives the PyTorch model's logits (onnxruntime
for ONNX) for every backbone, with a dynamic batch axis, and its preprocessing JSON beside it."""

import json

import numpy as np
import pytest
import torch
from conftest import compose_cfg
from inference_helpers import ALLOWED, trained

BACKBONES = ["mlp", "cnn", "transformer", "hf"]
MAX_DIFFS: dict[str, float] = {}


def export(run, fmt, out, *extra):
    """What `python -m transferlab.export` does (`out=None`: the default file beside the checkpoint)."""
    from transferlab.export import export as run_export
    from transferlab.inference.output import overwrite_flag

    cfg = compose_cfg([f"ckpt_path={run}", f"format={fmt}", *([f"out={out}"] if out else []), *extra], config_name="export")
    return run_export(str(cfg.ckpt_path), list(cfg.allowed_targets), cfg.out, cfg.pretrained, cfg.format,
                      overwrite_flag(cfg))


def reference(run, batch: int):
    """The restored PyTorch task (adaptation unmerged) on a batch of valid inputs of another size than traced."""
    from transferlab.inference.classifier import example_input
    from transferlab.inference.preprocess import Preprocessor
    from transferlab.runner.restore import restore_for_inference

    restored = restore_for_inference(run, ALLOWED)
    x = example_input(Preprocessor(restored.preprocessing), batch)
    with torch.inference_mode():
        return x, restored.task.eval()(x).numpy()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_onnx_and_torch_export_match_pytorch_logits(backbone, tmp_path_factory, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    if backbone == "hf":
        pytest.importorskip("transformers")
    import onnxruntime as ort

    run = trained(backbone, tmp_path_factory)
    x, expected = reference(run, batch=5)  # traced with 2 examples: the batch axis is dynamic
    onnx_file = export(run, "onnx", tmp_path / "model.onnx")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], {"input": x.numpy()})[0]
    pt2 = export(run, "torch_export", tmp_path / "model.pt2")
    pt2_logits = torch.export.load(str(pt2)).module()(x).detach().numpy()
    diff = float(np.abs(onnx_logits - expected).max())
    MAX_DIFFS[backbone] = diff
    print(f"{backbone}: onnxruntime vs PyTorch max |diff| = {diff:.3g}")
    assert onnx_logits.shape == expected.shape and diff <= 1e-4
    assert np.abs(pt2_logits - expected).max() <= 1e-5
    description = json.loads((tmp_path / "model.onnx.preprocessing.json").read_text())
    assert description["spec"]["class_names"] and description["input_name"] == "input"
    assert description["input_dtype"] == ("int64" if backbone in ("transformer", "hf") else "float32")
    if backbone in ("transformer", "hf"):  # the tokenizer file beside it encodes as the run did
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tmp_path / description["tokenizer"]["file"]))
        assert tok.encode("a good film").ids[0] == 2  # [CLS]
    if backbone == "mlp":
        assert description["feature_columns"] == ["a", "b"] and len(description["feature_mean"]) == 2


def test_lora_run_exports_merged_and_equals_the_adapted_model(tmp_path_factory, tmp_path):
    pytest.importorskip("peft")
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    base = trained("digits", tmp_path_factory)
    run = trained("digits", tmp_path_factory, ("task=finetune", "peft=lora", f"task.pretrained={base}",
                                               "task.save_adapter=true", "data.classes=[0,1,2]"))
    adapter = run / "checkpoints" / "adapter.pt"
    x, expected = reference(adapter, batch=3)
    onnx_file = export(adapter, "onnx", tmp_path / "lora.onnx")
    logits = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    assert np.abs(logits - expected).max() <= 1e-4
    graph = onnx_file.read_bytes()
    assert b"lora" not in graph  # merged: no adapter weights or ops left


def test_export_refuses_unknown_formats_and_runs_without_a_head(tmp_path_factory, tmp_path):
    from transferlab.errors import CheckpointError, ConfigError

    run = trained("mlp", tmp_path_factory)
    with pytest.raises(ConfigError, match="format='tflite' is invalid: one of \\['merged', 'onnx', 'torch_export'\\]"):
        export(run, "tflite", tmp_path / "m")
    ssl = trained("digits", tmp_path_factory, ("task=contrastive",))
    with pytest.raises(CheckpointError, match="without a classification head"):
        export(ssl, "torch_export", tmp_path / "m.pt2")


def test_export_replaces_a_file_only_with_overwrite_and_a_runs_record_never(tmp_path_factory, tmp_path):
    """The audit replaced a run's checkpoints/last.ckpt with an export: an existing `out` (or default file) needs
    overwrite=true, and a run's own record (metrics.json, *.ckpt, adapter.pt) is refused even then."""
    import shutil

    from transferlab.errors import ConfigError, UserError

    run = tmp_path / "run"
    shutil.copytree(trained("mlp", tmp_path_factory), run)
    mine = tmp_path / "mine.pt2"
    mine.write_bytes(b"mine")
    with pytest.raises(UserError) as err:
        export(run, "torch_export", mine)
    assert str(err.value) == f"out={mine}: {mine} already exists: set overwrite=true to replace it, or choose another out="
    assert mine.read_bytes() == b"mine"
    assert export(run, "torch_export", mine, "overwrite=true") == mine and mine.read_bytes() != b"mine"
    default = export(run, "merged", None)
    assert default == run / "checkpoints" / "last.merged.pt"
    with pytest.raises(UserError) as err:
        export(run, "merged", None)
    assert str(err.value) == (f"out=null (writes {default}): {default} already exists: set overwrite=true to replace it, "
                              "or choose another out=")
    assert export(run, "merged", None, "overwrite=true") == default
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for record in (run / "checkpoints" / "last.ckpt", run / "metrics.json", run / "checkpoints" / "adapter.pt",
                   tmp_path / "new.ckpt"):
        for fmt in ("merged", "torch_export"):
            with pytest.raises(UserError) as err:
                export(run, fmt, record, "overwrite=true")
            assert str(err.value) == (f"out={record}: {record.name} is a run's own record (metrics.json, adapter.pt, "
                                      "*.ckpt) and is never replaced, even with overwrite=true: choose another out=")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "new.ckpt").exists()
    with pytest.raises(ConfigError, match="overwrite='no' is invalid: true or false"):
        export(run, "merged", tmp_path / "m.pt", "overwrite=no")


def test_a_failed_export_removes_its_temporary_file(tmp_path_factory, tmp_path, monkeypatch):
    """The exporter writes `.NAME.PID.tmp` (utils/io.py's naming: the start-up cleanup removes one that a killed
    export left) and a failed export removes its own; a full disk or read-only folder is one line naming `out`."""
    import errno
    import os
    from pathlib import Path

    from transferlab.errors import UserError
    from transferlab.inference import classifier

    run = trained("mlp", tmp_path_factory)
    folder = tmp_path / "exports"
    out = folder / "m.pt2"
    written = []

    def failing(error):
        def write(model, example, path):
            written.append(Path(path))
            Path(path).write_bytes(b"half a program")
            raise error(str(path))
        return write

    monkeypatch.setattr(classifier, "export_pt2", failing(lambda path: RuntimeError("exporter failed")))
    with pytest.raises(RuntimeError, match="exporter failed"):
        export(run, "torch_export", out)
    assert written == [folder / f".m.pt2.{os.getpid()}.tmp"]
    assert list(folder.iterdir()) == []
    for code, message in ((errno.ENOSPC, "disk full"), (errno.EROFS, "read-only file system")):
        monkeypatch.setattr(classifier, "export_pt2", failing(lambda path: OSError(code, os.strerror(code), path)))
        with pytest.raises(UserError) as err:
            export(run, "torch_export", out)
        hint = "free space there" if code == errno.ENOSPC else "make that folder writable"
        assert str(err.value) == f"{message} while writing {out} (out={out}): {hint} or choose another out="
        assert list(folder.iterdir()) == []
    import torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)  # the merged format: torch.save into utils.io's atomic_open
    merged = folder / "m.pt"
    with pytest.raises(UserError) as err:
        export(run, "merged", merged)
    assert str(err.value) == f"disk full while writing {merged} (out={merged}): free space there or choose another out="
    assert list(folder.iterdir()) == []
