"""Tables wider than the model's input slots: GPICLClassifier against LogisticRegression.

    python -m benchmarks.wide_tables            # writes benchmarks/results/wide_tables.md/.json
    python -m benchmarks.wide_tables --quick    # smoke run (CI): one small table, one draw

The default checkpoint reads 128 input columns; a wider table reaches it through a
Gaussian projection per ensemble member (``gpicl_sklearn.inputs``), which meta-training
showed it only for full images: its tables have at most 100 features. This measures what
that costs on synthetic tables (``make_classification``, 3 classes) of 300 to 2,000
features with few or many informative ones, at 100 and 500 training rows: ``--repeats``
random draws, 1,000 test rows each; LogisticRegression after a StandardScaler.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.common import RESULTS_DIR, command_line, write_outputs
from gpicl_sklearn import GPICLClassifier

# (features, informative) of each table
TABLES = ((300, 150), (1000, 10), (2000, 40))


def learners(checkpoints: list[str]) -> dict:
    """One GPICL learner per checkpoint (``GPICL (<checkpoint>)``), then LogisticRegression."""
    made = {f"GPICL ({c})": (lambda seed, c=c: GPICLClassifier(checkpoint=c, random_state=seed)) for c in checkpoints}
    made["LogisticRegression"] = lambda seed: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return made


def run(tables, sizes, repeats: int, n_test: int, checkpoints: list[str]) -> list[dict]:
    records = []
    for t, (features, informative) in enumerate(tables):
        X, y = make_classification(
            n_samples=3000, n_features=features, n_informative=informative, n_redundant=0, n_classes=3, random_state=t
        )
        for size in sizes:
            for repeat in range(repeats):
                order = np.random.default_rng(repeat).permutation(len(X))
                train, test = order[:size], order[size : size + n_test]
                for name, make in learners(checkpoints).items():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", ConvergenceWarning)
                        accuracy = make(repeat).fit(X[train], y[train]).score(X[test], y[test])
                    records.append(
                        dict(features=features, informative=informative, size=size, repeat=repeat, learner=name)
                        | {"accuracy": float(accuracy)}
                    )
    return records


def table(records: list[dict], command: str) -> str:
    names = list(dict.fromkeys(r["learner"] for r in records))
    lines = [
        f"`{command}`",
        "",
        "Mean accuracy over the draws (3 classes, chance 0.33):",
        "",
        "| features (informative) | rows | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]
    keys = sorted({(r["features"], r["informative"], r["size"]) for r in records})
    for features, informative, size in keys:
        cells = []
        for name in names:
            key = (features, informative, size, name)
            acc = [r["accuracy"] for r in records if (r["features"], r["informative"], r["size"], r["learner"]) == key]
            cells.append(f"{np.mean(acc):.3f}")
        lines.append(f"| {features} ({informative}) | {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.wide_tables", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: one 300-feature table, 100 rows, 1 draw")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoints", default="default", help="comma-separated checkpoints, one GPICL learner each")
    parser.add_argument("--out", help=f"folder for wide_tables.md/.json (default {RESULTS_DIR} unless --quick)")
    args = parser.parse_args(argv)
    command = command_line("benchmarks.wide_tables", argv)
    checkpoints = args.checkpoints.split(",")
    if args.quick:
        records = run(TABLES[:1], [100], 1, 200, checkpoints)
    else:
        records = run(TABLES, [100, 500], args.repeats, 1000, checkpoints)
    text = table(records, command)
    print(text)
    out = args.out or (None if args.quick else RESULTS_DIR)
    if out:
        write_outputs(Path(out), "wide_tables", text, {"command": command, "records": records})


if __name__ == "__main__":
    main()
