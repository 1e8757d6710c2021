"""Random decision-tree ensembles labelling random features (cf. TabForestPFN's forest prior).

Features are independent normal, uniform, exponential or heavy-tailed columns, in half
the chunks mixed by a random linear map (correlated features). ``T`` random trees of
depth ``t`` split on random features at the value of a random row (data quantiles, so
every split cuts the data); each leaf holds a random score per class, and a row's class
is the argmax of its summed scores over the first ``k`` classes: axis-aligned,
piecewise-constant boundaries that no linear model draws.
"""

from __future__ import annotations

import numpy as np
import torch

from training.priors.common import MAX_CLASSES, RawTasks, argmax_classes, class_counts, log_uniform_int, width_mask


def base_features(b: int, length: int, d: int, g: torch.Generator, rng: np.random.Generator) -> torch.Tensor:
    """``(b, L, d)`` columns of mixed marginals, correlated in half the chunks."""
    dev = g.device
    normal = torch.randn(b, length, d, generator=g, device=dev)
    u = torch.rand(b, length, d, generator=g, device=dev)
    kinds = torch.randint(0, 4, (b, 1, d), generator=g, device=dev)
    x = torch.where(kinds == 1, 3.4 * u - 1.7, normal)  # uniform, unit variance
    x = torch.where(kinds == 2, -torch.log1p(-u * 0.9999), x)  # exponential
    x = torch.where(kinds == 3, normal / (u + 0.05).sqrt(), x)  # heavy tails
    if rng.random() < 0.5:
        mix = torch.randn(b, d, d, generator=g, device=dev) / np.sqrt(d) + torch.eye(d, device=dev)
        x = x @ mix
    return x


def sample(
    b: int, length: int, d_max: int, g: torch.Generator, rng: np.random.Generator, binary_share: float | None = None
) -> RawTasks:
    dev = g.device
    widths = log_uniform_int(b, 1, d_max, g, dev)
    x = base_features(b, length, d_max, g, rng)
    n_trees, depth = int(rng.integers(1, 9)), int(rng.integers(1, 7))
    n_inner, n_leaves = 2**depth - 1, 2**depth
    # Split features among each sequence's own features only.
    feat = (torch.rand(b, n_trees, n_inner, generator=g, device=dev) * widths[:, None, None]).long()
    rows = torch.randint(0, length, (b, n_trees, n_inner), generator=g, device=dev)
    flat = x.reshape(b, length * d_max)
    thresholds = flat.gather(1, (rows * d_max + feat).flatten(1)).view(b, n_trees, n_inner)
    node = torch.zeros(b, n_trees, length, dtype=torch.long, device=dev)
    for _ in range(depth):
        f = feat.gather(2, node)  # (b, T, L)
        value = x.gather(2, f.transpose(1, 2)).transpose(1, 2)  # (b, T, L): x[b, i, f[b, t, i]]
        node = 2 * node + 1 + (value > thresholds.gather(2, node)).long()
    leaf = node - n_inner  # (b, T, L) in 0..n_leaves-1
    leaf_scores = torch.randn(b, n_trees, n_leaves, MAX_CLASSES, generator=g, device=dev)
    idx = leaf[..., None].expand(-1, -1, -1, MAX_CLASSES)
    scores = leaf_scores.gather(2, idx).sum(1)  # (b, L, C)
    y = argmax_classes(scores, class_counts(b, g, dev, binary_share=binary_share), g)
    return RawTasks(x=x, y=y, feature_mask=width_mask(widths, d_max))
