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


def export(run, fmt, out):
    from transferlab.export import export as run_export

    cfg = compose_cfg([f"ckpt_path={run}", f"format={fmt}", f"out={out}"], config_name="export")
    return run_export(str(cfg.ckpt_path), list(cfg.allowed_targets), cfg.out, cfg.pretrained, cfg.format)


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
