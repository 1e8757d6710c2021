"""More classes than label slots: GPICL's output code against LogisticRegression.

    python -m benchmarks.many_classes            # writes benchmarks/results/many_classes.md
    python -m benchmarks.many_classes --quick    # smoke run: fewer rows

Problems (the default checkpoint has 10 label slots, so every one needs the output code of
:func:`gpicl_sklearn.preprocessing.draw_output_code`):

* ``mnist+fashion (20)``: the test splits of MNIST and FashionMNIST pooled, FashionMNIST's
  labels shifted to 10..19 (784 pixel features); read from ``$GPICL_DATA_ROOT`` or
  ``../shared/datasets``.
* ``make_classification (50)`` and ``(100)``: scikit-learn's synthetic problem with 20
  informative features and one cluster per class.

Each: ``--train`` training rows (at most the default model's 1,023-row context) and
``--test`` test rows, stratified, 3 seeds; accuracy mean ± std.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.common import command_line
from gpicl_sklearn import GPICLClassifier

RESULTS = Path(__file__).parent / "results" / "many_classes.md"


def _data_root() -> Path:
    return Path(os.environ.get("GPICL_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "datasets"))


def mnist_fashion() -> tuple[np.ndarray, np.ndarray]:
    parts = []
    for offset, name in ((0, "mnist"), (10, "fashion_mnist")):
        with np.load(_data_root() / name / "test.npz") as f:
            parts.append((f["x"].reshape(len(f["x"]), -1).astype(np.float64) / 255.0, f["y"].astype(int) + offset))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def synthetic(n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    return make_classification(
        n_samples=20_000,
        n_features=30,
        n_informative=20,
        n_redundant=5,
        n_classes=n_classes,
        n_clusters_per_class=1,
        class_sep=2.0,
        random_state=0,
    )


def evaluate(X, y, n_train: int, n_test: int, seeds: int, n_estimators: int) -> dict:
    scores = {"GPICL": [], "LogisticRegression": []}
    seconds = {"GPICL": 0.0, "LogisticRegression": 0.0}
    for seed in range(seeds):
        X_tr, X_te, y_tr, y_te = train_test_split(
            X, y, train_size=n_train, test_size=n_test, stratify=y, random_state=seed
        )
        models = {
            "GPICL": GPICLClassifier(n_estimators=n_estimators, random_state=seed),
            "LogisticRegression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        }
        for name, model in models.items():
            start = time.perf_counter()
            scores[name].append(model.fit(X_tr, y_tr).score(X_te, y_te))
            seconds[name] += time.perf_counter() - start
    return {name: (np.mean(s), np.std(s), seconds[name] / seeds) for name, s in scores.items()}


def run(quick: bool, n_train: int, n_test: int, seeds: int, n_estimators: int) -> str:
    problems = {"mnist+fashion (20)": mnist_fashion, "make_classification (50)": lambda: synthetic(50)}
    if not quick:
        problems["make_classification (100)"] = lambda: synthetic(100)
    lines = [
        f"{n_train} training rows, {n_test} test rows, {seeds} seeds; GPICL: default checkpoint (10 label slots), "
        f"n_estimators={n_estimators} (members: n_estimators x ceil(K / 10) for K classes), output code; "
        "accuracy mean ± std, seconds per fit + score:",
        "",
        "| problem | GPICL | LogisticRegression | GPICL s | LR s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, load in problems.items():
        X, y = load()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            r = evaluate(X, y, n_train, n_test, seeds, n_estimators)
        g, lr = r["GPICL"], r["LogisticRegression"]
        lines.append(f"| {name} | {g[0]:.3f} ± {g[1]:.3f} | {lr[0]:.3f} ± {lr[1]:.3f} | {g[2]:.1f} | {lr[2]:.1f} |")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.many_classes", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 rows, 1 seed, 2 problems")
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-estimators", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help=f"markdown file (default {RESULTS} unless --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.train, args.test, args.seeds = 200, 200, 1
    text = run(args.quick, args.train, args.test, args.seeds, args.n_estimators)
    print(text)
    out = args.out or (None if args.quick else RESULTS)
    if out:
        command = command_line("benchmarks.many_classes", argv)
        out.write_text(f"`{command}`\n\n{text}\n")


if __name__ == "__main__":
    main()
