"""SimCLR (Chen et al. 2020): two augmented views, a projection head, the NT-Xent loss."""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.distributed.world import world_size
from transferlab.tasks.augment import build_augment
from transferlab.tasks.ssl import SSLTask


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float,
            gather: Callable[[torch.Tensor], torch.Tensor] | None = None, rank: int = 0) -> torch.Tensor:
    """InfoNCE over 2B projections: each view's positive is its twin, the other 2B - 2 are negatives.

    `gather` (DDP): returns every rank's (2B, d) normalized projections stacked as (world, 2B, d), with
    gradients; this rank's rows are then scored against all 2B x world keys, as SimCLR does with a
    global batch, and the mean over ranks equals the single-process loss of the global batch.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    keys, offset = z, 0
    if gather is not None:
        keys, offset = gather(z).flatten(0, 1), rank * 2 * n
    sim = (z @ keys.T) / temperature
    rows = torch.arange(2 * n, device=z.device)
    sim = sim.masked_fill(F.one_hot(offset + rows, keys.shape[0]).bool(), float("-inf"))
    targets = offset + torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


class ContrastiveTask(SSLTask):
    """backbone -> projection MLP -> NT-Xent at `temperature`.

    `projection.batch_norm` (SimCLR's head has it) centres features across the batch: without it a
    freshly initialised transformer, whose [CLS] output barely depends on the input, collapses.
    The projection head stays behind: only `backbone.*` is handed to fine-tuning, as in SimCLR.
    `gather_negatives`: under DDP, training steps take negatives from every rank's batch (the
    global batch, as in SimCLR); evaluation always uses the local batch (uneven test shards).
    """

    def __init__(self, *args: Any, temperature: float = 0.2, projection: dict[str, Any] | None = None,
                 augment: dict[str, Any] | None = None, gather_negatives: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.gather_negatives = bool(gather_negatives)
        if not temperature > 0:
            from transferlab.errors import ConfigError

            raise ConfigError("task.temperature", temperature, "a positive number")
        self.temperature = float(temperature)
        proj = dict(projection or {})
        width, hidden, out = self.backbone.feature_dim, int(proj.get("hidden", 256)), int(proj.get("dim", 64))
        norm = nn.BatchNorm1d(hidden) if proj.get("batch_norm", True) else nn.Identity()
        self.projector = nn.Sequential(nn.Linear(width, hidden), norm, nn.ReLU(), nn.Linear(hidden, out))
        self.augment = build_augment(augment, self.spec.modality, self.spec.pad_id)

    def objective(self, x: torch.Tensor, generator: torch.Generator | None):
        v1, v2 = self.augment(x, generator), self.augment(x, generator)
        h = self.backbone(torch.cat([v1, v2]))
        h1, h2 = h.chunk(2)
        z1, z2 = self.projector(h1), self.projector(h2)
        if self.training and self.gather_negatives and world_size() > 1:
            loss = nt_xent(z1, z2, self.temperature, lambda z: self.all_gather(z, sync_grads=True), self.global_rank)
        else:
            loss = nt_xent(z1, z2, self.temperature)
        return loss, x.shape[0], h1
