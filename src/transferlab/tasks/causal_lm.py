"""GPT-style next-token prediction on the transformer backbone, with sampling for `generate`.

The backbone's [CLS] slot serves as the beginning-of-sequence position: with causal attention,
the output at position j (0 = [CLS]) predicts token j, so even an empty prompt can be continued.
"""

from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from transferlab.backbones.transformer import Transformer
from transferlab.errors import ConfigError
from transferlab.tasks.lm_head import vocab_head, vocab_logits
from transferlab.tasks.masked import require_transformer
from transferlab.tasks.ssl import SSLTask


class CausalLMTask(SSLTask):
    """Cross-entropy over every non-pad next token; `val/perplexity` = exp(token-mean loss).

    tie_weights: the output projection reuses the token embedding (GPT-2); false = its own head.
    """

    @classmethod
    def validate_config(cls, cfg: DictConfig) -> None:
        require_transformer(cfg, cfg.task.get("name", "causal_lm"))

    def __init__(self, *args: Any, tie_weights: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not isinstance(self.backbone, Transformer):
            raise ConfigError("model", type(self.backbone).__name__, f"task={self.task_name} needs model=transformer")
        if self.spec.modality != "text" or not self.spec.vocab_size:
            raise ConfigError("data", self.spec.modality, f"task={self.task_name} needs text data (token ids and a vocabulary)")
        self.tie_weights = bool(tie_weights)
        width, vocab = self.backbone.feature_dim, self.spec.vocab_size
        self.lm_norm = nn.LayerNorm(width)
        self.lm_head, self.lm_bias = vocab_head(width, vocab, self.tie_weights)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """Token features -> vocabulary logits (through the embedding when tied)."""
        return vocab_logits(self.lm_norm(h), self.backbone, self.lm_head, self.lm_bias)

    def objective(self, x: torch.Tensor, generator: torch.Generator | None):
        h = self.backbone.forward_tokens(x, is_causal=True)[:, :-1]  # [CLS], t0 .. t_{L-2} -> t0 .. t_{L-1}
        logits = self.project(h)
        targets = x if self.spec.pad_id is None else x.masked_fill(x == self.spec.pad_id, -100)
        n = int((targets != -100).sum())
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        return loss, max(n, 1), None

    @staticmethod
    def epoch_metrics(prefix: str, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        return {f"{prefix}/loss": loss, f"{prefix}/perplexity": loss.exp()}

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, stop_ids: tuple[int, ...] = ()) -> torch.Tensor:
        """Sample a continuation of `prompt` (1-D token ids); temperature 0 = greedy.

        The context is cropped to the backbone's `num_patches` positions (a sliding window).
        """
        self.eval()
        tokens = prompt.to(self.device).long().view(1, -1)
        window = self.backbone.num_patches
        new: list[int] = []
        for _ in range(max_new_tokens):
            h = self.backbone.forward_tokens(tokens[:, -window:], is_causal=True)[:, -1]
            logits = self.project(h)[0]
            if self.spec.pad_id is not None:
                logits[self.spec.pad_id] = float("-inf")
            if temperature <= 0:
                nxt = int(logits.argmax())
            else:
                logits = logits / temperature
                if top_k:
                    kth = logits.topk(min(int(top_k), logits.numel())).values[-1]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
            new.append(nxt)
            tokens = torch.cat([tokens, tokens.new_tensor([[nxt]])], dim=1)
            if nxt in stop_ids:
                break
        return torch.tensor(new, dtype=torch.long)
