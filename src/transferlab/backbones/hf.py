"""A Hugging Face `transformers.AutoModel` behind the backbone contract.

Text encoders (BERT, RoBERTa, DistilBERT, ...), decoders (GPT-2, ...) and vision encoders (ViT,
...) all become `x -> [B, feature_dim]`, with their layer stack as the blocks (for freezing and
layer-wise LR decay) and LoRA's default `target_modules` for their architecture. With
`name_or_path: null` a tiny random config of `model_type` is built offline from the data's own
vocabulary; otherwise the named model's config (and with `pretrained: true` its weights) is
loaded from a local folder or the hub. `transformers` is imported only when a backbone is built.
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from transferlab.backbones.base import Backbone, masked_mean
from transferlab.errors import ConfigError, UserError

# LoRA targets where peft's own table (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING) has none.
EXTRA_LORA_TARGETS = {"distilbert": ("q_lin", "v_lin"), "vit": ("query", "value"), "deit": ("query", "value"),
                      "albert": ("query", "value"), "dinov2": ("query", "value")}
DECODER_TYPES = ("gpt2", "gpt_neo", "gpt_neox", "gptj", "llama", "mistral", "qwen2", "phi", "opt", "bloom", "falcon")
POOLS = ("auto", "cls", "mean", "last")


def default_lora_targets(model_type: str) -> tuple[str, ...]:
    """peft's per-architecture default LoRA targets (the maintained table), else ours, else none."""
    try:
        from peft.utils import (
            TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as mapping,
        )
    except ImportError:
        mapping = {}
    return tuple(mapping.get(model_type) or EXTRA_LORA_TARGETS.get(model_type, ()))


class HFBackbone(Backbone):
    """Wraps `self.model` (an AutoModel); text inputs are token ids (padding masked by `pad_id`), images pixels."""

    modalities = ("text", "image")

    def __init__(self, input_shape: Sequence[int], name_or_path: str | None = None, pretrained: bool = False,
                 model_type: str = "bert", hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                 intermediate_size: int = 128, config: dict[str, Any] | None = None, pool: str = "auto",
                 lora_targets: Sequence[str] | None = None, vocab_size: int | None = None, pad_id: int | None = None,
                 tokenizer: str | None = None, **_: object):
        super().__init__()
        if pool not in POOLS:
            raise ConfigError("model.pool", pool, f"one of {list(POOLS)}")
        self.input_shape = tuple(input_shape)
        self.is_text = vocab_size is not None
        if not self.is_text and len(self.input_shape) != 3:
            raise ConfigError("model", "hf", f"text token ids or images (C, H, W); this data has inputs of shape {self.input_shape}")
        self.pad_id = pad_id
        if name_or_path:  # the architecture is name_or_path's config.json: the random config's keys would do nothing
            arch = dict(model_type=model_type, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                        intermediate_size=intermediate_size)
            for key, value in arch.items():
                if value != RANDOM_CONFIG_DEFAULTS[key]:
                    raise ConfigError(f"model.{key}", value, f"its default {RANDOM_CONFIG_DEFAULTS[key]!r} with model.name_or_path "
                                      f"(the architecture is {name_or_path}'s config.json; change one of its keys with "
                                      "model.config={key: value})")
        self.model = _build_model(self.input_shape, name_or_path, pretrained, model_type, hidden_size, num_layers,
                                  num_heads, intermediate_size, dict(config or {}), vocab_size, pad_id)
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None  # pooling is ours (`pool`); an unused pooler would leave dead parameters
        cfg = self.model.config
        self.model_type = str(cfg.model_type)
        if self.is_text:
            _check_vocab(self.model, vocab_size, name_or_path, pretrained)
        self.feature_dim = int(getattr(cfg, "hidden_size", None) or cfg.dim)
        self.pool = ("last" if self.model_type in DECODER_TYPES else "cls") if pool == "auto" else pool
        self._lora_targets = tuple(lora_targets) if lora_targets else default_lora_targets(self.model_type)
        self._layers_prefix, self._n_layers = _find_layers(self.model)
        self._stem, self._final = _outside_layers(self.model, self._layers_prefix)

    @property
    def lora_targets(self) -> tuple[str, ...]:
        return self._lora_targets

    # -- blocks -----------------------------------------------------------------------------------
    def block_names(self) -> list[str]:
        return self._stem + [f"{self._layers_prefix}.{i}" for i in range(self._n_layers)] + self._final

    def block_of(self, param_name: str) -> int:
        prefix = self._layers_prefix + "."
        if param_name.startswith(prefix):
            return int(param_name[len(prefix):].split(".")[0]) + 1
        if any(param_name == s or param_name.startswith(s + ".") for s in self._stem):
            return 0
        return self._n_layers + 1

    @property
    def num_layers(self) -> int:
        """Depth positions: the embeddings, each layer, what follows the layers (final norm, pooler)."""
        return self._n_layers + 2

    # -- forward ----------------------------------------------------------------------------------
    def attention_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.is_text and self.pad_id is not None:
            return (x != self.pad_id).long()
        return None

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token (or per-patch) features (B, T, feature_dim): the model's last hidden state."""
        if self.is_text:
            out = self.model(input_ids=x, attention_mask=self.attention_mask(x))
        else:
            out = self.model(pixel_values=x)
        return out.last_hidden_state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.forward_tokens(x)
        mask = self.attention_mask(x)
        if self.pool == "cls":
            return h[:, 0]
        if self.pool == "last":
            if mask is None:
                return h[:, -1]
            last = (mask.sum(1) - 1).clamp_min(0)
            return h[torch.arange(h.shape[0], device=h.device), last]
        return masked_mean(h, mask)


