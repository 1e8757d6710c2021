"""Tables as they come: a DataFrame's columns as the float matrix that the model reads.

:class:`TableEncoder` has one job: turn every column of a table into numbers the way the
meta-training prior presents them (``training/priors/corruptions.py``):

* numbers (``float``, ``int``, nullable ``Int64``/``Float64``) stay as they are;
* booleans (``bool``, nullable ``boolean``) become ``0``/``1``;
* categories (``category``, ``object``, ``string``) become integer codes
  ``0..k-1`` (:attr:`TableEncoder.categories_` fixes the order; the estimator permutes
  the codes at random per ensemble member, as the prior does, see
  :func:`permute_codes`);
* missing values (``NaN``, ``None``, ``pd.NA``, ``NaT``) and categories not seen in
  ``fit`` become ``NaN``, which the model reads through a missing-value indicator
  (:mod:`gpicl_sklearn.inputs`).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

NUMERIC, BOOLEAN, CATEGORICAL = "numeric", "boolean", "categorical"


def is_dataframe(X) -> bool:
    """Whether ``X`` is a pandas DataFrame (pandas is imported only if it is)."""
    return hasattr(X, "dtypes") and hasattr(X, "columns") and hasattr(X, "iloc")


def _is_extension(column) -> bool:
    import pandas as pd

    return isinstance(column.dtype, pd.api.extensions.ExtensionDtype)


def _kind(column) -> str:
    import pandas as pd

    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return BOOLEAN
    if isinstance(dtype, pd.CategoricalDtype):
        return CATEGORICAL
    if pd.api.types.is_numeric_dtype(dtype):
        return NUMERIC
    return CATEGORICAL  # object, string, and anything else that is not a number


class TableEncoder(TransformerMixin, BaseEstimator):
    r"""Encode a DataFrame's columns as floats: codes for categories, ``NaN`` for missing.

    A column :math:`j` of kind

    * *numeric* maps :math:`x \mapsto x` (``pd.NA`` :math:`\mapsto` ``NaN``);
    * *boolean* maps ``False``/``True`` :math:`\mapsto 0/1`;
    * *categorical* with categories :math:`c_0, \dots, c_{k-1}` (the dtype's categories
      for ``pd.Categorical``, else the values seen in ``fit``, sorted when sortable) maps
      :math:`c_i \mapsto i`, and any value not among them :math:`\mapsto` ``NaN``.

    Parameters
    ----------
    None.

    Attributes
    ----------
    kinds_ : list of str
        ``"numeric"``, ``"boolean"`` or ``"categorical"`` per column.
    categories_ : dict of int to ndarray
        The categories of each categorical column, by column position; code ``i`` is
        ``categories_[j][i]``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        When the columns have string names.
    """

    def fit(self, X, y=None) -> TableEncoder:
        import pandas as pd

        if not is_dataframe(X):
            raise TypeError(f"TableEncoder encodes pandas DataFrames, got {type(X).__name__}")
        self.n_features_in_ = X.shape[1]
        if all(isinstance(c, str) for c in X.columns):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.kinds_ = [_kind(X.iloc[:, j]) for j in range(X.shape[1])]
        self.categories_ = {}
        for j, kind in enumerate(self.kinds_):
            if kind != CATEGORICAL:
                continue
            column = X.iloc[:, j]
            if isinstance(column.dtype, pd.CategoricalDtype):
                categories = np.asarray(column.cat.categories, dtype=object)
            else:
                categories = pd.unique(column[column.notna()].astype(object))
                try:
                    categories = np.asarray(sorted(categories), dtype=object)
                except TypeError:  # mixed types: the order of first appearance
                    categories = np.asarray(categories, dtype=object)
            self.categories_[j] = categories
        return self

    def transform(self, X) -> np.ndarray:
        """The columns of ``X`` as a float64 array ``(n_samples, n_features)``, ``NaN`` = missing."""
        import pandas as pd

        check_is_fitted(self)
        if not is_dataframe(X) or X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X must be a DataFrame with the {self.n_features_in_} columns seen in fit, "
                f"got {type(X).__name__} of shape {getattr(X, 'shape', None)}"
            )
        out = np.empty(X.shape, dtype=np.float64)
        for j, kind in enumerate(self.kinds_):
            column = X.iloc[:, j]
            if kind == CATEGORICAL:
                values = column.astype(object).where(column.notna(), None)
                codes = pd.Categorical(values, categories=self.categories_[j]).codes
                out[:, j] = np.where(codes >= 0, codes, np.nan)
            elif kind == BOOLEAN or _is_extension(column) or column.dtype == object:
                try:
                    out[:, j] = pd.to_numeric(column.astype(object).where(column.notna(), np.nan)).astype(np.float64)
                except (TypeError, ValueError) as err:  # a string in a column fitted as numbers
                    raise ValueError(f"column {X.columns[j]!r} was numeric in fit: {err}") from err
            else:
                out[:, j] = column.to_numpy(dtype=np.float64)
        return out

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self)
        if hasattr(self, "feature_names_in_"):
            return self.feature_names_in_.copy()
        return np.asarray([f"x{j}" for j in range(self.n_features_in_)], dtype=object)

    @property
    def categorical_columns(self) -> list[int]:
        """Positions of the categorical columns."""
        return sorted(self.categories_)


def draw_code_permutations(rng: np.random.Generator, categories: dict, n_members: int) -> dict:
    """For each categorical column ``j``: ``(n_members, k_j)`` int array, a random permutation per member.

    The prior presents a categorical column as integer codes in a random order; each
    ensemble member draws its own order, so averaging over members averages over orders.
    """
    return {j: np.stack([rng.permutation(len(c)) for _ in range(n_members)]) for j, c in categories.items()}


def permute_codes(X: np.ndarray, permutations: dict) -> np.ndarray:
    """Member ``e`` reads code ``i`` of categorical column ``j`` as ``permutations[j][e, i]``.

    ``X``: ``(n_members, n, d)`` codes (a broadcast view is fine: it is not written to);
    returns an array of the same shape (``X`` itself when there is nothing to permute).
    Missing codes (``NaN``) stay missing; the other columns are unchanged.
    """
    if not permutations:
        return X
    out = np.array(X, dtype=np.float64)  # a writable copy
    for j, perm in permutations.items():
        codes = out[:, :, j]
        valid = ~np.isnan(codes)
        idx = np.where(valid, codes, 0).astype(np.int64)
        out[:, :, j] = np.where(valid, np.take_along_axis(perm, idx, axis=1), np.nan)
    return out
