r"""The online updates of the paper's gradient-based baselines: a linear softmax classifier.

Kirsch et al. (2022, Table 2) compare the in-context learner with a linear classifier
trained by one optimiser step per example, in the order the examples arrive (**SGD**),
and with the same classifier started from a meta-learned initialisation (**MAML**).

With inputs :math:`x_i \in \mathbb R^D`, weights :math:`W \in \mathbb R^{D \times C}`,
bias :math:`b` and :math:`g_i = \mathrm{softmax}(\ell_i) - e_{y_i}` the gradient of the
cross-entropy with respect to the logits :math:`\ell_i = x_i^\top W + b`, example
:math:`i` is first *predicted* with the current weights and then *learned*:

* :func:`online_adam`: one Adam step on :math:`(x_i g_i^\top, g_i)` (the SGD baseline;
  the paper's best learning rate of its sweep is ``1e-3``).
* :func:`online_sgd`: one plain SGD step, :math:`W \leftarrow W - \eta\, x_i g_i^\top`,
  :math:`b \leftarrow b - \eta\, g_i`. Unrolled, the weights after :math:`i` steps are
  :math:`W_0 - \eta \sum_{j \le i} x_j g_j^\top`, so every prediction is a kernel sum

  .. math:: \ell_i = x_i^\top W_0 + b_0 - \eta \sum_{j < i} (x_i^\top x_j + 1)\, g_j ,

  which needs the ``L x L`` Gram matrix of a sequence instead of ``L`` copies of ``W``.
  It is differentiable in :math:`W_0, b_0, \eta`, which is how MAML meta-learns them
  (:mod:`training.online_sgd`).

The meta-learners built on them are in :mod:`training.online_sgd`, the scikit-learn
estimators in :mod:`benchmarks.online_classifiers`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from training.batch import check_batch


class OnlineResult(NamedTuple):
    """Output of :func:`online_sgd` and :func:`online_adam`."""

    logits: Tensor  # (B, n, C): prediction of example i before learning it
    weight: Tensor  # (B, D, C): weights after the last example
    bias: Tensor  # (B, C)


def _check_sequence(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor) -> None:
    if weight.shape[-2] != x.shape[-1]:
        raise ValueError(f"weight must have shape ([B,] {x.shape[-1]}, C), got {tuple(weight.shape)}")
    if bias.shape[-1] != weight.shape[-1]:
        raise ValueError(f"bias must have {weight.shape[-1]} entries (one per class), got {tuple(bias.shape)}")
    check_batch(x, y, x.shape[-1])


def online_sgd(
    x: Tensor, y: Tensor, weight: Tensor, bias: Tensor, lr: Tensor | float, *, block: int | None = None
) -> OnlineResult:
    r"""Predict, then take one plain SGD step, for every example of ``B`` sequences.

    Parameters
    ----------
    x : Tensor, shape (B, n, D)
    y : Tensor of int64, shape (B, n)
    weight : Tensor, shape (D, C) or (B, D, C)
        Initial weights :math:`W_0` (shared by the sequences, or one per sequence).
    bias : Tensor, shape (C,) or (B, C)
    lr : float or scalar Tensor
        Step size :math:`\eta`.
    block : int, optional
        Examples per block (default: the whole sequence). Within a block predictions use
        the kernel sum of the module docstring (a ``block x block`` Gram matrix); at a
        block's end the weights are updated explicitly. Any block size gives the same
        result; it only trades ``B * block^2`` memory against ``B * D * C``.

    Returns
    -------
    OnlineResult
        Differentiable in ``weight``, ``bias`` and ``lr``.
    """
    _check_sequence(x, y, weight, bias)
    n_classes = weight.shape[-1]
    block = x.shape[1] if block is None else block
    onehot = F.one_hot(y, n_classes).to(x.dtype)
    w, b = weight, bias
    logits = []
    for start in range(0, x.shape[1], block):
        xb, targets = x[:, start : start + block], onehot[:, start : start + block]
        pending = xb @ w + b.unsqueeze(-2)  # (B, T, C): logits under the block's first weights
        kernel = xb @ xb.transpose(1, 2) + 1  # x_i . x_j + 1: the bias is a constant feature
        grads = []
        for j in range(xb.shape[1]):
            logit = pending[:, j]
            logits.append(logit)
            grad = logit.softmax(-1) - targets[:, j]
            grads.append(grad)
            # Example j's step changes every later logit of the block by -lr K_ij g_j.
            pending = pending - lr * kernel[:, :, j, None] * grad[:, None, :]
        g = torch.stack(grads, dim=1)
        w = w - lr * xb.transpose(1, 2) @ g
        b = b - lr * g.sum(dim=1)
    batch = x.shape[0]
    return OnlineResult(torch.stack(logits, dim=1), w.expand(batch, *w.shape[-2:]), b.expand(batch, n_classes))


@torch.no_grad()
def online_adam(
    x: Tensor,
    y: Tensor,
    weight: Tensor,
    bias: Tensor,
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> OnlineResult:
    """Predict, then take one Adam step, for every example of ``B`` sequences at once.

    The update is exactly ``torch.optim.Adam`` (no weight decay) stepping a linear layer on
    the cross-entropy of one example at a time; each sequence has its own weights and
    moments. Shapes as in :func:`online_sgd`.
    """
    _check_sequence(x, y, weight, bias)
    batch, n_classes = x.shape[0], weight.shape[-1]
    beta1, beta2 = betas
    w = weight.expand(batch, *weight.shape[-2:]).clone()
    b = bias.expand(batch, n_classes).clone()
    params = [w, b]
    first = [torch.zeros_like(p) for p in params]
    second = [torch.zeros_like(p) for p in params]
    onehot = F.one_hot(y, n_classes).to(x.dtype)
    logits = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        logit = torch.bmm(xt[:, None], w)[:, 0] + b
        logits.append(logit)
        grad = logit.softmax(-1) - onehot[:, t]
        grads = [xt[:, :, None] * grad[:, None, :], grad]
        correction1, correction2 = 1 - beta1 ** (t + 1), 1 - beta2 ** (t + 1)
        for p, g, m, v in zip(params, grads, first, second, strict=True):
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            p.addcdiv_(m, v.sqrt().div_(math.sqrt(correction2)).add_(eps), value=-lr / correction1)
    return OnlineResult(torch.stack(logits, dim=1), w, b)
