"""The meta-learners compared in Kirsch et al. (2022), all with the Transformer's interface.

Every learner is an ``nn.Module`` with ``forward(x, y) -> logits`` where ``x`` is
``(B, L, input_dim)`` float, ``y`` is ``(B, L)`` long and the logits are
``(B, L, num_classes)``. Position ``i`` predicts ``y_i`` from ``x_1..x_i`` and
``y_1..y_{i-1}``: each step reads the token ``t_i = concat(x_i, onehot(y_{i-1}))``
(zeros instead of a label at the first step).

==============  ======================================  ==========================
name            model                                   state that predicts y_i
==============  ======================================  ==========================
``transformer`` :class:`gpicl_sklearn.model.GPICLTransformer`  every past token (KV)
``lstm``        :class:`LSTMLearner`                    ``2 * hidden_size``
``oplstm``      :class:`OuterProductLSTMLearner`        ``2 * hidden + key * value``
``mlp``         :class:`MLPLearner`                     none (current token only)
``vsml``        :class:`VSMLLearner`                    ``2 * input_dim * C * state``
``maml``        :class:`~training.online_sgd.OnlineSGDLearner`  weights after online SGD
==============  ======================================  ==========================

Each learner keeps its frozen config dataclass in ``.cfg`` so :func:`learner_config`
can record it and :func:`build_learner` can rebuild the module from that record.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gpicl_sklearn.model import GPICLConfig, GPICLTransformer
from training.batch import check_batch
from training.online_sgd import OnlineSGDConfig, OnlineSGDLearner


def _check_positive_ints(cfg: object) -> None:
    """Every field of the config dataclasses below is a size: a positive int."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{type(cfg).__name__}.{f.name} must be a positive int, got {value!r}")


def _tokens(x: Tensor, y: Tensor, input_dim: int, num_classes: int) -> Tensor:
    """``concat(x_i, onehot(y_{i-1}))`` for every position, ``(B, L, input_dim + C)``."""
    check_batch(x, y, input_dim)
    prev = F.one_hot(y[:, :-1], num_classes).to(x.dtype)
    prev = F.pad(prev, (0, 0, 1, 0))  # no label before the first example
    return torch.cat([x, prev], dim=-1)


# --- LSTM ----------------------------------------------------------------------------------

# The width whose input statistics the LSTM learners read at any input width (below).
LSTM_INPUT_WIDTH = 64


def _lstm_tokens(x: Tensor, y: Tensor, input_dim: int, num_classes: int) -> Tensor:
    r"""``concat(x_i \sqrt{64 / D}, onehot(y_{i-1}))``: :func:`_tokens` with ``x`` rescaled.

    A gate's pre-activation under ``nn.LSTM``'s default initialisation has variance
    :math:`\lVert t_i \rVert^2 / (3H)`; with ``D`` projected features of unit variance
    that grows with ``D``, and the label's one-hot, of norm 1, is a ``1 / \sqrt D`` part of
    the token. Rescaled, ``x`` has the norm of a 64-feature input at any ``D``: the width at
    which both LSTMs were seen to leave the loss plateau. At 3072-d the outer-product LSTM
    left it by 2,000 steps this way and not in 14,500 without; ``x / \sqrt D`` (norm 1) kept
    the plain LSTM on it (``training/RUNS.md``).
    """
    return _tokens(x * math.sqrt(LSTM_INPUT_WIDTH / input_dim), y, input_dim, num_classes)


@dataclass(frozen=True)
class LSTMConfig:
    """A plain LSTM meta-learner (paper A.3); ``hidden_size=256`` is our choice."""

    input_dim: int = 3072
    num_classes: int = 10
    hidden_size: int = 256
    num_layers: int = 1

    def __post_init__(self) -> None:
        _check_positive_ints(self)


class LSTMLearner(nn.Module):
    """``h_i = LSTM(t_i, h_{i-1})``, ``logits_i = W h_i + b``, tokens as :func:`_lstm_tokens`."""

    def __init__(self, cfg: LSTMConfig):
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(cfg.input_dim + cfg.num_classes, cfg.hidden_size, cfg.num_layers, batch_first=True)
        self.head = nn.Linear(cfg.hidden_size, cfg.num_classes)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h, _ = self.lstm(_lstm_tokens(x, y, self.cfg.input_dim, self.cfg.num_classes))
        return self.head(h)


