"""CPU speed of GPICLClassifier, measured against LogisticRegression in the same run.

    python -m benchmarks.speed            # full: 99 context rows x 1,000 queries; 100..10,000 queries
    python -m benchmarks.speed --quick    # smoke run (CI): one repeat, few queries

Prints two markdown tables:

1. fit and predict of ``GPICLClassifier(n_estimators=1)`` with 99 training rows (a full
   context) and 1,000 queries, next to ``make_pipeline(StandardScaler(),
   LogisticRegression())`` on the same data, and their ratio;
2. predict time against the number of queries: the context is encoded once in ``fit``
   and every query costs the same, so it should grow linearly.

Data: scikit-learn's digits (64 features, 10 classes); queries beyond its 1,797 rows
repeat rows, which costs the same. Times are the median of ``--repeats`` runs after one
warm-up run (which loads the checkpoint into the in-process cache).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gpicl_sklearn import GPICLClassifier

N_CONTEXT = 99  # the default checkpoint's whole context (max_len 100 = 99 rows + the query)


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: caches, lazy initialisation, first-call allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _queries(X: np.ndarray, n: int) -> np.ndarray:
    return np.resize(X, (n, X.shape[1]))  # repeats rows when n > len(X)


def compare(X_fit, y_fit, X_query, repeats: int) -> list[str]:
    """Table 1: fit, predict and fit + predict of GPICL and LogisticRegression."""
    make = {
        "GPICL (n_estimators=1)": lambda: GPICLClassifier(n_estimators=1, device="cpu", random_state=0),
        "LogisticRegression": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
    }
    rows = {}
    for name, factory in make.items():
        fitted = factory().fit(X_fit, y_fit)
        fit = _median_seconds(lambda factory=factory: factory().fit(X_fit, y_fit), repeats)
        predict = _median_seconds(lambda fitted=fitted: fitted.predict(X_query), repeats)
        both = _median_seconds(lambda factory=factory: factory().fit(X_fit, y_fit).predict(X_query), repeats)
        rows[name] = (fit, predict, both)
    (g_fit, g_pred, g_both), (l_fit, l_pred, l_both) = rows.values()
    lines = [
        f"Fit on {len(X_fit)} rows, predict {len(X_query)} queries (median of {repeats}, milliseconds):",
        "",
        "| | " + " | ".join(rows) + " | ratio |",
        "|---|---:|---:|---:|",
        f"| fit | {g_fit * 1e3:.1f} | {l_fit * 1e3:.1f} | {g_fit / l_fit:.1f}x |",
        f"| predict | {g_pred * 1e3:.1f} | {l_pred * 1e3:.1f} | {g_pred / l_pred:.1f}x |",
        f"| fit + predict | {g_both * 1e3:.1f} | {l_both * 1e3:.1f} | **{g_both / l_both:.1f}x** (target <= 3x) |",
    ]
    return lines


def scaling(X_fit, y_fit, X, n_queries: list[int], repeats: int) -> list[str]:
    """Table 2: GPICL predict time against the number of queries."""
    clf = GPICLClassifier(n_estimators=1, device="cpu", random_state=0).fit(X_fit, y_fit)
    lines = [
        "Predict time against the number of queries (GPICL, n_estimators=1, context encoded once in fit):",
        "",
        "| queries | predict (ms) | per 1,000 queries (ms) |",
        "|---:|---:|---:|",
    ]
    for n in n_queries:
        queries = _queries(X, n)
        seconds = _median_seconds(lambda queries=queries: clf.predict(queries), repeats)
        lines.append(f"| {n:,} | {seconds * 1e3:.1f} | {seconds * 1e3 / n * 1000:.1f} |")
    return lines


def run(quick: bool = False, repeats: int | None = None) -> str:
    repeats = repeats or (1 if quick else 5)
    X, y = load_digits(return_X_y=True)
    X_fit, y_fit = X[:N_CONTEXT], y[:N_CONTEXT]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        table1 = compare(X_fit, y_fit, _queries(X[N_CONTEXT:], 100 if quick else 1000), repeats)
        table2 = scaling(X_fit, y_fit, X[N_CONTEXT:], [10, 100] if quick else [100, 1000, 10_000], repeats)
    header = f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads" + (" (--quick)" if quick else "")
    return "\n".join([header, "", *table1, "", *table2])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: one repeat, few queries")
    parser.add_argument("--repeats", type=int, help="timed runs per measurement (default 5, or 1 with --quick)")
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = parser.parse_args(argv)
    text = run(quick=args.quick, repeats=args.repeats)
    print(text)
    if args.out:
        args.out.write_text(f"`python -m benchmarks.speed --out {args.out}`\n\n{text}\n")


if __name__ == "__main__":
    main()
