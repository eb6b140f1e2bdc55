"""`python -m transferlab.generate ckpt_path=... prompt="..." temperature=... top_k=... max_new_tokens=...`.

Samples text from a `task=causal_lm` checkpoint. The model and the tokenizer are rebuilt from the
config stored in the checkpoint (its `data` section names the tokenizer the model was trained with,
cached next to the data), so no training-time flags need repeating.
"""

from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from transferlab.cli import CONFIG_DIR, report_user_errors


def load_language_model(ckpt_path: str, allowed_targets: list[str]):
    """(task, tokenizer) of a causal_lm checkpoint."""
    from transferlab.build import build_backbone, build_datamodule, build_task
    from transferlab.checkpoint import load_checkpoint, resolve_checkpoint, stored_config
    from transferlab.errors import CheckpointError

    ckpt_file = resolve_checkpoint(ckpt_path)
    ckpt = load_checkpoint(ckpt_file)
    stored = stored_config(ckpt, ckpt_file)
    target = str((stored.get("task") or {}).get("_target_", ""))
    if not target.endswith("CausalLMTask"):
        raise CheckpointError(f"{ckpt_file} was trained with task={(stored.get('task') or {}).get('name')}: "
                              "generate needs a task=causal_lm checkpoint")
    cfg = OmegaConf.create({k: stored[k] for k in ("data", "model", "task", "optimizer", "scheduler") if k in stored})
    cfg.allowed_targets = list(allowed_targets)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")  # the tokenizer comes back from its cache (or is retrained identically)
    tokenizer = getattr(datamodule, "tokenizer", None)
    if tokenizer is None:
        raise CheckpointError(f"{ckpt_file}: its data section (data={stored['data'].get('name')}) has no tokenizer")
    spec = datamodule.spec
    task = build_task(cfg, build_backbone(cfg, spec), spec, config=stored)
    task.load_state_dict(ckpt["state_dict"])
    return task.eval(), tokenizer


def sample(task, tokenizer, prompt: str, max_new_tokens: int, temperature: float, top_k: int | None,
           seed: int) -> tuple[list[int], str]:
    """New token ids and the decoded text (prompt + continuation)."""
    import torch

    spec = task.spec
    ids = tokenizer.encode(prompt, add_special_tokens=False) if prompt else []
    if spec.bos_id is not None:
        ids = [spec.bos_id] + list(ids)
    generator = torch.Generator(device=task.device).manual_seed(seed)
    stop = (spec.eos_id,) if spec.eos_id is not None else ()
    new = task.generate(torch.tensor(ids, dtype=torch.long), max_new_tokens, temperature, top_k, generator, stop).tolist()
    return new, tokenizer.decode(list(ids) + new)


def run(cfg: DictConfig) -> list[dict[str, Any]]:
    from transferlab.errors import ConfigError
    from transferlab.summary import atomic_write_text

    if not (isinstance(cfg.max_new_tokens, int) and cfg.max_new_tokens > 0):
        raise ConfigError("max_new_tokens", cfg.max_new_tokens, "a positive integer")
    if not isinstance(cfg.temperature, (int, float)) or cfg.temperature < 0:
        raise ConfigError("temperature", cfg.temperature, "a number >= 0 (0 = greedy)")
    if cfg.top_k is not None and not (isinstance(cfg.top_k, int) and cfg.top_k > 0):
        raise ConfigError("top_k", cfg.top_k, "a positive integer, or null (no top-k filter)")
    task, tokenizer = load_language_model(str(cfg.ckpt_path), list(cfg.allowed_targets))
    samples = []
    for i in range(int(cfg.num_samples)):
        new, text = sample(task, tokenizer, str(cfg.prompt or ""), cfg.max_new_tokens, float(cfg.temperature),
                           cfg.top_k, int(cfg.seed) + i)
        samples.append({"seed": int(cfg.seed) + i, "new_tokens": len(new), "text": text})
    if cfg.get("output_file"):
        import json

        atomic_write_text(Path(str(cfg.output_file)), json.dumps(samples, indent=2) + "\n")
    return samples


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="generate")
@report_user_errors
def main(cfg: DictConfig) -> None:
    for s in run(cfg):
        print(s["text"], flush=True)


if __name__ == "__main__":
    main()
