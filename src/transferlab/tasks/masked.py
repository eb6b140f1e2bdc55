"""Masked modeling on the transformer backbone.

Signals and images: MAE (He et al. 2022) - the encoder sees only the visible patches, a light
decoder fills in mask tokens and reconstructs the masked patches (MSE on those only).
Text: BERT-style masked-language modeling - `mlm.mask_ratio` of the non-pad tokens are chosen;
80% become the mask token, 10% a random token, 10% stay; cross-entropy on the chosen ones.
"""

from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from transferlab.backbones.transformer import Block, Transformer
from transferlab.errors import ConfigError
from transferlab.tasks.augment import build_augment
from transferlab.tasks.lm_head import vocab_head, vocab_logits
from transferlab.tasks.ssl import SSLTask


def require_transformer(cfg: DictConfig, task: str) -> None:
    """Pre-flight: objectives that read per-patch/per-token features need model=transformer."""
    target = str(cfg.model.get("_target_", ""))
    if not target.endswith("transformer.Transformer"):
        raise ConfigError("model", cfg.model.get("name"),
                          f"task={task} needs model=transformer (it works on the transformer's patches/tokens)")


MASK_MODES = ("random", "block")


class MaskedTask(SSLTask):
    """MAE for signals/images, MLM for text; the decoder / LM head stays behind at hand-off."""

    @classmethod
    def validate_config(cls, cfg: DictConfig) -> None:
        require_transformer(cfg, cfg.task.get("name", "masked"))
        ratio = cfg.task.get("mask_ratio")
        if not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
            raise ConfigError("task.mask_ratio", ratio, "a number in (0, 1)")

    def __init__(self, *args: Any, mask_ratio: float = 0.5, mask_mode: str = "random", norm_pix_loss: bool = False,
                 decoder: dict[str, Any] | None = None, mlm: dict[str, Any] | None = None,
                 augment: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not isinstance(self.backbone, Transformer):
            raise ConfigError("model", type(self.backbone).__name__, f"task={self.task_name} needs model=transformer")
        self.mask_ratio, self.norm_pix_loss = float(mask_ratio), bool(norm_pix_loss)
        if mask_mode not in MASK_MODES:
            raise ConfigError("task.mask_mode", mask_mode, f"one of {', '.join(MASK_MODES)}")
        self.mask_mode = mask_mode
        width = self.backbone.feature_dim
        if self.spec.modality == "text":
            self._init_mlm(dict(mlm or {}), width)
        else:
            self._init_mae(dict(decoder or {}), width)
        # MAE augments its training images (random resized crop); null for the data's modality = off
        augment = dict(augment or {})
        if self.spec.modality == "text" and augment.get("text"):
            raise ConfigError("task.augment.text", augment["text"], "null (masked-language modeling masks tokens and augments nothing)")
        self.augment = build_augment(augment, self.spec.modality) if augment.get(self.spec.modality) else None

    # -- MAE -------------------------------------------------------------------------------------
    def _init_mae(self, dec: dict[str, Any], width: int) -> None:
        dw = int(dec.get("width", width))
        self.decoder_embed = nn.Linear(width, dw)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dw))
        self.decoder_pos = nn.Parameter(torch.randn(1, self.backbone.num_patches + 1, dw) * 0.02)
        self.decoder_blocks = nn.ModuleList(Block(dw, int(dec.get("heads", 4)), float(dec.get("mlp_ratio", 4.0)), 0.0)
                                            for _ in range(int(dec.get("depth", 1))))
        self.decoder_norm = nn.LayerNorm(dw)
        self.decoder_pred = nn.Linear(dw, self.backbone.patch_dim)

    def random_masking(self, b: int, t: int, device: torch.device, generator: torch.Generator | None):
        """A random permutation per example: its first `keep` positions stay visible. `mask_mode=random`
        hides any `t - keep` patches (MAE); `block` hides one contiguous run of them at a random start.
        Returns (order, restore, keep, masked) with masked[i, j] = 1.0 where patch j is hidden."""
        keep = min(t - 1, max(1, round(t * (1 - self.mask_ratio))))
        score = torch.rand(b, t, device=device, generator=generator)  # in [0, 1): lowest scores stay visible
        if self.mask_mode == "block":
            start = torch.randint(0, keep + 1, (b, 1), device=device, generator=generator)
            pos = torch.arange(t, device=device)
            score = score + ((pos >= start) & (pos < start + t - keep)).float()  # the block ranks last
        order = score.argsort(1)
        restore = order.argsort(1)
        return order, restore, keep, (restore >= keep).float()  # hidden iff its rank in `order` >= keep

    def encode_visible(self, x: torch.Tensor, order: torch.Tensor, keep: int) -> torch.Tensor:
        """The encoder sees [CLS] + the visible patches only (with their positions): (B, 1 + keep, width)."""
        tokens = self.backbone.embed(x)
        visible = tokens.gather(1, order[:, :keep, None].expand(-1, -1, tokens.shape[-1]))
        return self.backbone.encode(visible)

    def decode(self, latent: torch.Tensor, restore: torch.Tensor, keep: int) -> torch.Tensor:
        """Mask tokens fill the hidden positions; decoder positions are added; (B, T, patch_dim)."""
        latent = self.decoder_embed(latent)
        b, t, d = latent.shape[0], restore.shape[1], latent.shape[-1]
        filled = torch.cat([latent[:, 1:], self.mask_token.expand(b, t - keep, -1)], dim=1)
        filled = filled.gather(1, restore[..., None].expand(-1, -1, d))
        h = torch.cat([latent[:, :1], filled], dim=1) + self.decoder_pos
        for block in self.decoder_blocks:
            h = block(h)
        return self.decoder_pred(self.decoder_norm(h))[:, 1:]

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """The patches to reconstruct; with `norm_pix_loss`, each patch normalised to mean 0, variance 1."""
        target = self.backbone.patchify(x)
        if self.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        return target

    @staticmethod
    def masked_loss(pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the hidden patches only."""
        per_patch = ((pred - target) ** 2).mean(-1)
        return (per_patch * masked).sum() / masked.sum()

    def _mae(self, x: torch.Tensor, generator: torch.Generator | None):
        if self.training and self.augment is not None:  # training batches only: val/loss reads clean inputs
            x = self.augment(x, generator)
        t = self.backbone.num_patches
        order, restore, keep, masked = self.random_masking(x.shape[0], t, x.device, generator)
        pred = self.decode(self.encode_visible(x, order, keep), restore, keep)
        return self.masked_loss(pred, self.targets(x), masked.to(pred.dtype)), int(masked.sum()), None

    # -- MLM -------------------------------------------------------------------------------------
    def _init_mlm(self, mlm: dict[str, Any], width: int) -> None:
        vocab, pad = self.spec.vocab_size, self.spec.pad_id
        mask_id = mlm.get("mask_id")
        if mask_id is None:
            mask_id = getattr(self.spec, "mask_id", None)
        if mask_id is None or not 0 <= int(mask_id) < vocab:
            raise ConfigError("task.mlm.mask_id", mask_id,
                              f"the id of the tokenizer's mask token in [0, {vocab}) (the data spec gives none)")
        self.mask_id, self.pad_id = int(mask_id), pad
        self.mlm_ratio = float(mlm.get("mask_ratio", 0.15))
        self.random_prob, self.keep_prob = float(mlm.get("random_prob", 0.1)), float(mlm.get("keep_prob", 0.1))
        self.tie_weights = bool(mlm.get("tie_weights", True))
        self.lm_transform = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width))
        self.lm_head, self.lm_bias = vocab_head(width, vocab, self.tie_weights)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return vocab_logits(self.lm_transform(h), self.backbone, self.lm_head, self.lm_bias)

    def _mlm(self, x: torch.Tensor, generator: torch.Generator | None):
        real = x != self.pad_id if self.pad_id is not None else torch.ones_like(x, dtype=torch.bool)
        r = torch.rand(x.shape, device=x.device, generator=generator)
        chosen = (r < self.mlm_ratio) & real
        if not chosen.any():  # tiny batches: always predict at least one token
            chosen = chosen | (real & (real.cumsum(1) == 1))
        u = torch.rand(x.shape, device=x.device, generator=generator)
        rand_tok = torch.randint(0, self.spec.vocab_size, x.shape, device=x.device, generator=generator)
        if self.pad_id is not None:
            rand_tok = rand_tok.masked_fill(rand_tok == self.pad_id, self.mask_id)
        inputs = torch.where(chosen & (u < 1 - self.random_prob - self.keep_prob), self.mask_id, x)
        inputs = torch.where(chosen & (u >= 1 - self.random_prob - self.keep_prob) & (u < 1 - self.keep_prob), rand_tok, inputs)
        h = self.backbone.forward_tokens(inputs)[:, 1:]
        logits = self._logits(h[chosen])
        n = int(chosen.sum())
        return F.cross_entropy(logits, x[chosen]), n, None

    def objective(self, x: torch.Tensor, generator: torch.Generator | None):
        return self._mlm(x, generator) if self.spec.modality == "text" else self._mae(x, generator)
