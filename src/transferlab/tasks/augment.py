"""Batched, on-device data augmentations for contrastive views, built from `task.augment`.

One random transform per example, applied to the whole batch at once (no per-example Python
loop), so making two views costs a few tensor ops on whatever device the batch lives on.
Signals (B, C, L) and images (B, C, H, W) share one affine resampling (crop-and-resize +
translation) plus amplitude scaling and Gaussian noise; text token ids get token dropout.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from transferlab.errors import ConfigError

SPATIAL_KEYS = ("crop", "shift", "roll", "amplitude", "noise")
TEXT_KEYS = ("token_drop",)


def _uniform(n: int, bounds: Sequence[float], device, generator: torch.Generator | None) -> torch.Tensor:
    lo, hi = float(bounds[0]), float(bounds[1])
    return lo + (hi - lo) * torch.rand(n, device=device, generator=generator)


class Augment:
    """Random views for one modality; `__call__(x, generator)` returns an augmented copy of `x`.

    crop: [lo, hi] fraction of each spatial axis a view covers, resized back to full size
      (images: random resized crop; signals: time scaling). null = off.
    shift: max translation as a fraction of each axis (zero padding outside). 0 = off.
    roll: (signals) max circular shift as a fraction of the length: what leaves the end comes back at the
      start, as MNIST-1D's own generator translates its templates. 0 = off.
    amplitude: [lo, hi] per-example gain. null = off.
    noise: std of additive Gaussian noise (inputs are normalized, so this is relative). 0 = off.
    token_drop: (text) probability that a non-pad token is replaced by the pad token.
    """

    def __init__(self, modality: str, crop: Sequence[float] | None = None, shift: float = 0.0, roll: float = 0.0,
                 amplitude: Sequence[float] | None = None, noise: float = 0.0, token_drop: float = 0.0,
                 pad_id: int | None = None):
        self.modality, self.crop, self.shift, self.roll = modality, crop, float(shift), float(roll)
        self.amplitude, self.noise, self.token_drop, self.pad_id = amplitude, float(noise), float(token_drop), pad_id

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.modality == "text":
            return self._text(x, generator)
        x = self._roll(self._resample(x, generator), generator)
        n = x.shape[0]
        if self.amplitude is not None:
            x = x * _uniform(n, self.amplitude, x.device, generator).view(n, *([1] * (x.dim() - 1)))
        if self.noise > 0:
            x = x + self.noise * torch.randn(x.shape, device=x.device, generator=generator, dtype=x.dtype)
        return x

    def _resample(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Crop-and-resize plus translation as one affine grid_sample (signals as 1-row images)."""
        if self.crop is None and self.shift <= 0:
            return x
        signal = x.dim() == 3
        img = x.unsqueeze(2) if signal else x
        n, dev = img.shape[0], img.device
        scale = _uniform(n, self.crop, dev, generator) if self.crop is not None else torch.ones(n, device=dev)
        axes = 1 if signal else 2
        theta = torch.zeros(n, 2, 3, device=dev, dtype=img.dtype)
        for a in range(axes):  # a = 0: width (length), a = 1: height
            s = scale if a == 0 or not signal else torch.ones(n, device=dev)
            # a crop of relative size s may sit anywhere inside the input: centre in [-(1-s), 1-s]
            offset = (1 - s) * (2 * torch.rand(n, device=dev, generator=generator) - 1)
            offset = offset + 2 * self.shift * (2 * torch.rand(n, device=dev, generator=generator) - 1)
            theta[:, a, a], theta[:, a, 2] = s, offset
        if signal:
            theta[:, 1, 1] = 1.0
        grid = F.affine_grid(theta, list(img.shape), align_corners=False)
        out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.squeeze(2) if signal else out

    def _roll(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Each example circularly shifted along its length by up to `roll` of it, either way."""
        if self.roll <= 0:
            return x
        n, length = x.shape[0], x.shape[-1]
        most = int(self.roll * length)
        k = torch.randint(-most, most + 1, (n, 1, 1), device=x.device, generator=generator)
        index = (torch.arange(length, device=x.device) - k) % length
        return x.gather(-1, index.expand_as(x))

    def _text(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.token_drop <= 0:
            return x
        if self.pad_id is None:
            raise ConfigError("task.augment.text.token_drop", self.token_drop, "0 for data without a pad token")
        drop = torch.rand(x.shape, device=x.device, generator=generator) < self.token_drop
        return x.masked_fill(drop & (x != self.pad_id), self.pad_id)


def build_augment(cfg: Mapping[str, Any] | None, modality: str, pad_id: int | None = None,
                  key: str = "task.augment") -> Augment:
    """The `task.augment.<modality>` entry as an Augment; a missing modality names what exists."""
    cfg = dict(cfg or {})
    if modality not in cfg or cfg[modality] is None:
        raise ConfigError(f"{key}.{modality}", None,
                          f"augmentations for the data's modality {modality!r}; configured: {sorted(cfg)}")
    node = dict(cfg[modality])
    valid = TEXT_KEYS if modality == "text" else SPATIAL_KEYS
    bad = sorted(set(node) - set(valid))
    if bad:
        raise ConfigError(f"{key}.{modality}.{bad[0]}", node[bad[0]], f"one of the keys {list(valid)}")
    if modality != "signal" and float(node.get("roll") or 0) != 0:
        raise ConfigError(f"{key}.{modality}.roll", node["roll"], "0 (a circular shift is for signals)")
    for name in ("crop", "amplitude"):
        bounds = node.get(name)
        if bounds is not None and (len(bounds) != 2 or not 0 < float(bounds[0]) <= float(bounds[1])):
            raise ConfigError(f"{key}.{modality}.{name}", bounds, "[lo, hi] with 0 < lo <= hi, or null")
    return Augment(modality, pad_id=pad_id, **node)
