r"""The paper's gradient-based baselines as scikit-learn estimators (for the benchmarks).

:class:`OnlineSGDClassifier` is the paper's SGD baseline, :class:`MAMLClassifier` the same
online linear classifier started from a meta-learned initialisation
(:mod:`training.maml_init`); the updates are :mod:`training.online_updates`.
"""

from __future__ import annotations

import math
import numbers
import os

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from gpicl_sklearn.preprocessing import (
    draw_label_slots,
    draw_projection,
    encode_labels,
    fit_standardizer,
)
from training.maml_init import load_maml_init
from training.online_updates import online_adam, online_sgd

# Rows per block of online_sgd at fit time: within a block the Gram matrix (block^2) is
# used, between blocks the weights (D x C); this keeps both time and memory linear in n.
_FIT_BLOCK = 256


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
    slots, and exported with ``python -m training.maml_init``.

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
        Folder written by :func:`training.maml_init.save_maml_init`; read in ``fit``.
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
