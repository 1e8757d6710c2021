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
            self.quantiles_ = QuantileTransformer(
                n_quantiles=min(1000, len(X)), output_distribution="normal", subsample=None
            ).fit(X[:, self.columns_])
        return self

    def transform(self, X) -> np.ndarray:
        check_is_fitted(self)
        out = np.array(X, dtype=np.float64)
        if self.quantiles_ is not None:
            out[:, self.columns_] = self.quantiles_.transform(out[:, self.columns_])
        return out
