"""Which input positions a prediction depends on, through Captum (imported only here).

Integrated Gradients (Sundararajan et al., 2017; zero baseline, or the padding token for text) or
plain saliency (|gradient|, one backward pass). Token ids are not differentiable, so for text the
attribution is taken at the embedding layer's output and summed over its width: one score per token.
"""

import torch
from torch import nn

METHODS = ("integrated_gradients", "saliency")


def embedding_layer(backbone: nn.Module) -> nn.Module | None:
    """The token embedding of a text backbone (transformer's `embed_tokens`, a Hugging Face model's
    input embeddings); None for signals and images."""
    if getattr(backbone, "patch_dim", 0) is None and hasattr(backbone, "embed_tokens"):
        return backbone.embed_tokens
    model = getattr(backbone, "model", None)
    if getattr(backbone, "is_text", False) and hasattr(model, "get_input_embeddings"):
        return model.get_input_embeddings()
    return None


def pick_examples(loader, per_class: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `per_class` test examples of each class, class by class."""
    chosen: dict[int, list[torch.Tensor]] = {c: [] for c in range(num_classes)}
    for x, y in loader:
        for xi, yi in zip(x, y.tolist()):
            if len(chosen[yi]) < per_class:
                chosen[yi].append(xi)
        if all(len(v) >= per_class for v in chosen.values()):
            break
    xs = [xi for c in range(num_classes) for xi in chosen[c]]
    ys = [c for c in range(num_classes) for _ in chosen[c]]
    return torch.stack(xs), torch.tensor(ys)


def attribute(model: nn.Module, backbone: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str,
              steps: int = 32, pad_id: int | None = None) -> torch.Tensor:
    """Attributions with the input's positions: x's shape for signals/images, [B, T] for token ids."""
    from captum.attr import IntegratedGradients, LayerGradientXActivation, LayerIntegratedGradients, Saliency

    from transferlab.errors import ConfigError

    if method not in METHODS:
        raise ConfigError("attribution", method, f"one of {list(METHODS)}")
    model.eval()
    layer = embedding_layer(backbone)
    if layer is not None:
        if method == "integrated_gradients":
            baseline = torch.full_like(x, pad_id if pad_id is not None else 0)
            attr = LayerIntegratedGradients(model, layer).attribute(x, baselines=baseline, target=target, n_steps=steps)
        else:  # the embedding's gradient alone: saliency per token
            attr = LayerGradientXActivation(model, layer, multiply_by_inputs=False).attribute(x, target=target).abs()
        return attr.sum(-1).detach()
    x = x.detach().clone().float().requires_grad_(True)  # never mark the caller's tensor
    if method == "integrated_gradients":
        return IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=steps).detach()
    return Saliency(model).attribute(x, target=target, abs=True).detach()
