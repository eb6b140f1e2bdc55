"""The output projection of the language-modelling objectives (causal LM, masked LM): token features ->
vocabulary logits, through the token embedding when tied (GPT-2, BERT) or through a head of its own."""

import torch
import torch.nn.functional as F
from torch import nn


def vocab_head(width: int, vocab: int, tie_weights: bool) -> tuple[nn.Linear | None, nn.Parameter]:
    """(own head or None when tied, the output bias)."""
    return (None if tie_weights else nn.Linear(width, vocab, bias=False)), nn.Parameter(torch.zeros(vocab))


def vocab_logits(h: torch.Tensor, backbone: nn.Module, lm_head: nn.Linear | None, bias: torch.Tensor) -> torch.Tensor:
    weight = backbone.embed_tokens.weight if lm_head is None else lm_head.weight
    return F.linear(h, weight, bias)
