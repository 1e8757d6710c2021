"""Labels and contexts of the ensemble members, one step per function.

:class:`~gpicl_sklearn.GPICLClassifier` (whose inputs go through :mod:`gpicl_sklearn.inputs`,
:mod:`gpicl_sklearn.layouts` and, for DataFrames, :mod:`gpicl_sklearn.table_encoding`)
prepares each of its ensemble members with:

1. :func:`encode_labels`: the classes and ``y`` as codes.
2. :func:`draw_output_code` (:func:`draw_label_slots` for at most as many classes as
   slots): each member's label slot per class; :func:`members_for_classes` says how many
   members an output code needs.
3. :func:`context_rows`: which training rows form each member's context, in which order.

:class:`ClippedStandardizer` and :func:`draw_projection` are the previous (whole-training-set)
normalisation and projection, kept for the benchmarks (``online_classifiers.py``).

All draws come from one :class:`numpy.random.Generator`, so ``random_state`` fixes them.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import LabelEncoder, StandardScaler
from sklearn.utils.multiclass import check_classification_targets


def encode_labels(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, codes)``: the sorted class labels (any type) and ``y`` as ``0..k-1``.

    Raises ``ValueError`` for regression targets or a single class.
    """
    check_classification_targets(y)
    encoder = LabelEncoder().fit(y)
    if len(encoder.classes_) < 2:
        raise ValueError(f"y has 1 class ({encoder.classes_.tolist()[0]!r}); a classifier needs at least 2 classes")
    return encoder.classes_, encoder.transform(y)


def fit_standardizer(X: np.ndarray) -> StandardScaler:
    """Per-feature standardisation ``(x_j - mean_j) / std_j`` fitted on ``X``.

    Features that are constant in ``X`` get scale 1, so they map to 0 rather than NaN.
    """
    return StandardScaler().fit(X)


# Meta-training inputs are bounded (z-normalised images lie in about [-0.5, 3]); a feature
# that is almost constant in the training rows (a border pixel, a rare category) gets
# z-scores in the tens or hundreds, which dominate the random projection.
Z_CLIP = 3.0


class ClippedStandardizer(TransformerMixin, BaseEstimator):
    r"""Per-feature z-scores, clipped, then scaled to unit root-mean-square.

    .. math:: z_j = \mathrm{clip}\left(\frac{x_j - \mu_j}{\sigma_j}, -c, c\right) / r,
              \qquad r^2 = \operatorname{mean}_{i,j} \mathrm{clip}(\ldots)_{ij}^2

    with :math:`c` = :data:`Z_CLIP` and :math:`r` fitted on the training rows. Meta-training
    saw inputs of unit mean square, and a random projection of such inputs has entries of
    unit variance too (see :func:`draw_projection`). Measured on augmented MNIST test
    tasks (``python -m benchmarks.normalisation``): per-feature z-scores alone lose 15
    points against meta-training's normalisation; clipping and rescaling win 11 back.
    """

    def fit(self, X: np.ndarray, y=None) -> ClippedStandardizer:
        self.scaler_ = fit_standardizer(X)
        rms = float(np.sqrt(np.mean(self._clipped(X) ** 2)))
        self.rms_ = rms if rms > 0 else 1.0  # all features constant: everything maps to 0
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (self._clipped(X) / self.rms_).astype(np.float32)

    def _clipped(self, X: np.ndarray) -> np.ndarray:
        return np.clip(self.scaler_.transform(X), -Z_CLIP, Z_CLIP)


def draw_projection(rng: np.random.Generator, n_features: int, input_dim: int) -> np.ndarray:
    """``A ~ N(0, 1/n_features)`` of shape ``(n_features, input_dim)``, float32.

    The task augmentation of meta-training (Kirsch et al., 2022): for standardised
    ``x``, every entry of ``x A`` has variance ``||x||^2 / n_features ~ 1`` whatever the
    number of features, so any table looks like one of the model's training tasks.
    """
    return rng.standard_normal((n_features, input_dim), dtype=np.float32) / np.float32(np.sqrt(n_features))


def draw_label_slots(rng: np.random.Generator, n_classes: int, n_slots: int) -> np.ndarray:
    """``slots[c]``: the model's label slot for class ``c`` (distinct slots), int64."""
    if n_classes > n_slots:
        raise ValueError(f"{n_classes} classes do not fit into {n_slots} label slots")
    return rng.permutation(n_slots)[:n_classes].astype(np.int64)


def context_rows(rng: np.random.Generator, n_samples: int, n_members: int, max_context: int) -> np.ndarray:
    """Row indices of each member's context, shape ``(n_members, min(n_samples, max_context))``.

    * ``n_samples <= max_context``: every member reads all rows, each in its own random
      order (the model's prediction depends on the order; averaging over orders reduces
      that variance).
    * ``n_samples > max_context``: the rows are shuffled once and member ``e`` reads the
      ``max_context`` consecutive rows starting at ``e * max_context``, wrapping around
      the end. The members together read every row when
      ``n_members * max_context >= n_samples``, and each row at most once more than any
      other.
    """
    if n_samples <= max_context:
        return np.stack([rng.permutation(n_samples) for _ in range(n_members)])
    order = rng.permutation(n_samples)
    starts = np.arange(n_members)[:, None] * max_context
    return order[(starts + np.arange(max_context)) % n_samples]


def members_for_classes(n_classes: int, n_slots: int) -> int:
    r"""Fewest members an output code over ``n_slots`` label slots needs for ``n_classes`` classes.

    A member tells apart ``n_slots`` groups, at most :math:`\log_2 C` bits; naming one of
    :math:`K` classes needs :math:`\log_2 K` bits. We ask for twice that (each class is
    identified by two disjoint sets of members, so one member's mistake is outvoted):
    :math:`E_{min} = \lceil 2 \ln K / \ln C \rceil` (``1`` when :math:`K \le C`).
    """
    if n_classes <= n_slots:
        return 1
    return math.ceil(2 * math.log(n_classes) / math.log(n_slots))


def draw_output_code(rng: np.random.Generator, n_classes: int, n_slots: int, n_members: int, tries: int = 16):
    r"""Each member's label slot for each class: ``(slots, n_members)``, ``slots`` int64 ``(E, K)``.

    * :math:`K \le C`: a random injection per member (:func:`draw_label_slots`).
    * :math:`K > C`: an *output code*: member :math:`e` splits the classes into :math:`C`
      groups of sizes :math:`\lfloor K/C \rfloor` or :math:`\lceil K/C \rceil` (a random
      balanced partition, each group on a random slot) and learns the :math:`C`-class task
      of telling the groups apart. Of ``tries`` random partitions, each member takes the
      one that separates the most pairs of classes that no earlier member separated; if
      some pair is still together after ``n_members`` members, members are added until
      every pair is separated (so every class gets its own code word).
    """
    if n_classes <= n_slots:
        return np.stack([draw_label_slots(rng, n_classes, n_slots) for _ in range(n_members)]), n_members
    together = np.ones((n_classes, n_classes), dtype=bool)  # pairs no member has separated yet
    np.fill_diagonal(together, False)
    codes = []
    while len(codes) < n_members or together.any():
        best, best_left = None, None
        for _ in range(tries):
            groups = np.empty(n_classes, dtype=np.int64)
            groups[rng.permutation(n_classes)] = np.arange(n_classes) % n_slots
            slots = rng.permutation(n_slots)[groups]
            left = together & (slots[:, None] == slots[None, :])
            if best_left is None or left.sum() < best_left.sum():
                best, best_left = slots, left
        codes.append(best)
        together = best_left
    return np.stack(codes), len(codes)
