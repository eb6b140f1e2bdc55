"""Image corruptions at severities 1..5, in the spirit of ImageNet-C (Hendrycks & Dietterich, 2019).

Each corruption maps raw (un-normalized) images (N, C, H, W) to corrupted copies. The random
draws (noise pattern, rotation sign, shift direction, occluder position) depend only on the
seed and the corruption, never on the severity, so a higher severity is the same perturbation
made stronger: distance from the clean images grows with severity. Sizes are relative to the
image side, so the same table serves 8x8 digits and larger image folders.
"""

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from transferlab.errors import ConfigError

# severity 1..5 -> strength; noise in units of the clean images' value range, sizes as a fraction of the side
SEVERITY = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),   # noise std / value range (ImageNet-C's values)
    "blur": (0.05, 0.08, 0.11, 0.15, 0.2),               # Gaussian sigma / side
    "rotate": (5.0, 10.0, 15.0, 25.0, 35.0),             # degrees, random sign per image
    "translate": (0.05, 0.1, 0.15, 0.2, 0.3),            # shift / side, random direction per image
    "occlude": (0.2, 0.3, 0.4, 0.5, 0.6),                # occluding square's side / side, random position
}
CORRUPTIONS = tuple(SEVERITY)


def _noise(x: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    lo, hi = float(x.min()), float(x.max())
    noisy = x + torch.randn(x.shape, generator=g) * s * (hi - lo)
    return noisy.clamp(lo, hi)


def _blur(x: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    sigma = s * x.shape[-1]
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    out = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample with background = the images' minimum value (zero ink for digits)."""
    lo = x.amin()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - lo, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + lo


def _rotate(x: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    sign = torch.randint(0, 2, (x.shape[0],), generator=g) * 2 - 1
    a = torch.deg2rad(sign * s)
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return _affine(x, theta)


def _translate(x: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    angle = torch.rand(x.shape[0], generator=g) * 2 * math.pi
    dx, dy = 2 * s * torch.cos(angle), 2 * s * torch.sin(angle)   # grid units span 2 per side
    one, zero = torch.ones_like(dx), torch.zeros_like(dx)
    theta = torch.stack([torch.stack([one, zero, dx], 1), torch.stack([zero, one, dy], 1)], 1)
    return _affine(x, theta)


def _occlude(x: torch.Tensor, s: float, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    cy, cx = torch.rand(n, generator=g) * h, torch.rand(n, generator=g) * w
    half_h, half_w = s * h / 2, s * w / 2
    ys, xs = torch.arange(h).view(1, h, 1) + 0.5, torch.arange(w).view(1, 1, w) + 0.5
    inside = ((ys - cy.view(n, 1, 1)).abs() < half_h) & ((xs - cx.view(n, 1, 1)).abs() < half_w)
    return torch.where(inside.unsqueeze(1), x.amin(), x)


APPLY: dict[str, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]] = {
    "gaussian_noise": _noise, "blur": _blur, "rotate": _rotate, "translate": _translate, "occlude": _occlude,
}


def corrupt(x: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """A corrupted copy of images `x` (N, C, H, W); deterministic for (seed, name), whatever the severity."""
    if name not in APPLY:
        raise ConfigError("data.corruptions", name, f"names from {list(CORRUPTIONS)}")
    if not (isinstance(severity, int) and 1 <= severity <= 5):
        raise ConfigError("data.severities", severity, "integers in 1..5")
    if x.ndim != 4:
        raise ConfigError("data.corruptions", name, f"image datasets (N, C, H, W); this one has arrays of shape {x.shape}")
    g = torch.Generator().manual_seed(int(seed) * 1000 + CORRUPTIONS.index(name))
    with torch.no_grad():
        out = APPLY[name](torch.as_tensor(x, dtype=torch.float32), SEVERITY[name][severity - 1], g)
    return out.numpy().astype(x.dtype, copy=False)


def corrupted_test_sets(x: np.ndarray, y: np.ndarray, corruptions: Sequence[str], severities: Sequence[int],
                        seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`{<corruption>_s<severity>: (x, y)}` for every requested pair (the labels are unchanged)."""
    return {f"{name}_s{sev}": (corrupt(x, name, int(sev), seed), y) for name in corruptions for sev in severities}
