"""Random MLPs as structural causal models (the family of TabPFN's prior, our own code).

A chunk of sequences shares a depth, a width and an activation; every sequence has its
own weights. A few causes ``h_0 ~ N(0, 1)`` (or uniform) flow through ``depth`` random sparse
layers ``h_{l+1} = act(h_l W_l + b_l) + noise``; every node of every layer is a variable
of the causal model. A sequence's features are ``d`` random nodes, its target one or
``k`` nodes of the last layer: cut into classes at random quantiles, or the argmax of ``k`` nodes.
"""

from __future__ import annotations

import numpy as np
import torch

from training.priors.common import (
    MAX_CLASSES,
    RawTasks,
    argmax_classes,
    class_counts,
    cut_into_classes,
    log_uniform_int,
    random_activation,
    uniform,
    width_mask,
)


def sample(
    b: int, length: int, d_max: int, g: torch.Generator, rng: np.random.Generator, binary_share: float | None = None
) -> RawTasks:
    dev = g.device
    depth = int(rng.integers(1, 5))
    width = max(64, -(-(d_max + MAX_CLASSES) // depth))  # enough nodes for d_max features and the targets
    # Few causes: every node depends on them, so features carry information on the target.
    causes = int(rng.integers(1, 17))
    h = torch.randn(b, length, causes, generator=g, device=dev)
    if rng.random() < 0.3:
        h = uniform((b, length, causes), -1.7, 1.7, g, dev)
    noise = uniform((b, 1, 1), -6.0, -1.0, g, dev).exp()  # 0.0025 .. 0.37
    keep = float(rng.uniform(0.2, 1.0))  # edge density of the random graph
    nodes = [h]
    for _ in range(depth):
        fan_in = h.shape[2]
        w = torch.randn(b, fan_in, width, generator=g, device=dev) / np.sqrt(keep * fan_in)
        w = w * (torch.rand(b, fan_in, width, generator=g, device=dev) < keep)
        bias = 0.5 * torch.randn(b, 1, width, generator=g, device=dev)
        h = random_activation(h @ w + bias, rng)
        h = h + noise * torch.randn(b, length, width, generator=g, device=dev)
        nodes.append(h)
    # The target comes from the last layer (downstream of everything, so related to the
    # features); features are any other nodes, causes of the target or its effects' kin.
    last = h[..., :MAX_CLASSES]
    nodes = torch.cat([*nodes[:-1], h[..., MAX_CLASSES:]], dim=2)  # (b, L, depth * width - C)
    order = torch.rand(b, nodes.shape[2], generator=g, device=dev).argsort(1)
    x = nodes.gather(2, order[:, None, :d_max].expand(-1, length, -1))
    targets = last
    k = class_counts(b, g, dev, binary_share=binary_share)
    if rng.random() < 0.5:
        y = cut_into_classes(targets[..., 0], k, g)
    else:
        y = argmax_classes(targets, k, g)
    widths = log_uniform_int(b, 1, d_max, g, dev)
    return RawTasks(x=x, y=y, feature_mask=width_mask(widths, d_max))
