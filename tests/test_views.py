"""Tests of the normal-scores view and the members' evidence weights (GPICLClassifier)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_CONFIG
from scipy.stats import norm
from sklearn.preprocessing import QuantileTransformer

from gpicl_sklearn import GPICLClassifier, ManyClassesWarning
from gpicl_sklearn.normal_scores import NormalScores


def test_normal_scores_keep_order_and_missing_values_and_skip_codes():
    rng = np.random.default_rng(0)
    X = np.column_stack([np.exp(3 * rng.normal(size=500)), rng.integers(0, 4, 500).astype(float)])
    X[::50, 0] = np.nan
    Z = NormalScores(skip=[1]).fit(X).transform(X)
    np.testing.assert_array_equal(Z[:, 1], X[:, 1])  # category codes as they were
    assert np.isnan(Z[::50, 0]).all() and np.isfinite(np.delete(Z[:, 0], np.s_[::50])).all()
    present = ~np.isnan(X[:, 0])
    order = np.argsort(X[present, 0])
    assert (np.diff(Z[present, 0][order]) >= 0).all()  # monotone
    # The median row maps to about 0, the 84th percentile to about 1 (normal scores).
    q = np.nanquantile(X[:, 0], [0.5, norm.cdf(1)])
    np.testing.assert_allclose(NormalScores().fit(X[:, :1]).transform(q[:, None])[:, 0], [0, 1], atol=0.02)


@pytest.mark.parametrize("scale, offset", [(1e-300, 0.0), (1e-9, 1e3), (1e300, 0.0)])
def test_normal_scores_do_not_depend_on_a_columns_scale_or_offset(scale, offset):
    # Why: QuantileTransformer clips values within an absolute 1e-7 of the range's ends, so a
    # column of values around 1e-300 (or 1,000 + changes of 1e-9) became one constant.
    X = np.random.default_rng(0).normal(size=(40, 2))
    X[3, 1] = np.nan
    moved = X * [scale, 1.0] + [offset, 0.0]
    np.testing.assert_allclose(
        NormalScores().fit(moved).transform(moved), NormalScores().fit(X).transform(X), atol=1e-12
    )
    extreme = np.where(X > 0, 1.7e308, -1.7e308)  # halved before centring: no overflow to inf
    assert np.isfinite(NormalScores().fit(extreme).transform(extreme)[~np.isnan(X)]).all()


def test_normal_scores_follow_quantile_transformers_rule_on_the_centred_columns():
    # NormalScores computes QuantileTransformer's mapping for all columns at once (its
    # per-column inverse normal took seconds per prediction pass on 784 pixel columns).
    rng = np.random.default_rng(1)
    X = rng.standard_t(2, (300, 4))
    X[:, 1] = rng.integers(0, 3, 300)  # repeated values: the mean of interpolating up and down
    X[rng.random(X.shape) < 0.1] = np.nan
    queries = np.vstack([rng.standard_t(2, (200, 4)), [[1e9, -1e9, np.nan, 0.0]]])
    scores = NormalScores().fit(X)
    reference = QuantileTransformer(n_quantiles=300, output_distribution="normal", subsample=None)
    reference.fit(scores._centred(X) / scores.scale_)
    expected = reference.transform(scores._centred(queries) / scores.scale_)
    np.testing.assert_array_equal(scores.transform(queries), expected)


def heavy_tailed_task(n: int = 300, seed: int = 0):
    """Two log-normal columns (sigma 3): z-scores squeeze most rows together, ranks do not."""
    rng = np.random.default_rng(seed)
    X = np.exp(3 * rng.normal(size=(n, 3)))
    return X, (np.log(X[:, 0]) + 0.5 * np.log(X[:, 1]) > 0).astype(int)


def test_evidence_weights_choose_the_view_that_predicts_the_context():
    # Default checkpoint: the members reading normal scores predict their own context
    # better, so they carry the weight, and the test rows are classified better.
    X, y = heavy_tailed_task()
    views = GPICLClassifier(n_estimators=4, normal_scores=True, evidence_power=0.1, random_state=0)
    views.fit(X[:200], y[:200])
    assert views.n_members_ == 8 and np.isclose(views.member_weights_.sum(), 1)
    assert views.member_weights_[4:].sum() > 0.9, views.member_weights_
    as_is = GPICLClassifier(n_estimators=4, normal_scores=False, evidence_power=0.0, random_state=0)
    as_is.fit(X[:200], y[:200])
    np.testing.assert_allclose(as_is.member_weights_, 1 / 4)  # evidence_power=0: equal weights
    assert views.score(X[200:], y[200:]) > as_is.score(X[200:], y[200:]) + 0.05


def test_weights_are_fitted_state(tiny_checkpoint):
    X, y = heavy_tailed_task(n=15)
    clf = GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=3, normal_scores=True, evidence_power=1.0)
    proba = clf.set_params(random_state=0).fit(X, y).predict_proba(X)
    assert not np.allclose(clf.member_weights_, 1 / 6)
    np.testing.assert_array_equal(clf.set_params(evidence_power=0.0).predict_proba(X), proba)  # until fit
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_allclose(restored.predict_proba(X), proba, rtol=1e-6)


def test_normal_scores_of_a_dataframe_leave_categories_to_their_codes(tiny_checkpoint):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"amount": np.exp(3 * rng.normal(size=15)), "kind": pd.Categorical(rng.choice(["a", "b"], 15))})
    clf = GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=2, normal_scores=True, random_state=0)
    clf.fit(df, np.arange(15) % 2)
    np.testing.assert_array_equal(clf._normal_scores.columns_, [0])
    assert clf.predict_proba(df).shape == (15, 2)


def test_output_codes_weight_members_equally(tiny_checkpoint):
    X = np.random.default_rng(0).normal(size=(18, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ManyClassesWarning)
        clf = GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=2, normal_scores=True, evidence_power=0.1)
        clf.fit(X, np.arange(18) % (TINY_CONFIG.num_classes + 1))  # more classes than slots
    np.testing.assert_allclose(clf.member_weights_, 1 / clf.n_members_)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"evidence_power": -0.1}, "evidence_power must be a finite number >= 0, got -0.1"),
        ({"evidence_power": float("nan")}, "evidence_power must be a finite number >= 0, got nan"),
        ({"evidence_power": "0.1"}, "evidence_power must be a finite number >= 0, got '0.1'"),
        ({"normal_scores": "yes"}, "normal_scores must be True or False, got 'yes'"),
    ],
)
def test_bad_view_parameters(tiny_checkpoint, params, message):
    with pytest.raises(ValueError, match=message):
        GPICLClassifier(checkpoint=tiny_checkpoint, **params).fit(*heavy_tailed_task(n=15))
