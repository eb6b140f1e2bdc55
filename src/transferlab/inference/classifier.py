"""The whole classifier as one plain module (backbone with its adaptation merged + head), and its
portable exports, both through `torch.export` with a dynamic batch axis:

- ONNX: `torch.onnx.export(..., dynamo=True)` (torch's exporter since 2.9; it needs `onnxscript`)
- `torch_export`: the `ExportedProgram` itself (`.pt2`, loaded with `torch.export.load`, no model code)

Why `torch.export` rather than TorchScript: TorchScript is deprecated in PyTorch; `torch.export`
captures every backbone here (cnn, mlp, transformer, hf) with the batch size as a symbolic
dimension (a shape it cannot keep symbolic is an error at export, not a silently baked-in size), and
it is the same graph the ONNX exporter writes. README "Decisions" has what was measured.
"""

import copy
from pathlib import Path

import torch
from torch import nn

from transferlab.errors import UserError
from transferlab.inference.preprocess import Preprocessor


class Classifier(nn.Module):
    """model input (token ids, features, images) -> logits; what `export format=onnx|torchscript` writes."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def portable_classifier(task: nn.Module) -> Classifier:
    """A copy of `task`'s backbone (its adaptation folded in where it folds: LoRA family, BitFit...) and head, in eval mode.

    `peft=adapter`'s bottleneck MLPs are nonlinear and do not fold: they stay in the exported graph.
    """
    task = copy.deepcopy(task).eval()
    backbone = task.backbone
    adaptation = getattr(task, "adaptation", None)
    if adaptation is not None:
        try:
            backbone = adaptation.merge(backbone)
        except UserError:
            pass
    return Classifier(backbone, task.head).eval()


def example_input(pre: Preprocessor, batch: int = 2) -> torch.Tensor:
    """A batch of valid model inputs to trace with: token ids with some padding, or standard-normal features."""
    gen = torch.Generator().manual_seed(0)
    if pre.modality == "text":
        vocab = int(pre.state["spec"]["vocab_size"])
        ids = torch.randint(5, vocab, (batch, *pre.input_shape), generator=gen)
        pad = pre.state["spec"].get("pad_id")
        if pad is not None:  # the last examples padded: traced paths see the attention mask in use
            ids[1:, pre.input_shape[0] // 2:] = int(pad)
        return ids
    return torch.randn(batch, *pre.input_shape, generator=gen)


def batch_dims() -> tuple[dict[int, object]]:
    """The batch axis of the one input is dynamic (any size >= 1)."""
    return ({0: torch.export.Dim("batch", min=1, max=65536)},)


def export_program(model: Classifier, example: torch.Tensor):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(model, (example,), dynamic_shapes=batch_dims())


def export_onnx(model: Classifier, example: torch.Tensor, path: str | Path) -> Path:
    import warnings

    try:
        import onnx  # noqa: F401  (torch.onnx writes the file through onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError:
        raise UserError("format=onnx needs onnx and onnxscript: pip install 'transferlab[deploy]'") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), input_names=["input"], output_names=["logits"],
                                    dynamic_shapes=batch_dims(), dynamo=True, verbose=False)
    program.save(str(path))
    return Path(path)


def export_pt2(model: Classifier, example: torch.Tensor, path: str | Path) -> Path:
    torch.export.save(export_program(model, example), str(path))
    return Path(path)
