"""Scale-out of prediction on Dask: Dask-ML's ParallelPostFit and joblib's dask backend on a local cluster.

Two worker processes (not threads): the fitted estimator travels to them pickled, without
weights, and each worker re-reads the checkpoint, as on a real cluster.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.datasets import make_classification

pytest.importorskip("dask")
pytest.importorskip("distributed")
pytest.importorskip("dask_ml")

import dask.array as da  # noqa: E402
import joblib  # noqa: E402
from dask_ml.wrappers import ParallelPostFit  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import gpicl_sklearn  # noqa: E402
from gpicl_sklearn import GPICLClassifier  # noqa: E402


@pytest.fixture(scope="module")
def client():
    # One thread per worker process; distributed also sets OMP_NUM_THREADS=1 in each, so torch
    # does not oversubscribe the cores.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            # Workers must run this checkout's code (they inherit the test process's sys.path).
            assert set(client.run(lambda: gpicl_sklearn.__file__).values()) == {gpicl_sklearn.__file__}
            yield client


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=419, n_features=6, n_informative=4, n_classes=3, random_state=0)
    return X[:19], y[:19], X[19:]  # 19 rows: the tiny checkpoint's whole context


def test_parallel_post_fit_on_a_dask_cluster(client, tiny_checkpoint, data):
    X_train, y_train, X_query = data
    clf = ParallelPostFit(GPICLClassifier(checkpoint=str(tiny_checkpoint), n_estimators=3, random_state=0))
    clf.fit(X_train, y_train)  # fit: in this process, on a sample that fits in memory
    # What a task ships to a worker: the fitted arrays only, smaller than the weights.
    assert len(pickle.dumps(clf)) < (tiny_checkpoint / "model.safetensors").stat().st_size

    X_dask = da.from_array(X_query, chunks=100)  # 4 partitions, spread over both workers
    proba = clf.predict_proba(X_dask)
    pred = clf.predict(X_dask)
    assert isinstance(proba, da.Array) and isinstance(pred, da.Array)
    proba, pred = client.compute([proba, pred], sync=True)
    # The same numbers as one process: a row's prediction does not depend on its partition.
    np.testing.assert_allclose(proba, clf.estimator.predict_proba(X_query), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(pred, clf.estimator.predict(X_query))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_joblib_dask_backend(client, tiny_checkpoint, data):
    X_train, y_train, X_query = data
    clf = GPICLClassifier(checkpoint=str(tiny_checkpoint), n_estimators=2, random_state=1).fit(X_train, y_train)
    with joblib.parallel_backend("dask"):
        parts = joblib.Parallel()(joblib.delayed(clf.predict)(chunk) for chunk in np.array_split(X_query, 4))
    np.testing.assert_array_equal(np.concatenate(parts), clf.predict(X_query))


def test_parallel_post_fit_on_a_dask_dataframe(client, tiny_checkpoint, data):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    X_train, y_train, X_query = data
    columns = [f"f{i}" for i in range(X_train.shape[1])]
    clf = ParallelPostFit(GPICLClassifier(checkpoint=str(tiny_checkpoint), n_estimators=2, random_state=2))
    clf.fit(pd.DataFrame(X_train, columns=columns), y_train)
    table = pd.DataFrame(X_query, columns=columns)
    pred = clf.predict(dd.from_pandas(table, npartitions=3)).compute()
    np.testing.assert_array_equal(pred, clf.estimator.predict(table))
