r"""Meta-training on 3072-d tasks at the cost of d_model-wide inputs (K = infinity only).

For a fresh task the Transformer's first layer sees :math:`h = x A W^\top + b` with
:math:`A \sim \mathcal N(0, 1/N_{in})` of shape ``(N_in, N_x)`` and the layer's weight
:math:`W` (``d x N_x``). Given the sequence's inputs :math:`X` (``L x N_in``),

* :math:`X A \overset{d}{=} C Z` with :math:`C = \mathrm{chol}(X X^\top / N_{in})` and
  :math:`Z \sim \mathcal N(0, I)` of shape ``(L, N_x)`` (the Gram trick of
  :func:`training.tasks.gaussian_projection`), and
* :math:`Z W^\top \overset{d}{=} U R^\top` with :math:`R = \mathrm{chol}(W W^\top)` and
  :math:`U \sim \mathcal N(0, I)` of shape ``(L, d)``: the rows of :math:`Z W^\top` are
  independent :math:`\mathcal N(0, W W^\top)`.

So :math:`h \overset{d}{=} C U R^\top + b` for every :math:`W`: the expected loss is the
same function of the parameters, and the reparameterised gradient (through
:math:`R(W)`) is an unbiased estimate of its gradient, as the pathwise gradient through
:math:`Z` is. Only its variance differs. What it saves at ``N_x = 3072``: the
``(B, L, 3072)`` normal draws, the ``C Z`` product and the first layer's matmul with
its backward, about two thirds of the input traffic of a step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gpicl_sklearn.model import GPICLTransformer

# Relative jitter on W Wᵀ: keeps the Cholesky defined should W lose rank (it does not at
# initialisation: d = 256 rows of N_x = 3072 Gaussian entries), far below its scale.
_JITTER = 1e-6


def folded_embedding(layer: nn.Linear, chol: Tensor, u: Tensor) -> Tensor:
    """A sample of ``layer(x A)``: ``chol @ u @ chol(W Wᵀ)ᵀ + b``, ``(B, L, d)``.

    ``chol``: ``(B, L, L)`` from :func:`training.tasks.gram_cholesky`; ``u``: ``(B, L, d)``
    standard normal. ``chol(W Wᵀ)`` in float32 (outside autocast: Cholesky needs it); the
    two products under the caller's autocast, at the precision the unfolded first layer's
    matmul has (in float32 they ran as FFMA kernels, training/RUNS.md).
    """
    with torch.autocast(chol.device.type, enabled=False):
        w = layer.weight.float()
        cov = w @ w.T
        eye = torch.eye(cov.shape[0], device=cov.device)
        r, _ = torch.linalg.cholesky_ex(cov + _JITTER * cov.diagonal().mean() * eye)  # _ex: no host sync
    return chol @ (u @ r.T) + layer.bias


class FoldedTransformer(nn.Module):
    """``forward(chol, u, y)``: the wrapped Transformer on :func:`folded_embedding` inputs.

    Holds no parameters of its own, so the wrapped learner's state is the run's state.
    """

    def __init__(self, learner: GPICLTransformer):
        super().__init__()
        if not isinstance(learner, GPICLTransformer):
            raise ValueError(f"folded projections need the GPICL Transformer, got {type(learner).__name__}")
        self.learner = learner

    def forward(self, chol: Tensor, u: Tensor, y: Tensor) -> Tensor:
        return self.learner.forward_embedded(folded_embedding(self.learner.embed_x, chol, u), y)
