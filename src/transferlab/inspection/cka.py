"""Linear CKA (Kornblith et al., 2019) accumulated over mini-batches.

Feature-space form: CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred
X [n, p], Y [n, q]. Every term is a sum over examples, so sums of X^T X, X^T Y, Y^T Y and of the
columns are accumulated batch by batch and centred at the end (Xc^T Yc = X^T Y - n mx my^T): the
exact full-dataset value, in O(p q) memory whatever the test set's size.
"""

import torch


class StreamingCKA:
    """Feed `update(x, y)` with matching batches of two representations; `compute()` gives linear CKA."""

    def __init__(self) -> None:
        self.n = 0
        self.sx = self.sy = self.xx = self.yy = self.xy = None

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.detach().flatten(1).double(), y.detach().flatten(1).double()
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"CKA needs the same examples on both sides, got {x.shape[0]} and {y.shape[0]}")
        terms = (x.sum(0), y.sum(0), x.T @ x, y.T @ y, x.T @ y)
        if self.sx is None:
            self.sx, self.sy, self.xx, self.yy, self.xy = terms
        else:
            for name, t in zip(("sx", "sy", "xx", "yy", "xy"), terms):
                getattr(self, name).add_(t)
        self.n += x.shape[0]

    def compute(self) -> float:
        if self.n < 2:
            raise ValueError("CKA needs at least 2 examples")
        mx, my = self.sx / self.n, self.sy / self.n
        cxy = self.xy - self.n * torch.outer(mx, my)
        cxx = self.xx - self.n * torch.outer(mx, mx)
        cyy = self.yy - self.n * torch.outer(my, my)
        denom = torch.linalg.norm(cxx) * torch.linalg.norm(cyy)
        if denom <= 0:  # a constant representation carries no information to compare
            return float("nan")
        return float((cxy.pow(2).sum() / denom).clamp(0.0, 1.0))


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two whole representations [n, ...] (the same value StreamingCKA accumulates)."""
    acc = StreamingCKA()
    acc.update(x, y)
    return acc.compute()
