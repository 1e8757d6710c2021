"""Issue 10: tables as they come, many classes, bounded cost, no silent wrong answers.

Each bad input of the issue's "Why" has a test here. Mechanics use the tiny checkpoint.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_CONFIG, tiny_model, write_tiny_checkpoint
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from gpicl_sklearn import (
    ContextSubsetWarning,
    GPICLClassifier,
    ManyClassesWarning,
    TableEncoder,
    save_checkpoint,
)
from gpicl_sklearn.layouts import draw_member_layouts
from gpicl_sklearn.preprocessing import draw_output_code, members_for_classes
from gpicl_sklearn.table_encoding import permute_codes


def table(n: int = 18, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "num": rng.normal(size=n),
            "answer": rng.choice(["Yes", "No"], n).astype(object),
            "colour": pd.Categorical(rng.choice(["red", "green", "blue"], n)),
            "flag": rng.random(n) < 0.5,
            "count": pd.array(rng.integers(0, 5, n), dtype="Int64"),
            "maybe": pd.array(rng.random(n) < 0.5, dtype="boolean"),
            "ratio": pd.array(rng.random(n), dtype="Float64"),
            "text": pd.array(rng.choice(["a", "b"], n), dtype="string"),
        }
    )
    df.loc[2, "count"] = pd.NA
    df.loc[3, "maybe"] = pd.NA
    df.loc[4, "ratio"] = pd.NA
    df.loc[5, "answer"] = None
    df.loc[6, "num"] = np.nan
    return df, np.arange(n) % 3


def tiny(tiny_checkpoint, **params) -> GPICLClassifier:
    return GPICLClassifier(checkpoint=tiny_checkpoint, **{"n_estimators": 2, "random_state": 0, **params})


# --- 1. tables as they come ------------------------------------------------------------------


def test_dataframe_with_strings_categories_booleans_and_nullables(tiny_checkpoint):
    # Why: "a DataFrame with a string or categorical column fails with could not convert
    # string to float: 'Yes'; any NaN fails".
    df, y = table()
    clf = tiny(tiny_checkpoint).fit(df, y)
    assert list(clf.feature_names_in_) == list(df.columns) and clf.n_features_in_ == 8
    proba = clf.predict_proba(df)
    assert proba.shape == (18, 3) and np.all(np.isfinite(proba)) and np.allclose(proba.sum(1), 1)
    assert clf.table_encoder_.kinds_ == ["numeric"] + ["categorical"] * 2 + ["boolean", "numeric", "boolean"] + [
        "numeric",
        "categorical",
    ]


def test_table_encoder_codes_missing_and_unseen():
    df, _ = table()
    enc = TableEncoder().fit(df)
    X = enc.transform(df)
    assert X.dtype == np.float64 and X.shape == df.shape
    assert list(enc.categories_[1]) == ["No", "Yes"] and list(enc.categories_[2]) == ["blue", "green", "red"]
    assert np.isnan(X[5, 1]) and np.isnan(X[2, 4]) and np.isnan(X[3, 5]) and np.isnan(X[4, 6])  # None, pd.NA
    np.testing.assert_array_equal(X[:, 3], df["flag"].astype(float))
    unseen = df.iloc[:2].copy()
    unseen["answer"] = ["Maybe", "Yes"]  # a category not seen in fit: missing
    assert np.isnan(enc.transform(unseen)[0, 1]) and enc.transform(unseen)[1, 1] == 1.0
    assert list(enc.get_feature_names_out()) == list(df.columns)


def test_unseen_category_predicts_like_a_missing_value(tiny_checkpoint):
    df, y = table()
    clf = tiny(tiny_checkpoint).fit(df, y)
    unseen, missing = df.iloc[:4].copy(), df.iloc[:4].copy()
    unseen["answer"] = "Maybe"
    missing["answer"] = None
    np.testing.assert_array_equal(clf.predict_proba(unseen), clf.predict_proba(missing))


def test_codes_are_permuted_per_member(tiny_checkpoint):
    df, y = table()
    clf = tiny(tiny_checkpoint, n_estimators=6).fit(df, y)
    perms = clf._code_permutations
    assert sorted(perms) == [1, 2, 7] and perms[2].shape == (12, 3)  # 6 members per view, two views
    assert len({tuple(p) for p in perms[2]}) > 1  # members read the categories in different orders
    X = np.array([[0.0, 2.0], [np.nan, 1.0]])
    out = permute_codes(np.broadcast_to(X, (2, 2, 2)), {1: np.array([[2, 0, 1], [1, 2, 0]])})
    np.testing.assert_array_equal(out[:, :, 1], [[1, 0], [0, 2]])
    np.testing.assert_array_equal(out[:, :, 0], [[0, np.nan], [0, np.nan]])


def test_numeric_dataframe_equals_numpy(tiny_checkpoint):
    X = np.random.default_rng(0).normal(size=(18, 3))
    y = np.arange(18) % 3
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    np.testing.assert_array_equal(
        tiny(tiny_checkpoint).fit(df, y).predict_proba(df), tiny(tiny_checkpoint).fit(X, y).predict_proba(X)
    )


def test_column_transformer_with_pandas_output_feeds_the_estimator(tiny_checkpoint):
    df, y = table()
    scale = ColumnTransformer(
        [("num", StandardScaler(), make_column_selector(dtype_include="float64"))],
        remainder="passthrough",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    pipe = make_pipeline(scale, tiny(tiny_checkpoint)).fit(df, y)
    assert pipe.predict(df).shape == (18,)
    assert "answer" in pipe[-1].feature_names_in_


def test_categorical_fit_needs_a_dataframe_at_predict(tiny_checkpoint):
    df, y = table()
    clf = tiny(tiny_checkpoint).fit(df, y)
    with pytest.raises(ValueError, match="pass a DataFrame with the same columns"):
        clf.predict(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(df[df.columns[::-1]])


# --- 2. any number of classes ----------------------------------------------------------------


def test_output_code_separates_every_pair_of_classes():
    for n_classes in (6, 20, 50, 100):
        slots, n_members = draw_output_code(np.random.default_rng(0), n_classes, 10, members_for_classes(n_classes, 10))
        assert slots.shape == (n_members, n_classes) and slots.max() < 10
        assert len({tuple(column) for column in slots.T}) == n_classes  # distinct code words
        assert all(np.bincount(s).max() - np.bincount(s).min() <= 1 for s in slots)  # balanced groups


def test_more_classes_than_label_slots(tiny_checkpoint):
    # Why: "more than 10 classes fails". The tiny model has 5 slots; 12 classes work.
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(36, 4)), np.arange(36) % 12
    with pytest.warns(ManyClassesWarning, match="12 classes need an output code over at least 4"):
        clf = tiny(tiny_checkpoint, n_estimators=1).fit(X, y)
    assert clf.n_members_ >= members_for_classes(12, TINY_CONFIG.num_classes)
    proba = clf.predict_proba(X)
    assert proba.shape == (36, 12) and np.allclose(proba.sum(1), 1) and np.all(proba > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ManyClassesWarning)  # enough members asked for: no warning
        clf = tiny(tiny_checkpoint, n_estimators=2).fit(X, y)
    assert clf.n_members_ == 2 * 2 * 3  # two views x n_estimators x ceil(12 / 5) classes sharing a slot


# --- 3. bounded cost -------------------------------------------------------------------------


def test_wide_table_pickle_has_no_feature_by_width_floats(tiny_checkpoint):
    # Why: "100 rows x 200,000 features ... pickle to 2.3 GB". Layouts are seeds or slot indices.
    rng = np.random.default_rng(0)
    n_features = 3000
    X, y = rng.normal(size=(19, n_features)), np.arange(19) % 3
    clf = tiny(tiny_checkpoint, n_estimators=4).fit(X, y)  # two views: 8 members
    # The normal scores keep per column its training quantiles, centre, scale and index: data-sized.
    normal_scores = len(pickle.dumps(clf._normal_scores))
    assert normal_scores < (len(X) + 4) * n_features * 8 * 1.01, normal_scores
    per_feature_member = (len(pickle.dumps(clf)) - normal_scores) / (n_features * clf.n_members_)
    # Statistics (float64) and slot indices: ~50 bytes; a layout matrix would add 2 x 48 x 4 = 384.
    assert per_feature_member < 64, per_feature_member
    assert clf._context_inputs.shape == (8, 19, TINY_CONFIG.input_dim)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).predict_proba(X[:3]), clf.predict_proba(X[:3]))


def test_slot_layout_is_an_injection_of_present_columns():
    present = np.array([[True, False, True, True], [True] * 4])
    layouts = draw_member_layouts(present, 6, "slots", np.random.default_rng(0))
    assert not layouts.projected.any() and layouts.slots.dtype == np.int32
    assert layouts.slots[0, 1] == -1 and len(set(layouts.slots[1])) == 4
    dense = layouts.matrix(0).numpy()
    assert dense.sum() == 3 and dense.sum(0).max() == 1
    many = draw_member_layouts(np.ones((1, 10), bool), 6, "slots", np.random.default_rng(0))
    assert many.projected.all()  # more present columns than slots: a Gaussian projection


@pytest.fixture(scope="module")
def slots_checkpoint(tmp_path_factory) -> Path:
    return save_checkpoint(
        tiny_model(0), tmp_path_factory.mktemp("slots"), preprocessing={"layout": "slots"}, training={}, metrics={}
    )


def test_slots_checkpoint_predicts_through_scatter(slots_checkpoint):
    X, y = np.random.default_rng(0).normal(size=(18, 5)), np.arange(18) % 3
    clf = GPICLClassifier(checkpoint=slots_checkpoint, n_estimators=3, random_state=0).fit(X, y)
    assert not clf._layouts.projected.any()
    proba = clf.predict_proba(X)
    assert np.allclose(proba.sum(1), 1)


def test_one_row_costs_one_small_pass(tiny_checkpoint):
    # Why: "batch_size=100000 makes a one-row predict take 84 s". The default pass is 64 rows,
    # and a row's probabilities do not depend on the rows predicted with it.
    X, y = np.random.default_rng(0).normal(size=(18, 4)), np.arange(18) % 3
    clf = tiny(tiny_checkpoint).fit(X, y)
    assert clf.batch_size == 64
    together = clf.predict_proba(np.vstack([X, X, X, X, X]))  # 90 rows: two passes
    np.testing.assert_array_equal(together[:18], clf.predict_proba(X))
    np.testing.assert_array_equal(together[72:], np.vstack([clf.predict_proba(X[i : i + 1]) for i in range(18)]))


def test_many_rows_warning_advises_within_a_budget(tiny_checkpoint):
    # Why: "with 100,000 rows the warning advises n_estimators >= 1011".
    X, y = np.random.default_rng(0).normal(size=(2000, 3)), np.arange(2000) % 3
    with pytest.warns(ContextSubsetWarning, match="beyond the advised budget of n_estimators <= 32") as record:
        tiny(tiny_checkpoint).fit(X, y)
    assert "set n_estimators >=" not in str(record[0].message)
    # 100 rows need 6 members of 19 rows; two views of n_estimators=2 are 4 members.
    with pytest.warns(ContextSubsetWarning, match=r"set n_estimators >= 3 to use every row \(.*1.5x the current"):
        tiny(tiny_checkpoint).fit(X[:100], y[:100])


def test_threads_are_bounded(tiny_checkpoint, monkeypatch):
    # Why: "torch's two threads make predict about 5.7x slower than one thread" under n_jobs.
    X, y = np.random.default_rng(0).normal(size=(18, 4)), np.arange(18) % 3
    seen = []
    clf = tiny(tiny_checkpoint).fit(X, y)
    original = clf._predict_pass
    monkeypatch.setattr(clf, "_predict_pass", lambda *a: seen.append(torch.get_num_threads()) or original(*a))
    before = torch.get_num_threads()
    clf.predict(X)  # default: one thread
    clf.set_params(n_threads=None)
    with threadpool_limits(1):  # None follows threadpoolctl (and so joblib's worker limits)
        clf.predict(X)
    assert seen == [1, 1] and torch.get_num_threads() == before


# --- 5. no silent wrong answers ----------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e200, 1e-300, 1e300])
def test_extreme_but_finite_columns_give_the_scaled_answer(tiny_checkpoint, scale):
    # Why: "one column of values around 1e200 gives all-NaN probabilities, silently".
    X, y = np.random.default_rng(0).normal(size=(18, 4)), np.arange(18) % 3
    big = X.copy()
    big[:, 1] *= scale
    expected = tiny(tiny_checkpoint).fit(X, y).predict_proba(X)
    proba = tiny(tiny_checkpoint).fit(big, y).predict_proba(big)
    assert np.all(np.isfinite(proba))
    np.testing.assert_allclose(proba, expected, atol=1e-5)


def test_model_emitting_nan_is_an_error(tmp_path: Path):
    model = tiny_model(0)
    with torch.no_grad():  # finite weights whose logits overflow float32
        model.head.weight.fill_(3e38)
    path = save_checkpoint(model, tmp_path, preprocessing={}, training={}, metrics={}, dtype=torch.float32)
    clf = GPICLClassifier(checkpoint=path, n_estimators=1, random_state=0)
    X, y = np.random.default_rng(0).normal(size=(9, 2)), np.arange(9) % 3
    with pytest.raises(ValueError, match="the model produced non-finite outputs"):
        clf.fit(X, y).predict(X)


def test_relative_checkpoint_path_is_made_absolute(tmp_path: Path, monkeypatch):
    write_tiny_checkpoint(tmp_path / "ckpt")
    monkeypatch.chdir(tmp_path)
    X, y = np.random.default_rng(0).normal(size=(9, 2)), np.arange(9) % 3
    clf = GPICLClassifier(checkpoint="ckpt", n_estimators=1, random_state=0).fit(X, y)
    assert clf.checkpoint == "ckpt" and os.path.isabs(clf.checkpoint_path_)
    blob = pickle.dumps(clf)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    np.testing.assert_array_equal(pickle.loads(blob).predict_proba(X), clf.predict_proba(X))
