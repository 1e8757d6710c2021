r"""Numeric columns as normal scores: the second input view of the ensemble's members.

A heavy-tailed or skewed column (incomes, counts, amounts) standardised as it is has most
of its rows in a narrow band and a few far out, clipped at :math:`\pm 3`; the rows' order
along it is what a tree learner reads, and what the z-scores hide. The normal scores
:math:`\Phi^{-1}(\hat F_j(x_j))` (:math:`\hat F_j` the column's empirical distribution in
the training rows) keep that order and nothing else. Neither view wins on every table
(heavy-tailed ``wooldridge/loanapp`` is read better through normal scores, ``sklearn/digits``
and ``AER/CreditCard`` worse), so :class:`~gpicl_sklearn.GPICLClassifier` runs members on
both and weights them by how well each predicted its own context (``evidence_power``).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import QuantileTransformer
from sklearn.utils.validation import check_is_fitted


class NormalScores(TransformerMixin, BaseEstimator):
    r"""Map numeric columns to normal scores through their training quantiles.

    Column :math:`j` of :math:`X` becomes :math:`\Phi^{-1}(\hat F_j(x_j))`, with
    :math:`\hat F_j` interpolated between at most 1,000 quantiles of the training rows
    (:class:`sklearn.preprocessing.QuantileTransformer`, ``output_distribution="normal"``,
    bounded at about :math:`\pm 5.2`). ``NaN`` stays ``NaN`` (missing); the columns in
    ``skip`` (integer codes of categories, whose order means nothing) are left as they are.

    Parameters
    ----------
    skip : sequence of int, default=()
        Columns passed through unchanged.
    """

    def __init__(self, skip=()):
        self.skip = skip

    def fit(self, X, y=None) -> NormalScores:
        X = np.asarray(X, dtype=np.float64)
        self.columns_ = np.setdiff1d(np.arange(X.shape[1]), np.asarray(self.skip, dtype=int))
        self.quantiles_ = None
        if len(self.columns_):
            # QuantileTransformer clips every value within an absolute 1e-7 of the training
            # range's ends, so a column of values around 1e-9 (or 1,000 + changes of 1e-9) would
            # become one constant. The order is all that counts: centre and scale first, the
            # centre a training value ("lower" median: averaging two values can overflow).
            columns = X[:, self.columns_]
            self.center_ = np.nanquantile(_quiet_nan(columns), 0.5, axis=0, method="lower")
            spread = np.nanmax(_quiet_nan(np.abs(self._centred(columns))), axis=0)
            self.scale_ = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
            self.quantiles_ = QuantileTransformer(
                n_quantiles=min(1000, len(X)), output_distribution="normal", subsample=None
            ).fit(self._centred(columns) / self.scale_)
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self)
        out = np.array(X, dtype=np.float64)
        if self.quantiles_ is not None:
            columns = out[:, self.columns_]
            out[:, self.columns_] = self.quantiles_.transform(self._centred(columns) / self.scale_)
        return out

    def _centred(self, columns: np.ndarray) -> np.ndarray:
        # Halved first: the difference of two finite float64 values near +-1.8e308 can overflow.
        return columns * 0.5 - self.center_ * 0.5


def _quiet_nan(values: np.ndarray) -> np.ndarray:
    """``values`` with all-missing columns given one 0 so NumPy's nan-reductions do not warn."""
    empty = np.isnan(values).all(axis=0)
    if not empty.any():
        return values
    values = values.copy()
    values[0, empty] = 0.0
    return values
