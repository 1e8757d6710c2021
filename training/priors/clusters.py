"""Gaussian-mixture clusters: each class a Gaussian with its own centre and spread.

Centres ``mu_c ~ N(0, s^2 I)`` with a separation ``s`` drawn per sequence (from heavily
overlapping to well separated), class proportions random, and the within-class noise a
shared random linear map of ``N(0, 1)`` scaled per class (correlated, anisotropic
clusters).
"""

from __future__ import annotations

import numpy as np
import torch

from training.priors.common import (
    MAX_CLASSES,
    RawTasks,
    class_counts,
    class_proportions,
    log_uniform_int,
    uniform,
    width_mask,
)


def sample(
    b: int, length: int, d_max: int, g: torch.Generator, rng: np.random.Generator, binary_share: float | None = None
) -> RawTasks:
    dev = g.device
    widths = log_uniform_int(b, 1, d_max, g, dev)
    k = class_counts(b, g, dev, binary_share=binary_share)
    cum = class_proportions(k, g).cumsum(1)
    u = torch.rand(b, length, 1, generator=g, device=dev)
    y = (u > cum[:, None, :-1]).sum(-1)  # (b, L) in 0..k-1
    # Separation relative to the noise: per-feature offsets of s make d features together
    # separate classes by ~ s sqrt(d); scale s down with the width so wide tables stay hard.
    sep = uniform((b, 1, 1), np.log(0.1), np.log(2.0), g, dev).exp() / widths.float().sqrt()[:, None, None] ** 0.5
    centres = sep * torch.randn(b, MAX_CLASSES, d_max, generator=g, device=dev)
    spread = uniform((b, MAX_CLASSES, 1), -0.7, 0.7, g, dev).exp()
    noise = torch.randn(b, length, d_max, generator=g, device=dev)
    if rng.random() < 0.5:
        mix = torch.randn(b, d_max, d_max, generator=g, device=dev) / np.sqrt(d_max) + torch.eye(d_max, device=dev)
        noise = noise @ mix
    idx = y[..., None].expand(-1, -1, d_max)
    x = centres.gather(1, idx) + spread.gather(1, y[..., None]) * noise
    return RawTasks(x=x, y=y, feature_mask=width_mask(widths, d_max))