# the random config's keys (HFBackbone's defaults, conf/model/hf.yaml): used only when name_or_path is null
RANDOM_CONFIG_DEFAULTS = {"model_type": "bert", "hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128}


def _build_model(input_shape: tuple[int, ...], name_or_path: str | None, pretrained: bool, model_type: str,
                 hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int, extra: dict[str, Any],
                 vocab_size: int | None, pad_id: int | None) -> nn.Module:
    try:
        from transformers import AutoConfig, AutoModel
    except ImportError:
        raise UserError("model=hf needs `transformers`: pip install 'transferlab[text]'") from None
    if pretrained and not name_or_path:
        raise ConfigError("model.pretrained", pretrained, "pretrained weights need model.name_or_path (a hub name or a local folder)")
    if name_or_path:
        try:
            if pretrained:
                return AutoModel.from_pretrained(str(name_or_path), **extra)
            return AutoModel.from_config(AutoConfig.from_pretrained(str(name_or_path), **extra))
        except OSError as e:
            what = "weights" if pretrained else "config"
            raise ConfigError("model.name_or_path", name_or_path,
                              f"a local model folder or a hub name whose {what} are available (offline: download them "
                              f"first or point at a local copy); transformers said: {str(e).splitlines()[0]}") from None
    keys: dict[str, Any] = dict(hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
                                intermediate_size=intermediate_size)
    if vocab_size is not None:
        keys.update(vocab_size=vocab_size, pad_token_id=pad_id, bos_token_id=None, eos_token_id=None,
                    # RoBERTa-style models number positions from pad_id + 1
                    max_position_embeddings=input_shape[0] + (pad_id or 0) + 2)
    else:
        c, h, w = input_shape
        if h != w:
            raise ConfigError("model", "hf", f"square images for a random vision config (got {h}x{w})")
        keys.update(image_size=h, num_channels=c, patch_size=extra.pop("patch_size", 2 if h <= 32 else 16))
    keys.update(extra)
    try:
        config = AutoConfig.for_model(model_type, **keys)
    except (ValueError, KeyError) as e:
        raise ConfigError("model.model_type", model_type, f"a transformers model_type such as bert, roberta, gpt2, vit ({e})") from None
    if hasattr(config, "n_inner") and "n_inner" not in extra:  # GPT-2's MLP width is n_inner, not intermediate_size
        config.n_inner = intermediate_size
    return AutoModel.from_config(config)


def _check_vocab(model: nn.Module, vocab_size: int, name_or_path: str | None, pretrained: bool) -> None:
    n = model.get_input_embeddings().num_embeddings
    if vocab_size > n:
        raise ConfigError("data.tokenizer.pretrained", name_or_path,
                          f"the data's tokenizer has {vocab_size} ids but the model's embedding has {n}: "
                          f"use the model's own tokenizer (data.tokenizer.pretrained=<model name or folder>)")


def _find_layers(model: nn.Module) -> tuple[str, int]:
    """The model's layer stack: the first ModuleList of `num_hidden_layers` entries, else the longest."""
    lists = [(name, len(m)) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    depth = getattr(model.config, "num_hidden_layers", None)
    exact = [item for item in lists if item[1] == depth]
    best = exact[0] if exact else max(lists, key=lambda item: item[1], default=None)
    if best is None:
        raise ConfigError("model.name_or_path", type(model).__name__, "a transformer with a list of layers")
    return f"model.{best[0]}", best[1]


def _outside_layers(model: nn.Module, layers_prefix: str) -> tuple[list[str], list[str]]:
    """Modules holding parameters before the layer stack (stem) and after it (final), in order."""
    stem: list[str] = []
    final: list[str] = []
    seen_layers = False
    for name, _ in model.named_parameters():
        full = f"model.{name}"
        if full.startswith(layers_prefix + "."):
            seen_layers = True
            continue
        owner = full.rsplit(".", 1)[0]
        owner = full if owner == "model" else owner  # a parameter held by the model itself
        bucket = final if seen_layers else stem
        if owner not in bucket:
            bucket.append(owner)
    return stem, final
