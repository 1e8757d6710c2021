r"""Gradient-descent learners with the meta-learners' interface: the paper's SGD and MAML.

Both are a linear softmax classifier over the (projected) inputs that, at every position
``i`` of a sequence, predicts ``y_i`` with its current weights and then takes one
optimiser step on ``(x_i, y_i)``; see :mod:`training.online_updates` for the updates.

* :class:`OnlineSGDLearner` (registered as ``"maml"`` in :mod:`training.learners`): plain
  SGD whose initial weights :math:`W_0, b_0` and step size :math:`\eta = e^{\lambda}` are
  meta-parameters. Its forward pass is differentiable through every inner step, so
  ``python -m training.train --learner maml`` meta-trains them with the paper's objective
  (cross-entropy of every prediction of every prefix, Eq. 2), i.e. MAML with one online
  SGD step per example. We chose plain SGD with a learned step size for the inner update
  (rather than Adam) because its unrolled form is a kernel sum over the sequence: memory is
  ``O(B L^2 + B L C)`` instead of ``O(B L D C)`` for ``L`` copies of the weights.
* :class:`OnlineAdamLearner`: the SGD baseline, one Adam step per example from zero
  weights at a fixed learning rate; it has no meta-parameters and is only evaluated.

A meta-trained MAML run is exported as files by :mod:`training.maml_init`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from training.batch import check_batch
from training.online_updates import online_adam, online_sgd


@dataclass(frozen=True)
class OnlineSGDConfig:
    """MAML's online linear learner; ``inner_lr`` is the *initial* (meta-learned) step size."""

    input_dim: int = 3072
    num_classes: int = 10
    inner_lr: float = 1e-3

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"OnlineSGDConfig.{f.name} must be a positive int, got {value!r}")
        if not (isinstance(self.inner_lr, (int, float)) and math.isfinite(self.inner_lr) and self.inner_lr > 0):
            raise ValueError(f"OnlineSGDConfig.inner_lr must be a positive number, got {self.inner_lr!r}")


class OnlineSGDLearner(nn.Module):
    r"""MAML's learner: predict ``y_i``, then one SGD step on ``(x_i, y_i)``, for every ``i``.

    Meta-parameters: ``weight`` :math:`W_0` (``input_dim x C``),
    ``bias`` :math:`b_0` and ``log_lr`` :math:`\lambda` with inner step :math:`\eta = e^\lambda`
    (the log keeps it positive). The forward pass runs in float32 even under autocast:
    the inner loop accumulates ``L`` steps, which bfloat16 would round away.
    """

    def __init__(self, cfg: OnlineSGDConfig):
        super().__init__()
        self.cfg = cfg
        # nn.Linear's initialisation, U(-1/sqrt(D), 1/sqrt(D)); meta-training then moves it.
        bound = 1 / math.sqrt(cfg.input_dim)
        self.weight = nn.Parameter(torch.empty(cfg.input_dim, cfg.num_classes).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(cfg.num_classes).uniform_(-bound, bound))
        self.log_lr = nn.Parameter(torch.tensor(math.log(cfg.inner_lr)))

    @property
    def lr(self) -> float:
        """The current inner step size."""
        return self.log_lr.exp().item()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        check_batch(x, y, self.cfg.input_dim)
        with torch.autocast(x.device.type, enabled=False):
            return online_sgd(x.float(), y, self.weight, self.bias, self.log_lr.exp()).logits


class OnlineAdamLearner(nn.Module):
    """The SGD baseline: zero initial weights, one Adam step (``lr``) per example, no meta-parameters."""

    def __init__(self, num_classes: int = 10, lr: float = 1e-3):
        super().__init__()
        self.num_classes, self.lr = num_classes, lr

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        zeros_w = x.new_zeros(x.shape[-1], self.num_classes, dtype=torch.float32)
        return online_adam(x.float(), y, zeros_w, zeros_w.new_zeros(self.num_classes), lr=self.lr).logits
