"""A pre-norm transformer encoder over patches (signals, images) or tokens (text), ViT-style.

Attention is built from explicit `nn.Linear` projections (q_proj, k_proj, v_proj, out_proj)
so that LoRA and friends can target them by name.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.backbones.base import Backbone, masked_mean


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        if width % heads:
            raise ValueError(f"model.width={width} must be divisible by model.heads={heads}")
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.heads, d // self.heads).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        mask = None
        if pad_mask is not None:  # True where a token may be attended to
            mask = pad_mask[:, None, None, :]
            if is_causal:
                mask = mask & torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
                is_causal = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class MLPBlock(nn.Module):
    def __init__(self, width: int, ratio: float, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(width, int(width * ratio))
        self.fc2 = nn.Linear(int(width * ratio), width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(x))))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = MLPBlock(width, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), pad_mask, is_causal)
        return x + self.mlp(self.norm2(x))


class Transformer(Backbone):
    """Patch/token embedding + [CLS] + learned positions, `depth` blocks, final LayerNorm.

    `forward` pools (cls token or mean); `forward_tokens` returns per-token features for
    objectives that need them (masked modeling, language modeling).
    """

    modalities = ("signal", "image", "text")

    def __init__(self, input_shape: Sequence[int], width: int = 64, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 4.0, patch_size: int = 4, dropout: float = 0.0, pool: str = "cls",
                 vocab_size: int | None = None, pad_id: int | None = None, max_length: int | None = None, **_: object):
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"model.pool={pool!r} is invalid: use 'cls' or 'mean'")
        self.input_shape = tuple(input_shape)
        self.pool, self.pad_id, self.patch_size = pool, pad_id, patch_size
        if vocab_size is not None:  # text: token ids of shape (L,)
            self.embed_tokens = nn.Embedding(vocab_size, width)
            n_tokens = max_length or self.input_shape[0]
            self.patch_dim = None
        else:
            spatial = self.input_shape[1:]
            if any(s % patch_size for s in spatial):
                raise ValueError(f"model.patch_size={patch_size} must divide the input's spatial size {spatial}")
            n_tokens = math.prod(s // patch_size for s in spatial)
            self.patch_dim = self.input_shape[0] * patch_size ** len(spatial)
            self.patch_embed = nn.Linear(self.patch_dim, width)
        self.num_patches = n_tokens
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.randn(1, n_tokens + 1, width) * 0.02)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.feature_dim = width
        self.apply(_init)

    @property
    def lora_targets(self) -> tuple[str, ...]:
        """Attention and MLP projections, plus the patch embedding on signals and images: new target
        classes need new patch features (MNIST-1D 0-4 -> 5-9, LoRA r=2, 150 epochs, seed 0: 81.0 % validation
        accuracy without it, 88.0 % with it; experiments/peft_defaults). Text keeps its token embedding
        frozen (an nn.Embedding, not a linear layer)."""
        blocks = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
        return blocks if self.patch_dim is None else ("patch_embed", *blocks)

    def block_names(self) -> list[str]:
        stem = ["embed_tokens" if self.patch_dim is None else "patch_embed", "cls_token", "pos_embed"]
        return stem + [f"blocks.{i}" for i in range(len(self.blocks))] + ["norm"]

    def block_of(self, param_name: str) -> int:
        if param_name.split(".")[0] in ("embed_tokens", "patch_embed", "cls_token", "pos_embed"):
            return 0
        if param_name.startswith("blocks."):
            return int(param_name.split(".")[1]) + 1
        return len(self.blocks) + 1

    @property
    def num_layers(self) -> int:
        """Depth positions for layer-wise LR decay: stem, each block, final norm."""
        return len(self.blocks) + 2

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, L) or (B, C, H, W) -> (B, num_patches, patch_dim)."""
        p = self.patch_size
        if x.dim() == 3:
            b, c, length = x.shape
            return x.view(b, c, length // p, p).permute(0, 2, 1, 3).reshape(b, length // p, c * p)
        b, c, h, w = x.shape
        x = x.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (h // p) * (w // p), c * p * p)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens with positions added, without [CLS]: (B, T, width)."""
        if self.patch_dim is None:
            tok = self.embed_tokens(x)
        else:
            tok = self.patch_embed(self.patchify(x))
        return tok + self.pos_embed[:, 1 : tok.shape[1] + 1]

    def encode(self, tokens: torch.Tensor, pad_mask: torch.Tensor | None = None, is_causal: bool = False,
               add_cls: bool = True) -> torch.Tensor:
        """Run the blocks over embedded tokens (prepending [CLS] unless told not to)."""
        if add_cls:
            cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([cls, tokens], dim=1)
            if pad_mask is not None:
                pad_mask = torch.cat([pad_mask.new_ones(pad_mask.shape[0], 1), pad_mask], dim=1)
        for block in self.blocks:
            tokens = block(tokens, pad_mask, is_causal)
        return self.norm(tokens)

    def padding_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.patch_dim is None and self.pad_id is not None:
            return x != self.pad_id
        return None

    def forward_tokens(self, x: torch.Tensor, is_causal: bool = False) -> torch.Tensor:
        """Per-token features (B, 1 + T, width), [CLS] first."""
        return self.encode(self.embed(x), self.padding_mask(x), is_causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.forward_tokens(x)
        if self.pool == "cls":
            return h[:, 0]
        return masked_mean(h[:, 1:], self.padding_mask(x))


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
