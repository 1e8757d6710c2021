"""A scikit-learn classifier that learns in context with a meta-trained GPICL Transformer."""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from gpicl_sklearn.checkpoint import Checkpoint, load_checkpoint
from gpicl_sklearn.inputs import InputStats, draw_layout, fit_input_stats, standardize
from gpicl_sklearn.model import ContextCache, GPICLTransformer
from gpicl_sklearn.preprocessing import context_rows, draw_label_slots, encode_labels


class ContextSubsetWarning(UserWarning):
    """The training set is larger than the model's context: each member reads a subset."""


class GPICLClassifier(ClassifierMixin, BaseEstimator):
    r"""Classifier that learns in context with a meta-trained GPICL Transformer.

    ``fit`` runs no gradient descent. It stores the training rows as the *context* of a
    Transformer that was meta-trained (Kirsch et al., 2022, "General-Purpose In-Context
    Learning by Meta-Learning Transformers") to classify a query from a sequence of
    labelled examples of a task it has never seen; ``predict_proba`` then classifies all
    queries against that context in one forward pass.

    **Tokens.** The model reads a sequence of tokens
    :math:`t_i = [\tilde x_i;\ \mathrm{onehot}(y_{i-1})]` (no label in :math:`t_1`),
    :math:`\tilde x_i \in \mathbb{R}^{N_x}`, and its output at position :math:`i` is a
    distribution over :math:`C` label slots for :math:`y_i`. The context is
    :math:`n \le L - 1` training rows (:math:`L` = ``max_len`` of the checkpoint; the
    default checkpoint has :math:`N_x = 3072`, :math:`C = 10`, :math:`L - 1 = 99`). A
    query :math:`x_q` is the token :math:`[\tilde x_q;\ \mathrm{onehot}(y_n)]` at position
    :math:`n + 1`; it attends to the context and to itself only, so queries do not
    influence each other and the context is encoded once, in ``fit``.

    **Projection.** A table with :math:`d` features is standardised per feature,
    :math:`z = \mathrm{clip}((x - \mu) / \sigma, -3, 3) / r` with :math:`r` the
    root-mean-square of the clipped training values (see
    :class:`gpicl_sklearn.preprocessing.ClippedStandardizer`), and projected, :math:`\tilde x = A^\top z` with
    :math:`A \in \mathbb{R}^{d \times N_x}`, :math:`A_{jk} \sim \mathcal N(0, 1/d)`:
    the task augmentation of meta-training, so any table is just another unseen task.

    **Folding.** The model's input layer computes :math:`W \tilde x + b` with
    :math:`W \in \mathbb{R}^{d_{model} \times N_x}`. Since
    :math:`W A^\top z = M^\top z` with :math:`M = A W^\top \in \mathbb{R}^{d \times d_{model}}`,
    ``fit`` computes :math:`M` once and a row then costs :math:`O(d\, d_{model})`
    instead of :math:`O(d\, N_x)`; :math:`A` is never stored.

    **Label slots.** The :math:`k \le C` classes are mapped onto distinct slots by a random
    injection :math:`\pi` (meta-training permuted labels, so no slot is special). With
    logits :math:`\ell(x)`, the member's probabilities are the softmax over the used slots,
    mapped back to classes:
    :math:`p(c \mid x) = e^{\ell_{\pi(c)}(x)} / \sum_{c'} e^{\ell_{\pi(c')}(x)}`.

    **Ensemble.** Each of :math:`E` = ``n_estimators`` members draws its own
    :math:`A_e`, :math:`\pi_e` and context order, and
    :math:`\hat p(c \mid x) = \frac1E \sum_e p_e(c \mid x)`.

    **More rows than the context holds** (:math:`n > L - 1`): the rows are shuffled
    once and member :math:`e` reads the :math:`L - 1` consecutive rows starting at
    :math:`e (L - 1)`, wrapping around, so the members together read every row when
    ``n_estimators * (L - 1) >= n_samples``. ``fit`` issues a :class:`ContextSubsetWarning`
    saying how many rows were used.

    Parameters
    ----------
    checkpoint : str or path-like, default="default"
        Meta-trained weights: ``"default"`` (bundled with the package), a local checkpoint
        folder or ``model.safetensors`` file, or a Hugging Face Hub id ``"owner/name"``;
        see :func:`gpicl_sklearn.load_checkpoint`. Loaded in ``fit``.
    n_estimators : int, default=8
        Ensemble members (projections, label assignments and context orders).
    device : {"auto", "cpu", "cuda"} or torch.device, default="auto"
        Where the Transformer runs; ``"auto"`` picks CUDA when available.
    batch_size : int, default=256
        Queries per forward pass; bounds memory (about ``n_estimators * batch_size *
        4 * d_model`` floats). Every pass has exactly this many rows (the last one padded),
        so a row's prediction does not depend on which rows are predicted alongside it.
    random_state : int, RandomState instance or None, default=None
        Seeds every random draw of ``fit``; an int makes ``fit`` reproducible.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names seen in ``fit``, when ``X`` had string column names.

    Notes
    -----
    The Transformer runs in float32. Matrix-product kernels round differently for
    different shapes, so every forward pass has exactly ``batch_size`` query rows (the
    last chunk padded with zeros, which cost time but change nothing: queries do not
    attend to each other). A row's probabilities are then the same whichever rows share
    its ``predict_proba`` call; changing ``batch_size`` itself changes them by rounding
    only (~1e-7).

    A fitted estimator pickles without the model weights (it keeps only its own fitted
    arrays and re-reads ``checkpoint`` on first use), so it is small and, fitted on a
    GPU with ``device="auto"``, predicts on a CPU-only machine. It refuses to predict if
    the checkpoint's weights have changed since ``fit``.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from gpicl_sklearn import GPICLClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = GPICLClassifier(random_state=0).fit(X, y)  # doctest: +SKIP
    >>> clf.predict_proba(X[:2]).shape  # doctest: +SKIP
    (2, 3)
    """

    def __init__(self, checkpoint="default", n_estimators=8, device="auto", batch_size=256, random_state=None):
        self.checkpoint = checkpoint
        self.n_estimators = n_estimators
        self.device = device
        self.batch_size = batch_size
        self.random_state = random_state

    def fit(self, X, y) -> GPICLClassifier:
        """Encode the training rows as the context of every ensemble member.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Dense, finite numbers (sparse input: convert with ``X.toarray()``).
        y : array-like of shape (n_samples,)
            Class labels of any type; at most the checkpoint's number of label slots.

        Returns
        -------
        self
        """
        _resolve_device(self.device)  # a bad device fails here, before any work
        _check_positive_int(self.n_estimators, "n_estimators")
        _check_positive_int(self.batch_size, "batch_size")
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_all_finite="allow-nan")
        classes, y = encode_labels(y)
        checkpoint = load_checkpoint(self.checkpoint, shared=True)  # read-only: see _inference_model
        cfg = checkpoint.model.cfg
        if len(classes) > cfg.num_classes:
            raise ValueError(
                f"y has {len(classes)} classes, but checkpoint {str(self.checkpoint)!r} has "
                f"{cfg.num_classes} label slots, so it tells apart at most {cfg.num_classes} classes"
            )

        rng = np.random.default_rng(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        n_samples = X.shape[0]
        max_context = cfg.max_len - 1
        rows = context_rows(rng, n_samples, self.n_estimators, max_context)
        if n_samples > max_context:
            warnings.warn(
                _subset_message(n_samples, self.n_estimators, max_context), ContextSubsetWarning, stacklevel=2
            )
        slots = np.stack([draw_label_slots(rng, len(classes), cfg.num_classes) for _ in range(self.n_estimators)])
        context = torch.from_numpy(X[rows])  # (n_estimators, n_context, n_features), raw
        stats = fit_input_stats(context)  # float64, from each member's context rows only
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        weight_t = checkpoint.model.embed_x.weight.detach().T  # (input_dim, d_model)
        # One member at a time: a layout is (2 n_features, input_dim), large for wide tables.
        projection = np.stack(
            [
                (
                    draw_layout(stats.present[e : e + 1], cfg.input_dim, _layout(checkpoint), generator)[0] @ weight_t
                ).numpy()
                for e in range(self.n_estimators)
            ]
        )

        # Fitted state is numpy only (picklable, device-free); torch state lives in _encoded.
        self.classes_ = classes
        self._stats = {k: v.numpy() for k, v in vars(stats).items()}
        self._projection = projection  # M_e = P_e W^T, (n_estimators, 2 n_features, d_model)
        self._context_X = standardize(context, stats).float().numpy()  # (n_estimators, n_context, 2 n_features)
        self._context_y = np.take_along_axis(slots, y[rows], axis=1)  # slot labels, same order
        self._label_slots = slots  # (n_estimators, n_classes): slot of each class
        self._checkpoint_sha256 = checkpoint.sha256
        self._encoded = _Lazy()
        self._encoded_context(checkpoint)
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, averaged over the ensemble members.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite="allow-nan")
        enc = self._encoded_context()
        stats = InputStats(**{k: torch.from_numpy(v) for k, v in self._stats.items()})
        proba = np.empty((X.shape[0], len(self.classes_)))
        n_members = len(self._label_slots)
        chunk = np.zeros((n_members, self.batch_size, self._projection.shape[1]), dtype=np.float32)  # see Notes
        for start in range(0, X.shape[0], self.batch_size):
            raw = torch.from_numpy(X[start : start + self.batch_size])
            rows = standardize(raw[None].expand(n_members, -1, -1), stats).float().numpy()
            chunk[:, : len(raw)] = rows
            chunk[:, len(raw) :] = 0.0
            logits = enc.model.predict_logits(enc.cache, enc.embed(chunk))[:, : len(raw)]  # (E, Q, C)
            used = logits.gather(2, enc.label_slots[:, None, :].expand(-1, len(raw), -1))
            proba[start : start + len(raw)] = used.softmax(dim=-1, dtype=torch.float64).mean(dim=0).cpu().numpy()
        return proba

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row (``argmax`` of :meth:`predict_proba`)."""
        proba = self.predict_proba(X)  # first: it raises NotFittedError before fit
        return self.classes_[np.argmax(proba, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # a missing value gets an indicator column (gpicl_sklearn.inputs)
        return tags

    def __getstate__(self) -> dict:
        # Drop the torch state (model reference, device tensors): pickles stay small, hold
        # no weights, and load on machines without the fitting device.
        state = dict(super().__getstate__())
        if "_encoded" in state:
            state["_encoded"] = _Lazy()
        return state

    def _encoded_context(self, checkpoint: Checkpoint | None = None) -> _EncodedContext:
        """The torch state for the current ``device``, built from the fitted arrays once."""
        device = _resolve_device(self.device)
        enc = self._encoded.value
        if enc is not None and enc.device == device:
            return enc
        checkpoint = checkpoint or load_checkpoint(self.checkpoint, shared=True)
        if checkpoint.sha256 != self._checkpoint_sha256:
            raise ValueError(
                f"checkpoint {str(self.checkpoint)!r} holds different weights than when this "
                "estimator was fitted; fit it again"
            )
        model = _inference_model(checkpoint, device)
        enc = _EncodedContext(
            device=device,
            model=model,
            projection=torch.tensor(self._projection, device=device, dtype=torch.float32),
            bias=model.embed_x.bias.detach(),
            label_slots=torch.tensor(self._label_slots, device=device),
        )
        enc.cache = model.encode_context(enc.embed(self._context_X), torch.tensor(self._context_y, device=device))
        self._encoded.value = enc
        return enc


@dataclass
class _EncodedContext:
    device: torch.device
    model: GPICLTransformer
    projection: torch.Tensor  # (E, n_features, d_model)
    bias: torch.Tensor  # (d_model,)
    label_slots: torch.Tensor  # (E, n_classes)
    cache: ContextCache | None = None

    def embed(self, X: np.ndarray) -> torch.Tensor:
        """``embed_x(P_e^T z) = z M_e + b`` for each member's standardised rows ``(E, rows, 2 n_features)``."""
        # torch.tensor copies: fitted arrays may be read-only (e.g. joblib memory maps).
        return torch.tensor(X, device=self.device, dtype=self.projection.dtype) @ self.projection + self.bias


