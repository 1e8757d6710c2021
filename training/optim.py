"""Meta-optimisers: Adam (configurable epsilon) and the sign of momentum (paper Sec. 4.4).

In the loss plateau at the start of meta-training the gradients are tiny; Adam's
epsilon then dominates its denominator and the update stalls. Following the sign of an
exponential moving average of the gradient makes every step the same size whatever the
gradient's scale (paper Intervention 2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

OPTIMIZERS = ("adam", "sign_momentum")
LR_SCHEDULES = ("constant", "cosine", "wsd")


class SignMomentum(torch.optim.Optimizer):
    r"""``m <- beta m + (1 - beta) g``;  ``theta <- theta - lr * sign(m)``."""

    def __init__(self, params, lr: float | Tensor = 1e-3, beta: float = 0.9):
        super().__init__(params, {"lr": lr, "beta": beta})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            moms = []
            for p in params:
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                moms.append(state["momentum"])
            grads = [p.grad for p in params]
            torch._foreach_lerp_(moms, grads, 1 - group["beta"])
            signs = torch._foreach_sign(moms)
            lr = group["lr"]
            if isinstance(lr, Tensor):  # a device tensor keeps the step capturable
                torch._foreach_mul_(signs, lr)
                torch._foreach_sub_(params, signs)
            else:
                torch._foreach_add_(params, signs, alpha=-lr)


def make_optimizer(
    name: str, params, *, lr: float, eps: float, betas: tuple[float, float], capturable: bool
) -> torch.optim.Optimizer:
    """``capturable``: keep all state (and the learning rate) on the device for CUDA graphs."""
    lr_value: float | Tensor = torch.tensor(lr, device="cuda") if capturable else lr
    if name == "adam":
        fused = capturable  # fused Adam is the capturable fast path on CUDA
        return torch.optim.Adam(params, lr=lr_value, betas=betas, eps=eps, fused=fused, capturable=capturable)
    if name == "sign_momentum":
        return SignMomentum(params, lr=lr_value, beta=betas[0])
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def lr_at(step: int, *, base: float, schedule: str, total: int, warmup: int, min_ratio: float, decay: int = 0) -> float:
    """Linear warm-up, then one of

    * ``constant``: ``base``;
    * ``cosine``: cosine decay from ``base`` to ``min_ratio * base`` at ``total``;
    * ``wsd`` (warm-up, stable, decay): ``base`` until ``total - decay``, then cosine decay
      to ``min_ratio * base`` over the last ``decay`` steps. The decay phase can be
      scheduled when a resumed run's length is known.
    """
    if schedule not in LR_SCHEDULES:  # checked first: not only after warm-up
        raise ValueError(f"unknown lr schedule {schedule!r}; expected one of {LR_SCHEDULES}")
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    start = warmup if schedule == "cosine" else max(warmup, total - decay)
    t = min(1.0, max(0.0, (step - start) / max(1, total - start)))
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
