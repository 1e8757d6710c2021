"""Tests of GPICLClassifier: scikit-learn workflows, persistence, reproducibility, bad input.

Mechanics use the tiny random-weight checkpoint of conftest.py; tests that need a model
that actually learns in context use the bundled default checkpoint.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import scipy.sparse
import torch
from conftest import TINY_CONFIG, write_tiny_checkpoint
from sklearn.base import clone
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gpicl_sklearn import (
    CheckpointError,
    ContextSubsetWarning,
    GPICLClassifier,
    load_checkpoint,
)
from gpicl_sklearn.inputs import Z_CLIP, InputStats, standardize
from gpicl_sklearn.preprocessing import context_rows

MAX_CONTEXT = TINY_CONFIG.max_len - 1  # 19


def small_problem(n: int = 15, n_features: int = 4, n_classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_features)), np.arange(n) % n_classes


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    return X[order], y[order]


# --- scikit-learn workflows (default checkpoint: accuracy matters) -------------------------


def test_pipeline_cross_val_score_learns_in_context(iris):
    X, y = iris
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ContextSubsetWarning)  # 120 training rows > 99
        scores = cross_val_score(make_pipeline(StandardScaler(), GPICLClassifier(random_state=0)), X, y, cv=5)
    assert scores.mean() > 0.7, scores  # chance is 1/3


def test_grid_search_over_n_estimators(iris):
    X, y = iris[0][:90], iris[1][:90]  # fits the context: no subsets
    search = GridSearchCV(GPICLClassifier(random_state=0), {"n_estimators": [2, 8]}, cv=3).fit(X, y)
    assert search.best_params_["n_estimators"] in (2, 8)
    assert len(search.cv_results_["mean_test_score"]) == 2
    assert search.best_score_ > 0.6  # chance is 1/3
    assert search.best_estimator_.predict(X).shape == (90,)


def test_clone_is_unfitted_with_same_params(tiny_checkpoint):
    clf = GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=3, random_state=1).fit(*small_problem())
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert not hasattr(copy, "classes_")


def test_string_labels_behave_like_their_codes(tiny_checkpoint):
    X, y = small_problem(n=18)
    names = np.array(["setosa", "versicolor", "virginica"], dtype=object)[y]
    by_name = GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=2, random_state=0).fit(X, names)
    by_code = GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=2, random_state=0).fit(X, y)
    assert list(by_name.classes_) == ["setosa", "versicolor", "virginica"]
    np.testing.assert_array_equal(by_name.predict(X), by_name.classes_[by_code.predict(X)])
    np.testing.assert_array_equal(by_name.predict_proba(X), by_code.predict_proba(X))
    assert by_name.predict(X).dtype == object


# --- inference is the model's causal forward pass ----------------------------------------


@pytest.mark.parametrize("qk_norm", [False, True])
def test_one_pass_inference_equals_causal_forward(tiny_checkpoint, tmp_path, qk_norm):
    if qk_norm:  # normalised keys are what the context cache holds
        tiny_checkpoint = write_tiny_checkpoint(tmp_path, config=dataclasses.replace(TINY_CONFIG, qk_norm=True))
    X, y = small_problem()
    clf = GPICLClassifier(
        checkpoint=tiny_checkpoint, n_estimators=3, normal_scores=True, evidence_power=0.1, random_state=0
    )
    clf.fit(X, y)
    X_query = np.random.default_rng(1).normal(size=(6, X.shape[1]))
    proba = clf.predict_proba(X_query)

    # Reference: for each member, the full sequence (context rows, then one query) through
    # the training-time forward pass; the last position's logits over the used slots.
    # Members 3-5 read the columns' normal scores. A member's weight is softmax(-0.1 L_e),
    # L_e the log-loss of its context rows' labels, each predicted from the rows before it.
    model = load_checkpoint(tiny_checkpoint).model.double()
    assert clf.n_members_ == 6
    views = [X_query, clf._normal_scores.transform(X_query)]
    member_proba, log_loss = np.zeros((clf.n_members_, *proba.shape)), np.zeros(clf.n_members_)
    for e in range(clf.n_members_):
        z = standardize(torch.tensor(views[e // 3])[None], member_stats(clf, e))[0]
        P = clf._layouts.matrix(e).double()  # the member's layout, regenerated from its seed
        context = torch.tensor(clf._context_inputs[e], dtype=torch.float64) @ P  # stored before the layout
        labels = torch.tensor(np.append(clf._context_y[e], 0))  # the query's own label is never read
        slots = torch.tensor(clf._label_slots[e])
        unused = torch.ones(TINY_CONFIG.num_classes, dtype=torch.bool).index_fill(0, slots, False)
        for i, q in enumerate(z):
            tokens = model.embed_x(torch.cat([context, (q @ P)[None]]))
            with torch.no_grad():
                logits = model.forward_embedded(tokens[None], labels[None])[0]
            member_proba[e, i] = logits[-1, slots].softmax(-1).numpy()
        context_logp = logits[:-1].masked_fill(unused, -torch.inf).log_softmax(-1)
        log_loss[e] = -context_logp[torch.arange(len(context)), labels[:-1]].sum()
    weights = np.exp(-0.1 * (log_loss - log_loss.min()))
    np.testing.assert_allclose(clf.member_weights_, weights / weights.sum(), rtol=1e-4)
    expected = np.einsum("e,eqk->qk", clf.member_weights_, member_proba)
    np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-6)  # float32 inference


def member_stats(clf: GPICLClassifier, e: int) -> InputStats:
    """The input statistics of ensemble member ``e`` (a batch of one)."""
    return InputStats(**{k: torch.from_numpy(v[e : e + 1]) for k, v in clf._stats.items()})


def test_projection_layout_is_regenerated_from_a_seed(tiny_checkpoint):
    # The tiny checkpoint reads inputs through a projection: A_e ~ N(0, 1/n_present) on the
    # present columns, stored as a seed (no float matrix in the fitted state).
    X, y = small_problem(n_features=8)
    clf = GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=50, normal_scores=False, random_state=0).fit(X, y)
    assert clf._layouts.projected.all() and clf._layouts.seeds.shape == (50,)
    A = np.stack([clf._layouts.matrix(e).numpy() for e in range(50)])
    assert A.shape == (50, 16, TINY_CONFIG.input_dim)  # values, then missing indicators
    np.testing.assert_array_equal(clf._layouts.matrix(3), clf._layouts.matrix(3))  # same draw each time
    assert abs(A[:, :8].var() * 8 - 1) < 0.05  # variance 1 / n_present, n_present = 8


@pytest.mark.filterwarnings("ignore::gpicl_sklearn.ContextSubsetWarning")
def test_predictions_do_not_depend_on_batching(tiny_checkpoint):
    X, y = small_problem(n=30)
    clf = GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=2, random_state=0).fit(X, y)
    full = clf.predict_proba(X)
    chunked = clf.set_params(batch_size=7).predict_proba(X)
    one_by_one = np.vstack([clf.predict_proba(X[i : i + 1]) for i in range(len(X))])
    np.testing.assert_array_equal(one_by_one, full)  # fixed-shape passes: bit-identical
    np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-7)  # another shape: rounding only
    np.testing.assert_allclose(full.sum(axis=1), 1.0)


# --- persistence ---------------------------------------------------------------------------


def test_pickle_and_joblib_round_trip_without_weights(tmp_path: Path, iris):
    X, y = iris
    clf = GPICLClassifier(n_estimators=2, random_state=0).fit(X, y)
    expected = clf.predict_proba(X)

    blob = pickle.dumps(clf)
    assert len(blob) < 100_000, len(blob)  # the default weights alone are ~20 MB (float16)
    np.testing.assert_array_equal(pickle.loads(blob).predict_proba(X), expected)

    joblib.dump(clf, tmp_path / "clf.joblib")
    assert (tmp_path / "clf.joblib").stat().st_size < 100_000
    np.testing.assert_array_equal(joblib.load(tmp_path / "clf.joblib").predict_proba(X), expected)
    # Memory-mapped (read-only) fitted arrays work too.
    np.testing.assert_array_equal(joblib.load(tmp_path / "clf.joblib", mmap_mode="r").predict_proba(X), expected)


def test_unpickled_estimator_refuses_changed_weights(tmp_path: Path):
    write_tiny_checkpoint(tmp_path, seed=0)
    X, y = small_problem()
    blob = pickle.dumps(GPICLClassifier(checkpoint=tmp_path, n_estimators=2, random_state=0).fit(X, y))
    write_tiny_checkpoint(tmp_path, seed=1)  # the folder now holds other weights
    with pytest.raises(ValueError, match="holds different weights than when this estimator was fitted"):
        pickle.loads(blob).predict(X)


# --- reproducibility -----------------------------------------------------------------------


def test_random_state_makes_fit_reproducible(tiny_checkpoint):
    X, y = small_problem(n=40)

    def make(seed):
        return GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=3, random_state=seed)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ContextSubsetWarning)
        a, b, c = make(0).fit(X, y), make(0).fit(X, y), make(1).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.allclose(a.predict_proba(X), c.predict_proba(X))
    # A RandomState instance is consumed: two fits differ, as scikit-learn expects.
    rs = np.random.RandomState(0)
    clf = GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=3, random_state=rs)
    first = clf.fit(X[:15], y[:15]).predict_proba(X)
    assert not np.allclose(first, clf.fit(X[:15], y[:15]).predict_proba(X))


# --- training sets larger than the context ------------------------------------------------


def test_large_training_sets_warn_and_members_cover_the_data(tiny_checkpoint):
    X, y = small_problem(n=50)
    # One view, 3 members: 3 * 19 >= 50 rows.
    clf = GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=3, normal_scores=False, random_state=0)
    with pytest.warns(
        ContextSubsetWarning,
        match=r"50 training rows exceed the model's context of 19 rows.*50 distinct rows are used\.$",
    ):
        clf.fit(X, y)
    assert clf._context_inputs.shape == (3, MAX_CONTEXT, 2 * X.shape[1])  # narrow: stored before the layout
    # Each member standardises its own rows: find them by the raw rows they came from.
    enc = clf._encoded_context()
    inputs = clf._model_inputs(X, enc.stats, None, enc.device).numpy()  # (3, 50, 2 n_features)
    seen = set()
    for e in range(3):
        distance = ((clf._context_inputs[e][:, None] - inputs[e][None]) ** 2).sum(-1)
        seen |= set(distance.argmin(1).tolist())
    assert seen == set(range(50))

    with pytest.warns(
        ContextSubsetWarning, match=r"so 38 distinct rows are used; set n_estimators >= 3 to use every row"
    ):
        clf.set_params(n_estimators=2).fit(X, y)


def test_small_training_sets_do_not_warn(tiny_checkpoint):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=2, random_state=0).fit(*small_problem(n=MAX_CONTEXT))


def test_context_rows():
    rng = np.random.default_rng(0)
    small = context_rows(rng, 5, 3, 19)  # every member reads every row, in its own order
    assert small.shape == (3, 5) and all(sorted(r) == list(range(5)) for r in small)
    assert len({tuple(r) for r in small}) > 1
    large = context_rows(rng, 50, 4, 19)  # consecutive chunks of one shuffle, wrapping
    assert large.shape == (4, 19)
    assert set(large[:3].ravel()) == set(range(50))
    counts = np.bincount(large.ravel(), minlength=50)
    assert counts.max() - counts.min() <= 1
    assert all(len(set(r)) == 19 for r in large)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "message"), [(np.inf, "Input X contains infinity")])
def test_non_finite_input(tiny_checkpoint, value: float, message: str):
    X, y = small_problem()
    bad = X.copy()
    bad[3, 1] = value
    clf = GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=1)
    with pytest.raises(ValueError, match=message):
        clf.fit(bad, y)
    clf.fit(X, y)
    with pytest.raises(ValueError, match=message):
        clf.predict(bad)


def test_empty_input(tiny_checkpoint):
    clf = GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=1)
    with pytest.raises(ValueError, match=r"0 sample\(s\)"):
        clf.fit(np.empty((0, 3)), np.empty(0))
    with pytest.raises(ValueError, match=r"0 feature\(s\)"):
        clf.fit(np.empty((5, 0)), np.arange(5))
    clf.fit(*small_problem())
    with pytest.raises(ValueError, match=r"0 sample\(s\)"):
        clf.predict(np.empty((0, 4)))


def test_one_class(tiny_checkpoint):
    with pytest.raises(ValueError, match="y has 1 class \\('a'\\); a classifier needs at least 2 classes"):
        GPICLClassifier(checkpoint=tiny_checkpoint).fit(np.ones((4, 2)), ["a"] * 4)


def test_regression_target(tiny_checkpoint):
    X, _ = small_problem()
    with pytest.raises(ValueError, match="Unknown label type"):
        GPICLClassifier(checkpoint=tiny_checkpoint).fit(X, np.linspace(0, 1, len(X)))


def test_sparse_input_says_to_densify(tiny_checkpoint):
    X, y = small_problem()
    with pytest.raises(TypeError, match=re.escape("Sparse data was passed") + ".*toarray"):
        GPICLClassifier(checkpoint=tiny_checkpoint).fit(scipy.sparse.csr_matrix(X), y)


def test_wrong_number_of_features_at_predict(tiny_checkpoint):
    X, y = small_problem(n_features=4)
    clf = GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=1).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but GPICLClassifier is expecting 4 features"):
        clf.predict(X[:, :3])


def test_predict_before_fit(tiny_checkpoint):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        GPICLClassifier(checkpoint=tiny_checkpoint).predict(np.ones((2, 2)))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"device": "tpu"}, "device must be 'auto', 'cpu', 'cuda'"),
        ({"device": "mps"}, "device must be 'auto', 'cpu', 'cuda'"),
        ({"device": 3.5}, "device must be 'auto', 'cpu', 'cuda'"),
        ({"n_estimators": 0}, "n_estimators must be a positive integer, got 0"),
        ({"n_estimators": 2.0}, "n_estimators must be a positive integer, got 2.0"),
        ({"batch_size": -1}, "batch_size must be a positive integer, got -1"),
    ],
)
def test_bad_hyper_parameters(tiny_checkpoint, params: dict, message: str):
    clf = GPICLClassifier(checkpoint=tiny_checkpoint, **params)  # stored untouched ...
    assert clf.get_params()[next(iter(params))] is next(iter(params.values()))
    with pytest.raises(ValueError, match=message):  # ... and checked in fit
        clf.fit(*small_problem())


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the error raised without CUDA")
def test_cuda_requested_without_cuda(tiny_checkpoint):
    with pytest.raises(ValueError, match="device='cuda' was requested, but CUDA is not available here"):
        GPICLClassifier(checkpoint=tiny_checkpoint, device="cuda").fit(*small_problem())


def test_missing_checkpoint(tmp_path: Path):
    with pytest.raises(CheckpointError, match="checkpoint file is missing"):
        GPICLClassifier(checkpoint=tmp_path).fit(*small_problem())


def test_outlying_feature_values_are_clipped(tiny_checkpoint):
    X, y = small_problem(n=30)
    clf = GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=2, random_state=0).fit(X, y)
    edge, far = X[:3].copy(), X[:3].copy()
    # The largest value of feature 0 the clipping lets through for member 0 and member 1.
    stats = [member_stats(clf, e) for e in range(2)]
    edge[:, 0] = max(float((s.mean[0, 0] + Z_CLIP / s.inv_std[0, 0]) / s.prescale[0, 0]) for s in stats)
    far[:, 0] = 1e6
    np.testing.assert_array_equal(clf.predict_proba(far), clf.predict_proba(edge))
    assert not np.array_equal(clf.predict_proba(edge), clf.predict_proba(X[:3]))


def test_missing_values_are_read_through_indicators(tiny_checkpoint):
    X, y = small_problem(n=18)
    X[::3, 1] = np.nan
    clf = GPICLClassifier(checkpoint=tiny_checkpoint, n_estimators=2, random_state=0).fit(X, y)
    assert np.all(np.isfinite(clf._context_inputs))
    assert clf._stats["present"][:, X.shape[1] + 1].all()  # feature 1's indicator column is used
    queries = X[:4].copy()
    queries[:, 0] = np.nan  # missing where the context had no missing values: imputed, no indicator
    proba = clf.predict_proba(queries)
    assert np.all(np.isfinite(proba)) and np.allclose(proba.sum(1), 1.0)
