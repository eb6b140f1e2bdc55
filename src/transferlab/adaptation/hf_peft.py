"""The LoRA family (LoRA, DoRA, IA3, LoHa, LoKr) through Hugging Face `peft`.

Adapters are injected in place (`peft.inject_adapter_in_model`), so the task keeps its
`self.backbone` and names stay readable: `blocks.0.attn.q_proj.base_layer.weight` (frozen)
and `blocks.0.attn.q_proj.lora_A.default.weight` (trainable). `peft` is imported inside the
methods: runs that do not use it never pay its import time.
"""

from typing import Any

from torch import nn

from transferlab.adaptation.base import Adaptation
from transferlab.errors import ConfigError

TARGETABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def targetable(module: nn.Module) -> bool:
    """A layer peft's tuners wrap: linear and conv layers, and transformers' Conv1D (GPT-2's c_attn, c_fc, c_proj)."""
    cls = type(module)
    return isinstance(module, TARGETABLE) or (cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers."))


def targetable_names(backbone: nn.Module) -> list[str]:
    """Leaf names of the layers a peft method can wrap (what `peft.target_modules` may list)."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in backbone.named_modules() if name and targetable(m)})


def resolve_targets(backbone: nn.Module, target_modules: list[str] | None) -> list[str]:
    """`target_modules`, or the backbone's `lora_targets` when null; unknown names are a ConfigError."""
    valid = targetable_names(backbone)
    if target_modules is None:
        targets = list(getattr(backbone, "lora_targets", ()) or ())
        if not targets:
            raise ConfigError("peft.target_modules", None,
                              f"{type(backbone).__name__} names no default `lora_targets`: list some of {valid}")
        return targets
    if isinstance(target_modules, str) or not target_modules:
        raise ConfigError("peft.target_modules", target_modules, f"a non-empty list of layer names from {valid}, or null")
    names = [name for name, m in backbone.named_modules() if name and targetable(m)]
    unknown = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if unknown:
        raise ConfigError("peft.target_modules", list(target_modules),
                          f"unknown layer(s) {unknown}; the backbone's linear/conv layer names are {valid} (or null for its default)")
    return list(target_modules)


def tuner_layers(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(name, m) for name, m in backbone.named_modules() if isinstance(m, BaseTunerLayer)]


class PeftMethod(Adaptation):
    """Shared by every peft method: target resolution, injection, adapter names, merge."""

    def __init__(self, name: str, target_modules: list[str] | None = None):
        super().__init__(name)
        self.target_modules = None if target_modules is None else list(target_modules)

    def peft_config(self, targets: list[str]) -> Any:
        """The method's `peft` config object for these target module names."""
        raise NotImplementedError

    def attach(self, backbone: nn.Module) -> nn.Module:
        from peft import inject_adapter_in_model

        targets = resolve_targets(backbone, self.target_modules)
        try:
            inject_adapter_in_model(self.peft_config(targets), backbone)
        except ValueError as e:  # e.g. a layer type this method does not support
            raise ConfigError("peft.target_modules", targets, f"layers peft={self.name} can wrap ({e})") from None
        return backbone

    def adapter_parameter_names(self, backbone: nn.Module) -> list[str]:
        names: set[str] = set()
        for prefix, layer in tuner_layers(backbone):
            for attr in layer.adapter_layer_names:
                for sub, _ in getattr(layer, attr).named_parameters():
                    names.add(f"{prefix}.{attr}.{sub}")
        own = {n for n, _ in backbone.named_parameters()}
        return sorted(names & own)

    def merge(self, backbone: nn.Module) -> nn.Module:
        """peft's own merge folds each adapter into its base layer; the wrapper is then swapped for
        that base layer, leaving a plain backbone (original parameter names, no peft types)."""
        for name, layer in tuner_layers(backbone):
            layer.merge(safe_merge=True)
            parent, _, child = name.rpartition(".")
            setattr(backbone.get_submodule(parent) if parent else backbone, child, layer.get_base_layer())
        return backbone


class LoRA(PeftMethod):
    """LoRA (Hu et al., 2021); `use_dora: true` gives DoRA (Liu et al., 2024). B starts at zero."""

    def __init__(self, name: str, r: int, alpha: float, dropout: float = 0.0, target_modules: list[str] | None = None,
                 bias: str = "none", use_dora: bool = False, use_rslora: bool = False):
        super().__init__(name, target_modules)
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise ConfigError("peft.r", r, "a positive integer rank")
        if bias not in ("none", "all", "lora_only"):
            raise ConfigError("peft.bias", bias, "'none', 'all' or 'lora_only'")
        self.r, self.alpha, self.dropout, self.bias = r, alpha, dropout, bias
        self.use_dora, self.use_rslora = use_dora, use_rslora

    def peft_config(self, targets: list[str]) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
                          bias=self.bias, use_dora=self.use_dora, use_rslora=self.use_rslora)


class IA3(PeftMethod):
    """(IA)^3 (Liu et al., 2022): learned per-channel scales, initialised to one.

    Layers listed in `feedforward_modules` scale their input, the others their output.
    """

    def __init__(self, name: str, target_modules: list[str] | None = None, feedforward_modules: list[str] | None = None):
        super().__init__(name, target_modules)
        self.feedforward_modules = list(feedforward_modules or [])

    def peft_config(self, targets: list[str]) -> Any:
        from peft import IA3Config

        unknown = [m for m in self.feedforward_modules if m not in targets]
        if unknown:
            raise ConfigError("peft.feedforward_modules", self.feedforward_modules,
                              f"a subset of the target modules {targets} (not {unknown})")
        return IA3Config(target_modules=targets, feedforward_modules=self.feedforward_modules)


class LoHa(PeftMethod):
    """LoHa (Hadamard product of two low-rank factors; LyCORIS). Starts as the identity update."""

    def __init__(self, name: str, r: int, alpha: float, rank_dropout: float = 0.0, module_dropout: float = 0.0,
                 target_modules: list[str] | None = None):
        super().__init__(name, target_modules)
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise ConfigError("peft.r", r, "a positive integer rank")
        self.r, self.alpha, self.rank_dropout, self.module_dropout = r, alpha, rank_dropout, module_dropout

    def peft_config(self, targets: list[str]) -> Any:
        from peft import LoHaConfig

        return LoHaConfig(r=self.r, alpha=self.alpha, rank_dropout=self.rank_dropout,
                          module_dropout=self.module_dropout, target_modules=targets)


class LoKr(LoHa):
    """LoKr (Kronecker product of a small and a low-rank factor; LyCORIS)."""

    def peft_config(self, targets: list[str]) -> Any:
        from peft import LoKrConfig

        return LoKrConfig(r=self.r, alpha=self.alpha, rank_dropout=self.rank_dropout,
                          module_dropout=self.module_dropout, target_modules=targets)
