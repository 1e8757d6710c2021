"""The batch contract every learner shares: ``x`` ``(B, L, input_dim)``, ``y`` ``(B, L)`` long."""

from __future__ import annotations

import torch
from torch import Tensor


def check_batch(x: Tensor, y: Tensor, input_dim: int) -> None:
    """Raise a ``ValueError`` naming the problem when ``(x, y)`` is not a learner's batch."""
    if x.ndim != 3 or x.shape[-1] != input_dim:
        raise ValueError(f"x must have shape (B, L, {input_dim}), got {tuple(x.shape)}")
    if y.shape != x.shape[:2]:
        raise ValueError(f"y must have shape {tuple(x.shape[:2])} to match x, got {tuple(y.shape)}")
    if y.dtype != torch.long:
        raise ValueError(f"y must be int64 (long) class indices, got {y.dtype}")
