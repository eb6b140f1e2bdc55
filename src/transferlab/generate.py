"""`python -m transferlab.generate ckpt_path=... prompt="..." temperature=... top_k=... max_new_tokens=...`.

Samples text from a `task=causal_lm` checkpoint. The model and the tokenizer are rebuilt from the
config stored in the checkpoint (its `data` section names the tokenizer the model was trained with,
cached next to the data), so no training-time flags need repeating.
"""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from transferlab.runner.entry import hydra_entry


def load_language_model(ckpt_path: str, allowed_targets: list[str]):
    """(task, tokenizer) of a causal_lm checkpoint; its stored data section names the tokenizer."""
    from transferlab.errors import CheckpointError
    from transferlab.runner.restore import restore_task

    restored = restore_task(ckpt_path, allowed_targets, stage="fit")  # the tokenizer comes back from its cache
    file, stored = restored.file, restored.config
    if not str(stored["task"].get("_target_", "")).endswith("CausalLMTask"):
        raise CheckpointError(f"{file} was trained with task={stored['task'].get('name')}: "
                              "generate needs a task=causal_lm checkpoint")
    tokenizer = getattr(restored.datamodule, "tokenizer", None)
    if tokenizer is None:
        raise CheckpointError(f"{file}: its data section (data={stored['data'].get('name')}) has no tokenizer")
    return restored.task.eval(), tokenizer


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
    from transferlab.utils.io import atomic_write_text

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


@hydra_entry("generate")
def main(cfg: DictConfig) -> None:
    for s in run(cfg):
        print(s["text"], flush=True)


if __name__ == "__main__":
    main()
