"""One pass over a test set through two backbones: linear CKA per block and the pooled features."""

from dataclasses import dataclass, field

import torch
from torch import nn

from transferlab.inspection.cka import StreamingCKA
from transferlab.inspection.features import block_modules, capture_blocks, inputs_of


@dataclass
class Comparison:
    cka: dict[str, float | None]            # block name -> CKA(backbone, reference); None: no output of its own,
                                            # or the same output for every example (position embeddings)
    features: torch.Tensor                  # pooled features of the backbone [n, D] (at most `keep` examples)
    reference_features: torch.Tensor        # ... and of the reference
    labels: torch.Tensor
    examples: int = 0                       # examples the CKA saw
    reduced: dict[str, int] = field(default_factory=dict)  # block -> feature width CKA compared


@torch.no_grad()
def compare(backbone: nn.Module, reference: nn.Module, loader, device: str = "cpu", max_dim: int = 2048,
            keep: int = 2000) -> Comparison:
    """CKA per block of `backbone` against the same block of `reference` on every batch of `loader`."""
    backbone, reference = backbone.to(device).eval(), reference.to(device).eval()
    names = list(block_modules(backbone))
    acc = {name: StreamingCKA() for name in names}
    pooled: list[torch.Tensor] = []
    pooled_ref: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    widths: dict[str, int] = {}
    n = 0
    with capture_blocks(backbone, max_dim) as ours, capture_blocks(reference, max_dim) as theirs:
        for batch in loader:
            x = inputs_of(batch).to(device)
            f, g = backbone(x), reference(x)
            a, b = ours.take(), theirs.take()
            for name in names:
                if name in a and name in b:
                    acc[name].update(a[name], b[name])
                    widths[name] = int(a[name].shape[1])
            if n < keep:
                pooled.append(f.cpu())
                pooled_ref.append(g.cpu())
                labels.append(batch[1].cpu() if isinstance(batch, (tuple, list)) and len(batch) > 1 else torch.zeros(len(x)))
            n += len(x)
    cka = {name: _defined(acc[name]) for name in names}
    def kept(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts)[:keep] if parts else torch.empty(0)

    return Comparison(cka, kept(pooled), kept(pooled_ref), kept(labels).long(), n, widths)


def _defined(acc: StreamingCKA) -> float | None:
    """CKA, or None where it is undefined: the block never ran, or its output is constant over examples."""
    if not acc.n:
        return None
    value = acc.compute()
    return None if value != value else value
