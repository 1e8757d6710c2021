r"""The paper's gradient-based baselines: a linear softmax classifier learned online.

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

:class:`OnlineSGDClassifier` and :class:`MAMLClassifier` wrap them as scikit-learn
estimators; :func:`save_maml_init` / :func:`load_maml_init` store a meta-learned
initialisation as ``model.safetensors`` + ``config.json`` (never pickle).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor

from gpicl_sklearn.checkpoint import CheckpointError
from gpicl_sklearn.preprocessing import (
    draw_label_slots,
    draw_projection,
    encode_labels,
    fit_standardizer,
)

MAML_FORMAT_VERSION = 1
MAML_MODEL_TYPE = "gpicl-maml-init"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"

# Rows per block of online_sgd at fit time: within a block the Gram matrix (block^2) is
# used, between blocks the weights (D x C); this keeps both time and memory linear in n.
_FIT_BLOCK = 256


class OnlineResult(NamedTuple):
    """Output of :func:`online_sgd` and :func:`online_adam`."""

    logits: Tensor  # (B, n, C): prediction of example i before learning it
    weight: Tensor  # (B, D, C): weights after the last example
    bias: Tensor  # (B, C)


def _check_sequence(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor) -> None:
    if x.ndim != 3:
        raise ValueError(f"x must have shape (B, n, D), got {tuple(x.shape)}")
    if y.shape != x.shape[:2]:
        raise ValueError(f"y must have shape {tuple(x.shape[:2])} to match x, got {tuple(y.shape)}")
    if y.dtype != torch.long:
        raise ValueError(f"y must be int64 (long) class indices, got {y.dtype}")
    if weight.shape[-2] != x.shape[-1]:
        raise ValueError(f"weight must have shape ([B,] {x.shape[-1]}, C), got {tuple(weight.shape)}")
    if bias.shape[-1] != weight.shape[-1]:
        raise ValueError(f"bias must have {weight.shape[-1]} entries (one per class), got {tuple(bias.shape)}")


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
        for p, g, m, v in zip(params, grads, first, second):
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            p.addcdiv_(m, v.sqrt().div_(math.sqrt(correction2)).add_(eps), value=-lr / correction1)
    return OnlineResult(torch.stack(logits, dim=1), w, b)


# --- MAML initialisation checkpoints -------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MAMLInit:
    """A meta-learned initialisation of the online linear classifier.

    Attributes
    ----------
    weight : Tensor, shape (input_dim, num_classes)
        :math:`W_0`, float32.
    bias : Tensor, shape (num_classes,)
    lr : float
        The meta-learned step size of the plain SGD inner update.
    config : dict
        The parsed ``config.json``.
    sha256 : str
        Digest of ``model.safetensors``.
    """

    weight: Tensor
    bias: Tensor
    lr: float
    config: dict
    sha256: str

    @property
    def input_dim(self) -> int:
        return self.weight.shape[0]

    @property
    def num_classes(self) -> int:
        return self.weight.shape[1]


def _write_atomic(target: Path, data: bytes) -> None:
    """Write to a temporary file beside ``target``, then rename: no half-written files."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_maml_init(directory: str | os.PathLike, weight: Tensor, bias: Tensor, lr: float, *, training: dict) -> Path:
    """Write an initialisation that :func:`load_maml_init` and :class:`MAMLClassifier` read.

    Parameters
    ----------
    directory : path-like
        Created if missing; ``model.safetensors`` and ``config.json`` in it are replaced.
    weight : Tensor, shape (input_dim, num_classes)
    bias : Tensor, shape (num_classes,)
    lr : float
        Positive inner SGD step size.
    training : dict
        JSON-serialisable provenance (the run that produced the weights).
    """
    weight, bias = (
        weight.detach().to("cpu", torch.float32).contiguous(),
        bias.detach().to("cpu", torch.float32).contiguous(),
    )
    if weight.ndim != 2 or bias.shape != (weight.shape[1],):
        raise ValueError(
            f"weight must be (input_dim, C) and bias (C,), got {tuple(weight.shape)} and {tuple(bias.shape)}"
        )
    if not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    config = {
        "format_version": MAML_FORMAT_VERSION,
        "model_type": MAML_MODEL_TYPE,
        "architecture": {"input_dim": weight.shape[0], "num_classes": weight.shape[1]},
        "inner_update": {"rule": "sgd", "lr": float(lr)},
        "training": training,
    }
    try:
        config_text = json.dumps(config, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise ValueError(f"training must be JSON-serialisable: {e}") from e
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomic(
        directory / WEIGHTS_NAME, save_safetensors({"weight": weight, "bias": bias}, metadata={"format": "pt"})
    )
    _write_atomic(directory / CONFIG_NAME, config_text.encode())  # last: see gpicl_sklearn.checkpoint
    return directory


def load_maml_init(source: str | os.PathLike) -> MAMLInit:
    """Read a folder written by :func:`save_maml_init`.

    Raises
    ------
    CheckpointError
        A file is missing, unreadable, or does not describe a MAML initialisation.
    """
    directory = Path(source).expanduser()
    weights_path, config_path = directory / WEIGHTS_NAME, directory / CONFIG_NAME
    for path in (weights_path, config_path):
        if not path.is_file():
            raise CheckpointError(
                f"{path}: MAML initialisation file is missing (expected a folder written by save_maml_init)"
            )
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config_path}: not valid JSON: {e}") from e
    if not isinstance(config, dict) or config.get("model_type") != MAML_MODEL_TYPE:
        found = config.get("model_type") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{config_path}: model_type is {found!r}, expected {MAML_MODEL_TYPE!r}")
    if config.get("format_version") != MAML_FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path}: format_version {config.get('format_version')!r} is not supported "
            f"(this gpicl-sklearn reads {MAML_FORMAT_VERSION})"
        )
    try:
        arch, update = config["architecture"], config["inner_update"]
        shapes = {"weight": (int(arch["input_dim"]), int(arch["num_classes"])), "bias": (int(arch["num_classes"]),)}
        lr = float(update["lr"])
        rule = update["rule"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{config_path}: invalid 'architecture' or 'inner_update': {e!r}") from e
    if rule != "sgd" or not (math.isfinite(lr) and lr > 0):
        raise CheckpointError(f"{config_path}: inner_update must be plain 'sgd' with a positive lr, got {update!r}")
    data = weights_path.read_bytes()
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file (corrupt or truncated?): {e}") from e
    if set(tensors) != set(shapes):
        raise CheckpointError(f"{weights_path}: expected tensors {sorted(shapes)}, found {sorted(tensors)}")
    for name, shape in shapes.items():
        t = tensors[name]
        if tuple(t.shape) != shape or not t.is_floating_point() or not torch.isfinite(t).all():
            raise CheckpointError(
                f"{weights_path}: tensor {name!r} must be finite floats of shape {shape} "
                f"(from config.json), got {t.dtype} {tuple(t.shape)}"
            )
    return MAMLInit(tensors["weight"].float(), tensors["bias"].float(), lr, config, hashlib.sha256(data).hexdigest())


# --- scikit-learn estimators ---------------------------------------------------------------


def _check_positive_int(value, name: str) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class _OnlineLinearClassifier(ClassifierMixin, BaseEstimator):
    """Shared fit/predict of the online linear classifiers; subclasses choose the learner.

    ``fit`` standardises the features, lets :meth:`_learn` run the online updates and
    keeps the resulting linear model on the standardised features as ``coef_`` and
    ``intercept_``; prediction is ``softmax(z coef_^T + intercept_)``.
    """

    def fit(self, X, y):
        """Learn from the rows of ``X`` one at a time, in order, ``n_epochs`` times.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        _check_positive_int(self.n_epochs, "n_epochs")
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        classes, y = encode_labels(y)
        scaler = fit_standardizer(X)
        z = np.tile(scaler.transform(X), (self.n_epochs, 1))
        coef, intercept = self._learn(z, np.tile(y, self.n_epochs), len(classes))
        self.classes_ = classes
        self._scaler = scaler
        self.coef_, self.intercept_ = coef, intercept
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape ``(n_samples, n_classes)``, columns in the order of ``classes_``."""
        logits = self._logits(X)
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """The class of the largest logit of each row."""
        logits = self._logits(X)  # first: it raises NotFittedError before fit
        return self.classes_[np.argmax(logits, axis=1)]

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._scaler.transform(X) @ self.coef_.T + self.intercept_


class OnlineSGDClassifier(_OnlineLinearClassifier):
    r"""The paper's SGD baseline: a linear softmax classifier, one Adam step per example.

    ``fit`` standardises each feature, starts from zero weights and, for every training
    row in the order given, predicts it and then takes one Adam step on its
    cross-entropy (see :func:`online_adam`); with ``n_epochs > 1`` the rows are replayed
    in the same order. It is the online learner that Kirsch et al. (2022) compare the
    in-context learner with, not a tuned batch classifier: one pass at the paper's
    learning rate under-fits most tables.

    Parameters
    ----------
    learning_rate : float, default=1e-3
        Adam step size (the paper's best of its sweep, for 99 examples of 3072 features).
    n_epochs : int, default=1
        Passes over the training rows.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coef_ : ndarray of shape (n_classes, n_features)
        Weights on the standardised features, one row per class (two for binary
        problems: the model is a softmax over all classes).
    intercept_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        When ``X`` had string column names.

    Notes
    -----
    Zero initial weights make ``fit`` deterministic: the only other input is the row
    order, which is the data's. Runs in float64 on CPU.
    """

    def __init__(self, learning_rate=1e-3, n_epochs=1):
        self.learning_rate = learning_rate
        self.n_epochs = n_epochs

    def _check_params(self) -> None:
        lr = self.learning_rate
        if not isinstance(lr, numbers.Real) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"learning_rate must be a positive finite number, got {lr!r}")

    def _learn(self, z: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(z)[None]
        zeros_w, zeros_b = torch.zeros(z.shape[1], n_classes, dtype=x.dtype), torch.zeros(n_classes, dtype=x.dtype)
        result = online_adam(x, torch.from_numpy(y)[None], zeros_w, zeros_b, lr=float(self.learning_rate))
        return result.weight[0].T.numpy(), result.bias[0].numpy()


class MAMLClassifier(_OnlineLinearClassifier):
    r"""The online linear classifier started from a meta-learned (MAML) initialisation.

    The initialisation :math:`(W_0, b_0, \eta)` was meta-trained by ``python -m
    training.train --learner maml`` on inputs of width ``input_dim`` with ``C`` label
    slots, and exported with ``python -m training.online_sgd`` (:func:`save_maml_init`).

    ``fit`` maps a table onto that input space exactly as
    :class:`~gpicl_sklearn.GPICLClassifier` does: per-feature standardisation
    :math:`z`, then a random projection :math:`\tilde x = A^\top z` with
    :math:`A \in \mathbb R^{d \times \text{input\_dim}}`, :math:`A_{jk} \sim \mathcal N(0, 1/d)`
    (the task augmentation of meta-training), and the classes onto distinct random label
    slots. It then runs the inner update the initialisation was meta-trained for: for
    each row in order, predict, then one plain SGD step of size :math:`\eta` on the
    cross-entropy over all ``C`` slots (:func:`online_sgd`). The learned model is folded
    back onto the standardised features, ``coef_ = (A W)[:, slots]^T``, and predictions
    are the softmax over the used slots.

    Parameters
    ----------
    checkpoint : str or path-like
        Folder written by :func:`save_maml_init`; read in ``fit``.
    n_epochs : int, default=1
        Passes over the training rows.
    random_state : int, RandomState instance or None, default=None
        Seeds the projection and the label slots.

    Attributes
    ----------
    classes_, coef_, intercept_, n_features_in_, feature_names_in_
        As in :class:`OnlineSGDClassifier`.
    inner_lr_ : float
        The checkpoint's step size :math:`\eta`.

    Notes
    -----
    ``fit`` holds the projected rows, ``n_samples * n_epochs * input_dim`` float64.
    """

    def __init__(self, checkpoint, n_epochs=1, random_state=None):
        self.checkpoint = checkpoint
        self.n_epochs = n_epochs
        self.random_state = random_state

    def _check_params(self) -> None:
        if not isinstance(self.checkpoint, (str, os.PathLike)):
            raise ValueError(f"checkpoint must be the path of a MAML initialisation folder, got {self.checkpoint!r}")

    def _learn(self, z: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
        init = load_maml_init(self.checkpoint)
        if n_classes > init.num_classes:
            raise ValueError(
                f"y has {n_classes} classes, but the MAML initialisation {str(self.checkpoint)!r} "
                f"has {init.num_classes} label slots"
            )
        rng = np.random.default_rng(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        slots = draw_label_slots(rng, n_classes, init.num_classes)
        projection = draw_projection(rng, z.shape[1], init.input_dim).astype(np.float64)
        x = torch.from_numpy(z @ projection)[None]
        with torch.no_grad():
            result = online_sgd(
                x, torch.from_numpy(slots[y])[None], init.weight.double(), init.bias.double(), init.lr, block=_FIT_BLOCK
            )
        self.inner_lr_ = init.lr
        coef = projection @ result.weight[0].numpy()[:, slots]  # (n_features, n_classes)
        return coef.T, result.bias[0].numpy()[slots]
