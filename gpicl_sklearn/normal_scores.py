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
from scipy.special import ndtri
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

# Values within this distance of the training range's ends map to its ends, and the scores
# are bounded at ndtri(BOUND) (about -5.2) and its negative: QuantileTransformer's rule.
BOUND = 1e-7


class NormalScores(TransformerMixin, BaseEstimator):
    r"""Map numeric columns to normal scores through their training quantiles.

    Column :math:`j` of :math:`X` becomes :math:`\Phi^{-1}(\hat F_j(x_j))`, with
    :math:`\hat F_j` interpolated between at most 1,000 quantiles of the training rows
    (the rule of :class:`sklearn.preprocessing.QuantileTransformer` with
    ``output_distribution="normal"``, bounded at about :math:`\pm 5.2`, computed for all
    columns at once: its per-column inverse normal costs seconds on wide inputs). ``NaN``
    stays ``NaN`` (missing); the columns in ``skip`` (integer codes of categories, whose
    order means nothing) are left as they are.

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
            # The rule clips every value within an absolute BOUND = 1e-7 of the training
            # range's ends, so a column of values around 1e-9 (or 1,000 + changes of 1e-9) would
            # become one constant. The order is all that counts: centre and scale first, the
            # centre a training value ("lower" median: averaging two values can overflow).
            columns = X[:, self.columns_]
            self.center_ = np.nanquantile(_quiet_nan(columns), 0.5, axis=0, method="lower")
            spread = np.nanmax(_quiet_nan(np.abs(self._centred(columns))), axis=0)
            self.scale_ = np.where(np.isfinite(spread) & (spread > 0), spread, 1.0)
            self.references_ = np.linspace(0.0, 1.0, min(1000, len(X)))
            self.quantiles_ = np.nanpercentile(
                _quiet_nan(self._centred(columns) / self.scale_), 100 * self.references_, axis=0
            )  # (n_quantiles, n_columns)
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self)
        out = np.array(X, dtype=np.float64)
        if self.quantiles_ is not None:
            out[:, self.columns_] = self._scores(self._centred(out[:, self.columns_]) / self.scale_)
        return out

    def _scores(self, z: np.ndarray) -> np.ndarray:
        r = self.references_
        u = np.empty_like(z)
        for j, q in enumerate(self.quantiles_.T):
            # The mean of interpolating up and down: a value repeated in the training rows
            # gets the middle of its quantiles, not one end.
            u[:, j] = 0.5 * (np.interp(z[:, j], q, r) - np.interp(-z[:, j], -q[::-1], -r[::-1]))
        with np.errstate(invalid="ignore"):  # NaN compares False and stays NaN
            u[z + BOUND > self.quantiles_[-1]] = 1.0
            u[z - BOUND < self.quantiles_[0]] = 0.0
        return np.clip(ndtri(u), ndtri(BOUND - np.spacing(1)), ndtri(1 - (BOUND - np.spacing(1))))

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
