"""`python -m transferlab.export ckpt_path=PATH [format=merged|onnx|torch_export] [out=FILE] [pretrained=PATH]`

`format=merged` (the default) folds a fine-tuned run's adaptation (LoRA, DoRA, IA3, LoHa, LoKr;
identity for full, bitfit, freeze, linear_probe) into plain backbone weights and writes a
weights-only file whose `backbone.*` (and `head.*`) tensors load into the plain backbone class with
no `peft` import, and which `task.pretrained=FILE` accepts (and predict/serve read).

`format=onnx` and `format=torch_export` write the whole classifier of a supervised or fine-tuned
run (backbone with adapters merged + head: model input -> logits, dynamic batch axis) as an ONNX
file or a `torch.export` program (.pt2), with the preprocessing beside it as `<out>.preprocessing.json`
(label names, input shape, normalization, feature columns, and for text `<out>.tokenizer.json`).

`ckpt_path` is a run's checkpoint (or run folder) or its adapter file (`task.save_adapter=true`);
an adapter file is reloaded onto its pretrained backbone (recorded in the file, or `pretrained=`).
An existing output file is replaced only with `overwrite=true`; a run's own record (metrics.json,
*.ckpt, adapter.pt) never is (`inference/output.py`).
"""

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from transferlab.runner.entry import hydra_entry

FORMAT = "transferlab-merged/1"
FORMATS = {"merged": ".merged.pt", "onnx": ".onnx", "torch_export": ".pt2"}


def merged_payload(task, config: dict[str, Any], preprocessing: dict[str, Any] | None = None) -> dict[str, Any]:
    """Plain tensors: `backbone.*` after merge, the head, and the config with `peft` set to full."""
    adaptation = getattr(task, "adaptation", None)
    backbone = adaptation.merge(task.backbone) if adaptation is not None else task.backbone
    state = {f"backbone.{k}": v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    if hasattr(task, "head"):
        head = adaptation.merge_head(task.head) if adaptation is not None else task.head
        state.update({f"head.{k}": v.detach().cpu().clone() for k, v in head.state_dict().items()})
    config = dict(config)
    merged_from = (config.get("peft") or {}).get("name")
    config["peft"] = {"_target_": "transferlab.adaptation.full.Full", "name": "full"}
    payload = {"format": FORMAT, "merged_from": merged_from, "state_dict": state, "hyper_parameters": {"config": config}}
    if preprocessing is not None:
        payload["preprocessing"] = preprocessing
    return payload


def export(ckpt_path: str, allowed_targets: list[str], out: str | None = None, pretrained: str | None = None,
           format: str = "merged", overwrite: bool = False) -> Path:
    if format not in FORMATS:
        from transferlab.errors import ConfigError

        raise ConfigError("format", format, f"one of {list(FORMATS)}")
    from transferlab.inference.output import check_out, writing
    from transferlab.utils.checkpoint import resolve_checkpoint

    target = output_file(resolve_checkpoint(ckpt_path), out, format)
    check_out(target, overwrite, out)  # before the model is rebuilt
    if format != "merged":
        return export_portable(ckpt_path, allowed_targets, target, out, pretrained, format)
    import torch

    from transferlab.runner.restore import restore_task, stored_preprocessing
    from transferlab.utils.io import atomic_open

    restored = restore_task(ckpt_path, allowed_targets, stage="fit", pretrained=pretrained)
    preprocessing = stored_preprocessing(restored.checkpoint)
    if preprocessing is None and hasattr(restored.datamodule, "preprocessing"):
        preprocessing = restored.datamodule.preprocessing()
    payload = merged_payload(restored.task.eval(), restored.config, preprocessing)
    with writing(target, f"out={out or 'null'}"), atomic_open(target, "wb") as f:
        torch.save(payload, f)
    return target


def output_file(checkpoint: Path, out: str | None, format: str) -> Path:
    """`out`, else `<checkpoint stem>.merged.pt` / `.onnx` / `.pt2` beside the checkpoint."""
    return Path(str(out)) if out else checkpoint.with_name(checkpoint.stem + FORMATS[format])


def export_portable(ckpt_path: str, allowed_targets: list[str], target: Path, out: str | None, pretrained: str | None,
                    format: str) -> Path:
    """The whole classifier as ONNX or a torch.export program, and its preprocessing as JSON beside it."""
    from transferlab.inference.classifier import example_input, portable_classifier
    from transferlab.inference.output import writing
    from transferlab.inference.preprocess import Preprocessor
    from transferlab.runner.restore import require_classifier, restore_for_inference

    restored = restore_for_inference(ckpt_path, allowed_targets, pretrained)
    require_classifier(restored)
    pre = Preprocessor(restored.preprocessing)
    model = portable_classifier(restored.task)
    with writing(target, f"out={out or 'null'}"):
        write_program(format, model, example_input(pre), target)
        write_description(restored, pre, format, target)
    return target


def write_program(format: str, model: Any, example: Any, target: Path) -> None:
    """The exporters write a path, not a file object: written whole to `.NAME.PID.tmp` (utils/io.py's naming, so
    the start-up cleanup removes one a killed export left), then renamed; a failed export removes its own."""
    import os

    from transferlab.inference.classifier import export_onnx, export_pt2

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        (export_onnx if format == "onnx" else export_pt2)(model, example, tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def write_description(restored: Any, pre: Any, format: str, target: Path) -> None:
    """`<out>.preprocessing.json` (and for a trained tokenizer `<out>.tokenizer.json`) beside the program."""
    from transferlab.inference.classifier import example_input
    from transferlab.utils.io import atomic_write_text

    description = dict(restored.preprocessing)
    tokenizer = description.pop("tokenizer", None)
    if tokenizer and tokenizer.get("kind") == "trained":
        tokenizer_file = target.with_name(target.name + ".tokenizer.json")
        atomic_write_text(tokenizer_file, tokenizer["json"])
        description["tokenizer"] = {"kind": "trained", "file": tokenizer_file.name}
    elif tokenizer:
        description["tokenizer"] = tokenizer
    description.update(format=format, input_name="input", output_name="logits", input_dtype=str(
        example_input(pre, 1).dtype).removeprefix("torch."), source=str(restored.file))
    atomic_write_text(target.with_name(target.name + ".preprocessing.json"), json.dumps(description, indent=1) + "\n")


@hydra_entry("export")
def main(cfg: DictConfig) -> None:
    fmt = str(cfg.get("format") or "merged")
    from transferlab.inference.output import overwrite_flag

    path = export(str(cfg.ckpt_path), list(cfg.allowed_targets), cfg.get("out"), cfg.get("pretrained"), fmt,
                  overwrite_flag(cfg))
    what = "merged backbone" if fmt == "merged" else f"{fmt} classifier (+ {path.name}.preprocessing.json)"
    print(f"{what} written to {path}", flush=True)


if __name__ == "__main__":
    main()
