"""`python -m transferlab.export ckpt_path=PATH [out=FILE] [pretrained=PATH]`

Folds a fine-tuned run's adaptation (LoRA, DoRA, IA3, LoHa, LoKr; identity for full, bitfit,
freeze, linear_probe) into plain backbone weights and writes a weights-only file whose
`backbone.*` (and `head.*`) tensors load into the plain backbone class with no `peft` import,
and which `task.pretrained=FILE` accepts. `ckpt_path` is a run's checkpoint (or run folder) or
its adapter file (`task.save_adapter=true`); an adapter file is reloaded onto its pretrained
backbone (recorded in the file, or `pretrained=`).
"""

import sys
from pathlib import Path
from typing import Any

from transferlab.cli import report_user_errors
from transferlab.errors import UserError

KEYS = {"ckpt_path": "a checkpoint, run folder or adapter file (required)",
        "out": "output file (default: <ckpt>.merged.pt beside it)",
        "pretrained": "for an adapter file: the pretrained backbone it was trained on (default: recorded in the file)"}
FORMAT = "transferlab-merged/1"


def parse_args(argv: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise UserError(f"export argument {item!r} is invalid: use key=value with keys {list(KEYS)}")
        args[key] = value
    if not args.get("ckpt_path"):
        raise UserError("export needs ckpt_path=PATH (a checkpoint, run folder or adapter file)")
    return args


def rebuild_task(ckpt_path: str, pretrained: str | None = None):
    """The fine-tuned task of a checkpoint or adapter file, rebuilt from the config stored in it."""
    from omegaconf import OmegaConf

    from transferlab.adaptation.artifact import is_adapter_file, load_adapter
    from transferlab.build import build_backbone, build_datamodule, build_task
    from transferlab.checkpoint import load_checkpoint, resolve_checkpoint
    from transferlab.errors import CheckpointError

    path = resolve_checkpoint(ckpt_path)
    ckpt = load_checkpoint(path)
    adapter = is_adapter_file(ckpt)
    config = ckpt.get("config") if adapter else (ckpt.get("hyper_parameters") or {}).get("config")
    if not config:
        raise CheckpointError(f"{path} stores no run config (hyper_parameters.config): it was not written by transferlab")
    cfg = OmegaConf.create(config)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    backbone = build_backbone(cfg, datamodule.spec)
    if adapter:
        base = pretrained or ckpt.get("pretrained")
        task = build_task(cfg, backbone, datamodule.spec, config=config, pretrained=base)
        frozen = [n for n, p in task.named_parameters() if not p.requires_grad]
        if frozen and not base:
            raise CheckpointError(f"{path} comes from a run without task.pretrained (a random backbone): "
                                  "its frozen weights are not in the adapter file; export its last.ckpt instead")
        load_adapter(task, path)
    else:
        task = build_task(cfg, backbone, datamodule.spec, config=config, pretrained=None)
        state = ckpt.get("state_dict", {})
        missing = sorted(k for k in task.state_dict() if k.startswith(("backbone.", "head.")) and k not in state)
        if missing:
            raise CheckpointError(f"{path} does not match its own config: missing {missing[:4]}")
        task.load_state_dict(state, strict=False)
    return task, config


def merged_payload(task, config: dict[str, Any]) -> dict[str, Any]:
    """Plain tensors: `backbone.*` after merge, the head, and the config with `peft` set to full."""
    adaptation = getattr(task, "adaptation", None)
    backbone = adaptation.merge(task.backbone) if adaptation is not None else task.backbone
    state = {f"backbone.{k}": v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    if hasattr(task, "head"):
        state.update({f"head.{k}": v.detach().cpu().clone() for k, v in task.head.state_dict().items()})
    config = dict(config)
    merged_from = (config.get("peft") or {}).get("name")
    config["peft"] = {"_target_": "transferlab.adaptation.full.Full", "name": "full"}
    return {"format": FORMAT, "merged_from": merged_from, "state_dict": state, "hyper_parameters": {"config": config}}


def export(ckpt_path: str, out: str | None = None, pretrained: str | None = None) -> Path:
    import torch

    from transferlab.checkpoint import resolve_checkpoint

    task, config = rebuild_task(ckpt_path, pretrained)
    task.eval()
    payload = merged_payload(task, config)
    src = resolve_checkpoint(ckpt_path)
    target = Path(out) if out else src.with_name(src.stem + ".merged.pt")
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, target)
    return target


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\nkeys:\n" + "\n".join(f"  {k}: {v}" for k, v in KEYS.items()))
        return
    args = parse_args(argv)
    path = export(args["ckpt_path"], args.get("out"), args.get("pretrained"))
    print(f"merged backbone written to {path}")


if __name__ == "__main__":
    main()