# --- Outer-product LSTM --------------------------------------------------------------------


@dataclass(frozen=True)
class OuterProductLSTMConfig:
    """An LSTM with a ``key_size x value_size`` fast-weight memory (paper A.3)."""

    input_dim: int = 3072
    num_classes: int = 10
    hidden_size: int = 256
    key_size: int = 64
    value_size: int = 64

    def __post_init__(self) -> None:
        _check_positive_ints(self)


class OuterProductLSTMLearner(nn.Module):
    r"""An LSTM whose state also holds a fast-weight matrix written by outer products.

    With LSTM output :math:`h_i`, learned unit-norm key and query
    :math:`k_i, q_i \in \mathbb R^{d_k}`, value :math:`v_i \in \mathbb R^{d_v}` and write
    strength :math:`\beta_i = \sigma(w_\beta^\top h_i)`, the fast weights and their read are

    .. math:: W_i = W_{i-1} + \beta_i\, k_i v_i^\top, \quad W_0 = 0, \qquad
              r_i = W_i^\top q_i, \qquad \text{logits}_i = U [h_i; r_i] + b .

    :math:`W_i` is never materialised: :math:`r_i = \sum_{j \le i} \beta_j (q_i^\top k_j) v_j`
    is the same quantity computed for all positions at once with a causal mask, which costs
    ``O(L^2 (d_k + d_v))`` per sequence instead of ``O(L d_k d_v)`` of sequential memory.
    The memory is written from and read into the output path; the LSTM itself runs as one
    fused ``nn.LSTM`` call over the tokens of :func:`_lstm_tokens`.
    """

    def __init__(self, cfg: OuterProductLSTMConfig):
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(cfg.input_dim + cfg.num_classes, cfg.hidden_size, batch_first=True)
        self.kqvb = nn.Linear(cfg.hidden_size, 2 * cfg.key_size + cfg.value_size + 1)
        self.head = nn.Linear(cfg.hidden_size + cfg.value_size, cfg.num_classes)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h, _ = self.lstm(_lstm_tokens(x, y, self.cfg.input_dim, self.cfg.num_classes))
        dk, dv = self.cfg.key_size, self.cfg.value_size
        k, q, v, beta = self.kqvb(h).split([dk, dk, dv, 1], dim=-1)
        # Unit-norm keys/queries keep every read bounded by the sum of written values.
        k, q = F.normalize(k, dim=-1), F.normalize(q, dim=-1)
        length = h.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=h.device).tril()
        scores = (q @ k.transpose(1, 2)).masked_fill(~causal, 0.0)  # (B, L, L): q_i . k_j, j <= i
        read = scores @ (torch.sigmoid(beta) * v)
        return self.head(torch.cat([h, read], dim=-1))


# --- MLP -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MLPConfig:
    """A feed-forward network applied to each token separately (paper Fig. 2a)."""

    input_dim: int = 3072
    num_classes: int = 10
    hidden_size: int = 256
    num_hidden_layers: int = 2

    def __post_init__(self) -> None:
        _check_positive_ints(self)


