"""What real tables have and clean synthetic features lack, applied per sequence and column.

Every corruption hits a random share of the columns of a random share of the sequences:
skewed and heavy-tailed marginals, outliers, discretised columns, categorical-coded columns
(values bucketed into a few levels whose integer codes are randomly permuted, as an
ordinal encoding of categories would give), irrelevant columns (pure noise), duplicated
columns, missing values (completely at random, or above a threshold), and label noise.
Labels are computed before the corruptions, so discretisation and missingness lose
information as they do in real data.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from training.priors.common import RawTasks, uniform

MAX_LEVELS = 12


def _columns(b: int, d: int, seq_p: float, col_p: float, g: torch.Generator) -> Tensor:
    """``(b, 1, d)`` bool: columns hit, in ``seq_p`` of the sequences, each with probability ``col_p``."""
    dev = g.device
    seq = torch.rand(b, 1, 1, generator=g, device=dev) < seq_p
    rate = uniform((b, 1, 1), 0.0, 2 * col_p, g, dev)
    return seq & (torch.rand(b, 1, d, generator=g, device=dev) < rate)


def _categorical_codes(x: Tensor, g: torch.Generator) -> Tensor:
    """Bucket each column at random data values into 2..MAX_LEVELS levels; codes randomly permuted."""
    b, length, d = x.shape
    dev = x.device
    levels = torch.randint(2, MAX_LEVELS + 1, (b, 1, d), generator=g, device=dev)
    rows = torch.randint(0, length, (b, MAX_LEVELS - 1, d), generator=g, device=dev)
    cuts = x.gather(1, rows)  # (b, M-1, d) thresholds at data values
    cuts = cuts.masked_fill(torch.arange(MAX_LEVELS - 1, device=dev)[None, :, None] >= levels - 1, float("inf"))
    bucket = (x[:, :, None, :] > cuts[:, None, :, :]).sum(2)  # (b, L, d) in 0..levels-1
    codes = torch.rand(b, MAX_LEVELS, d, generator=g, device=dev).argsort(1)
    return codes.gather(1, bucket).float()


def corrupt(t: RawTasks, g: torch.Generator, rng: np.random.Generator, chunks: list[int] | None = None) -> RawTasks:
    """``t`` with the corruptions applied; ``chunks``: sizes of consecutive runs of sequences
    that each get their own host draws (whether and how values go missing), as if each
    chunk had been corrupted on its own; ``None``: one chunk. Everything else is drawn per
    sequence and column, so chunks of one width are corrupted together, in one set of kernels.
    """
    x, y = t.x, t.y
    b, length, d = x.shape
    dev = g.device
    hit = _columns(b, d, 0.5, 0.2, g)
    x = torch.where(hit, torch.sign(x) * x.abs().pow(uniform((b, 1, d), 1.5, 3.0, g, dev)), x)
    hit = _columns(b, d, 0.4, 0.2, g)
    x = torch.where(hit, torch.exp(uniform((b, 1, d), 0.5, 2.0, g, dev) * x.clamp(-10, 10)), x)
    outlier = (torch.rand(b, length, d, generator=g, device=dev) < 0.01) & _columns(b, d, 0.2, 0.5, g)
    x = torch.where(outlier, x * uniform((b, length, d), 5.0, 50.0, g, dev), x)
    hit = _columns(b, d, 0.3, 0.2, g)
    step = x.std(1, keepdim=True) * uniform((b, 1, d), 0.2, 1.5, g, dev)
    x = torch.where(hit, torch.floor(x / step.clamp_min(1e-6)), x)
    hit = _columns(b, d, 0.5, 0.25, g)
    x = torch.where(hit, _categorical_codes(x, g), x)
    hit = _columns(b, d, 0.3, 0.2, g)
    x = torch.where(hit, torch.randn(b, length, d, generator=g, device=dev), x)
    hit = _columns(b, d, 0.2, 0.1, g)
    source = torch.randint(0, d, (b, 1, d), generator=g, device=dev).expand(-1, length, -1)
    x = torch.where(hit, x.gather(2, source), x)
    # Scale and offset: the input statistics must undo them (and survive float32 ranges).
    x = x * uniform((b, 1, d), -3.0, 3.0, g, dev).exp() + uniform((b, 1, d), -3.0, 3.0, g, dev).exp() - 1
    start = 0
    for size in chunks or [b]:  # x is this function's own tensor: its chunks are masked in place
        part = x[start : start + size]
        start += size
        if rng.random() < 0.35:
            rate = uniform((size, 1, d), 0.0, 0.4, g, dev) * _columns(size, d, 1.0, 0.3, g)
            if rng.random() < 0.7:
                missing = torch.rand(size, length, d, generator=g, device=dev) < rate
            else:  # not at random: the largest values go missing
                missing = part.argsort(1).argsort(1).float() / length > 1 - rate
            part.masked_fill_(missing, float("nan"))
    noisy = (torch.rand(b, 1, generator=g, device=dev) < 0.3) & (
        torch.rand(b, length, generator=g, device=dev) < uniform((b, 1), 0.0, 0.15, g, dev)
    )
    k = y.amax(1, keepdim=True) + 1
    y = torch.where(noisy, (torch.rand(b, length, generator=g, device=dev) * k).long(), y)
    return RawTasks(x=x, y=y, feature_mask=t.feature_mask)