class _Lazy:
    """A slot whose contents may change while the estimator's ``__dict__`` does not."""

    def __init__(self):
        self.value: _EncodedContext | None = None


# The last model moved to an accelerator, shared by every estimator using the same weights
# and device: repeated fits (cross-validation, grid search) neither copy nor move the
# weights again. Never mutated once stored.
_DEVICE_MODEL: dict[tuple, GPICLTransformer] = {}


def _inference_model(checkpoint: Checkpoint, device: torch.device) -> GPICLTransformer:
    """The checkpoint's shared, read-only model on ``device`` (inference runs under no_grad)."""
    if device.type == "cpu":
        return checkpoint.model
    key = (checkpoint.sha256, device)
    if key not in _DEVICE_MODEL:
        _DEVICE_MODEL.clear()
        _DEVICE_MODEL[key] = copy.deepcopy(checkpoint.model).to(device)  # .to would move the shared model
    return _DEVICE_MODEL[key]


def _layout(checkpoint: Checkpoint) -> str:
    """How the checkpoint was trained to read features: ``"slots"`` or (the paper's) ``"projection"``."""
    return checkpoint.config.get("preprocessing", {}).get("layout", "projection")


def _resolve_device(device) -> torch.device:
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:<index>' or a torch.device, got {device!r}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was requested, but CUDA is not available here; use 'cpu' or 'auto'")
        if (resolved.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) are available")
    return resolved


def _check_positive_int(value, name: str) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _subset_message(n_samples: int, n_estimators: int, max_context: int) -> str:
    used = min(n_samples, n_estimators * max_context)
    message = (
        f"{n_samples} training rows exceed the model's context of {max_context} rows: the rows "
        f"are shuffled once and each of the {n_estimators} ensemble members reads the next "
        f"{max_context} of them (wrapping around), so {used} distinct rows are used"
    )
    if used < n_samples:
        needed = math.ceil(n_samples / max_context)
        message += f"; set n_estimators >= {needed} to use every row"
    return message + "."