class MLPLearner(nn.Module):
    """``logits_i = MLP(t_i)``: no memory of earlier tokens.

    It can memorise a fixed set of tasks in its weights but cannot learn in context,
    which makes it the control against which in-context learning is measured.
    """

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        widths = [cfg.input_dim + cfg.num_classes] + [cfg.hidden_size] * cfg.num_hidden_layers
        layers: list[nn.Module] = []
        for w_in, w_out in itertools.pairwise(widths):
            layers += [nn.Linear(w_in, w_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], cfg.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.net(_tokens(x, y, self.cfg.input_dim, self.cfg.num_classes))


# --- VSML ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VSMLConfig:
    """Variable Shared Meta Learning (Kirsch & Schmidhuber, 2020) with one dense layer."""

    input_dim: int = 3072
    num_classes: int = 10
    state_size: int = 16  # per-weight LSTM state

    def __post_init__(self) -> None:
        _check_positive_ints(self)


class VSMLLearner(nn.Module):
    r"""A dense layer ``input_dim -> num_classes`` whose every weight is a tiny LSTM.

    The LSTM at weight :math:`(j, c)` has state :math:`s_{jc} \in \mathbb R^N`; all
    ``input_dim * num_classes`` LSTMs share one set of parameters. At step :math:`i` each
    receives the forward message :math:`x_{ij}` and the backward message
    :math:`\mathrm{onehot}(y_{i-1})_c` (the label feedback of its class, zero at the first
    step), then the layer outputs

    .. math:: \text{logits}_{ic} = \frac{1}{\sqrt{D}} \sum_{j=1}^{D} w^\top h_{ijc} + b .

    The :math:`1/\sqrt{D}` keeps the logits of order one at any input width ``D``.

    The LSTMs step through the sequence as a loop of ``LSTMCell`` calls, each over all
    ``B * D * C`` of them at once. Under a CUDA graph (``--cuda-graph true``) the loop's
    launches cost nothing, and on one H100 at ``D=3072``, batch 8, it makes 27.3 steps/s in
    13 GB, where one fused ``nn.LSTM`` call over the whole sequence (cuDNN, 245,760 sequences
    of state 16) made 3.7 steps/s in 39 GB (``training/RUNS.md``).

    Cost: time and activation memory are ``O(B L D C N)``; with autograd the memory per
    sequence is roughly ``L * D * C * 12 N`` floats (gates and states kept per step), i.e.
    about 2.4 GB for ``L=100, D=3072, C=10, N=16``. Train it on small ``D`` (a random
    projection of the inputs), short sequences or small batches.
    """

    def __init__(self, cfg: VSMLConfig):
        super().__init__()
        self.cfg = cfg
        self.cell = nn.LSTMCell(2, cfg.state_size)  # inputs: forward and backward message
        self.out = nn.Linear(cfg.state_size, 1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        d, c, n = self.cfg.input_dim, self.cfg.num_classes, self.cfg.state_size
        tokens = _tokens(x, y, d, c)
        batch, length = y.shape
        fwd, bwd = tokens[..., :d], tokens[..., d:]  # x_i and onehot(y_{i-1})
        h = x.new_zeros(batch * d * c, n)
        s = x.new_zeros(batch * d * c, n)
        logits = []
        for i in range(length):
            msg = torch.stack([fwd[:, i, :, None].expand(batch, d, c), bwd[:, i, None, :].expand(batch, d, c)], dim=-1)
            h, s = self.cell(msg.reshape(batch * d * c, 2), (h, s))
            summed = (h.view(batch, d, c, n) @ self.out.weight[0]).sum(dim=1)  # (B, C)
            logits.append(summed / math.sqrt(d) + self.out.bias)
        return torch.stack(logits, dim=1)


# --- registry ------------------------------------------------------------------------------

LEARNERS: dict[str, Callable[..., nn.Module]] = {
    "transformer": GPICLTransformer,
    "lstm": LSTMLearner,
    "oplstm": OuterProductLSTMLearner,
    "mlp": MLPLearner,
    "vsml": VSMLLearner,
    "maml": OnlineSGDLearner,
}

CONFIGS: dict[str, type] = {
    "transformer": GPICLConfig,
    "lstm": LSTMConfig,
    "oplstm": OuterProductLSTMConfig,
    "mlp": MLPConfig,
    "vsml": VSMLConfig,
    "maml": OnlineSGDConfig,
}


def build_learner(name: str, input_dim: int, num_classes: int, **kwargs) -> nn.Module:
    """A fresh learner ``name`` (see :data:`LEARNERS`); ``kwargs`` are its config fields.

    Raises
    ------
    ValueError
        For an unknown name or a keyword that is not a field of that learner's config.
    """
    if name not in LEARNERS:
        raise ValueError(f"unknown learner {name!r}; expected one of {sorted(LEARNERS)}")
    config_cls = CONFIGS[name]
    allowed = {f.name for f in fields(config_cls)} - {"input_dim", "num_classes"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise ValueError(f"unknown {name!r} options {sorted(unknown)}; expected some of {sorted(allowed)}")
    return LEARNERS[name](config_cls(input_dim=input_dim, num_classes=num_classes, **kwargs))


def learner_config(module: nn.Module) -> dict:
    """``{"name": ..., **config}``, so that ``build_learner(**learner_config(m))`` rebuilds ``m``."""
    for name, cls in LEARNERS.items():
        if type(module) is cls:
            return {"name": name, **asdict(module.cfg)}
    raise ValueError(f"{type(module).__name__} is not a registered learner ({sorted(LEARNERS)})")
