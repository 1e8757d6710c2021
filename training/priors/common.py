"""The batch format every prior family returns, and draws several families share.

Two sources of randomness: a ``torch.Generator`` on the device for everything drawn per
sequence or per row, and a ``numpy.random.Generator`` on the host for a chunk's structure
(depth, activation, which corruption): host draws never wait for the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

MAX_CLASSES = 10


@dataclass
class RawTasks:
    """``b`` sequences of ``L`` raw rows: the input of :func:`gpicl_sklearn.inputs.fit_input_stats`."""

    x: Tensor  # (b, L, D) float32, NaN = missing
    y: Tensor  # (b, L) long in 0..k-1
    feature_mask: Tensor  # (b, D) bool: the features this sequence has (tables have different widths)


def uniform(shape, low: float, high: float, g: torch.Generator, device) -> Tensor:
    """``U(low, high)`` in one kernel (``low + (high - low) * rand`` took three)."""
    return torch.empty(shape, device=device).uniform_(low, high, generator=g)


def log_uniform_int(b: int, low: int, high: int, g: torch.Generator, device) -> Tensor:
    """``b`` integers in ``[low, high]``, log-uniform: small widths as often as large ones."""
    u = uniform((b,), math.log(low - 0.5), math.log(high + 0.5), g, device)
    return u.exp().round().long().clamp(low, high)


def width_mask(widths: Tensor, d_max: int) -> Tensor:
    """``(b, d_max)`` bool: the first ``widths[i]`` features of sequence ``i``."""
    return torch.arange(d_max, device=widths.device)[None, :] < widths[:, None]


def class_counts(
    b: int, g: torch.Generator, device, low: int = 2, high: int = MAX_CLASSES, binary_share: float | None = None
) -> Tensor:
    """``(b,)`` class counts, uniform in ``low..high``; with ``binary_share``, 2 with that
    probability and otherwise uniform in ``3..high`` (real tables are mostly binary). ``None``
    draws exactly what it always drew, so earlier runs resume on the same tasks."""
    if binary_share is None:
        return torch.randint(low, high + 1, (b,), generator=g, device=device)
    more = torch.randint(3, high + 1, (b,), generator=g, device=device)
    return torch.where(torch.rand(b, generator=g, device=device) < binary_share, 2, more)


def class_proportions(k: Tensor, g: torch.Generator) -> Tensor:
    """``(b, MAX_CLASSES)`` random class proportions, zero beyond ``k``.

    Log-normal with a spread drawn per sequence (0: balanced, up to strongly imbalanced).
    Random proportions, not equal quantiles, decided whether meta-training left its plateau
    in the prior pilot (``../shared/design-notes.md``).
    """
    b, dev = k.shape[0], k.device
    spread = uniform((b, 1), 0.0, 1.5, g, dev)
    logits = spread * torch.randn(b, MAX_CLASSES, generator=g, device=dev)
    p = logits.exp() * (torch.arange(MAX_CLASSES, device=dev)[None] < k[:, None])
    return p / p.sum(1, keepdim=True)


def cut_into_classes(score: Tensor, k: Tensor, g: torch.Generator) -> Tensor:
    """Classes ``0..k-1`` from a continuous ``score`` (``(b, L)``) cut at random quantiles."""
    p = class_proportions(k, g)
    cuts = p.cumsum(1)[:, :-1]  # (b, C-1); entries >= 1 past k never fire
    rank = (score.argsort(1).argsort(1).float() + 0.5) / score.shape[1]
    y = (rank[:, :, None] > cuts[:, None, :]).sum(-1)
    perm = torch.rand(score.shape[0], MAX_CLASSES, generator=g, device=score.device)
    perm = perm.masked_fill(torch.arange(MAX_CLASSES, device=score.device)[None] >= k[:, None], 2.0).argsort(1)
    return perm.gather(1, y)  # which class is the "high" one is arbitrary


def argmax_classes(scores: Tensor, k: Tensor, g: torch.Generator) -> Tensor:
    """Classes from ``(b, L, MAX_CLASSES)`` scores: argmax over the first ``k``, after a random
    per-class offset that sets the class proportions."""
    b, dev = scores.shape[0], scores.device
    scores = scores / scores.std(1, keepdim=True).clamp_min(1e-6)
    offset = uniform((b, 1, MAX_CLASSES), 0.0, 1.0, g, dev) * uniform((b, 1, 1), 0.0, 2.0, g, dev)
    unused = torch.arange(MAX_CLASSES, device=dev)[None, None] >= k[:, None, None]
    return (scores + offset).masked_fill(unused, float("-inf")).argmax(-1)


def random_activation(h: Tensor, rng: np.random.Generator) -> Tensor:
    """One nonlinearity, drawn per call, applied to the whole chunk."""
    return [
        torch.tanh,
        torch.relu,
        torch.sin,
        torch.abs,
        lambda t: t,
        lambda t: torch.sigmoid(3 * t),
        lambda t: t.square().clamp_max(10.0),
    ][rng.integers(7)](h)
