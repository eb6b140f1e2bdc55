"""`python -m transferlab.export ckpt_path=PATH [out=FILE] [pretrained=PATH]`

Folds a fine-tuned run's adaptation (LoRA, DoRA, IA3, LoHa, LoKr; identity for full, bitfit,
freeze, linear_probe) into plain backbone weights and writes a weights-only file whose
`backbone.*` (and `head.*`) tensors load into the plain backbone class with no `peft` import,
and which `task.pretrained=FILE` accepts. `ckpt_path` is a run's checkpoint (or run folder) or
its adapter file (`task.save_adapter=true`); an adapter file is reloaded onto its pretrained
backbone (recorded in the file, or `pretrained=`).
"""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from transferlab.runner.entry import hydra_entry

FORMAT = "transferlab-merged/1"


def merged_payload(task, config: dict[str, Any]) -> dict[str, Any]:
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
    return {"format": FORMAT, "merged_from": merged_from, "state_dict": state, "hyper_parameters": {"config": config}}


def export(ckpt_path: str, allowed_targets: list[str], out: str | None = None, pretrained: str | None = None) -> Path:
    import torch

    from transferlab.runner.restore import restore_task
    from transferlab.utils.io import atomic_open

    restored = restore_task(ckpt_path, allowed_targets, stage="fit", pretrained=pretrained)
    payload = merged_payload(restored.task.eval(), restored.config)
    target = Path(out) if out else restored.file.with_name(restored.file.stem + ".merged.pt")
    with atomic_open(target, "wb") as f:
        torch.save(payload, f)
    return target


@hydra_entry("export")
def main(cfg: DictConfig) -> None:
    path = export(str(cfg.ckpt_path), list(cfg.allowed_targets), cfg.get("out"), cfg.get("pretrained"))
    print(f"merged backbone written to {path}", flush=True)


if __name__ == "__main__":
    main()
