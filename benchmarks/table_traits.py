"""What the tables where GPICL trails a forest have in common: traits beside the accuracy gap.

    python -m benchmarks.table_traits --out benchmarks/results/table_traits.md   # 1,000-row draws of tabular.json
    python -m benchmarks.table_traits --size 500 --learner "GPICL (paper-mnist)"

For every table that :mod:`benchmarks.tabular` ran at ``--size`` training rows, the gap
``--learner`` minus RandomForest (mean accuracy over the draws, points, read from
``--results``) beside traits a task prior could draw: rows, columns, categorical columns,
classes, the majority class's share, and how concentrated the label's signal is: a
RandomForest fitted on the first draw's training rows (ordinal-encoded, as in the benchmark)
gives importances :math:`w_j`; *effective columns* :math:`1 / \\sum_j w_j^2` (1 when one
column carries everything, :math:`d` when all :math:`d` share alike) and the top three's
share. The last line is the Spearman correlation of each trait with the gap over the tables.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline

from benchmarks.common import RESULTS_DIR, command_line
from benchmarks.tabular import (
    draw_seed,
    find_suite,
    load_table,
    ordinal_preprocessor,
    per_table,
    read_suite,
    stratified_draw,
)

TRAITS = ("rows", "columns", "categorical", "classes", "majority", "effective columns", "top-3 share")


def traits(name: str, suite: dict, size: int, seed: int, max_test: int) -> dict[str, float]:
    X, y = load_table(name, suite)
    counts = np.unique(y, return_counts=True)[1]
    train, _ = stratified_draw(y, size, max_test, draw_seed(seed, name, size, 0))
    forest = make_pipeline(ordinal_preprocessor(), RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1))
    w = np.sort(forest.fit(X.iloc[train], y[train])[-1].feature_importances_)[::-1]
    categorical = X.select_dtypes(exclude="number").shape[1]
    return {
        "rows": len(y),
        "columns": X.shape[1],
        "categorical": categorical,
        "classes": len(counts),
        "majority": counts.max() / counts.sum(),
        "effective columns": 1 / np.sum(w**2),
        "top-3 share": w[:3].sum(),
    }


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR / "tabular.json")
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--learner", default="GPICL (default)")
    parser.add_argument("--baseline", default="RandomForest")
    parser.add_argument("--out", type=Path, help="markdown file to write (default: print only)")
    args = parser.parse_args(argv)
    data = json.loads(args.results.read_text())
    cells = per_table(data["rows"])  # the benchmark's own means: None where a draw failed

    def mean_accuracy(learner: str) -> dict[str, float]:
        return {
            t: c["accuracy"]
            for (lrn, n, t), c in cells.items()
            if (lrn, n) == (learner, args.size) and c["accuracy"] is not None
        }

    ours, theirs = mean_accuracy(args.learner), mean_accuracy(args.baseline)
    tables = sorted(set(ours) & set(theirs), key=lambda t: ours[t] - theirs[t])
    if not tables:
        raise SystemExit(
            f"{args.results} has no table with both {args.learner!r} and {args.baseline!r} at {args.size} rows"
        )
    suite, meta = read_suite(find_suite()), data["meta"]
    gaps = [100 * (ours[t] - theirs[t]) for t in tables]
    rows = [traits(t, suite, args.size, meta["seed"], meta["max_test"]) for t in tables]
    lines = [
        f"`{command_line('benchmarks.table_traits', argv)}`",
        "",
        f"{args.learner} minus {args.baseline} at {args.size} training rows (points, mean over the draws of "
        f"`{os.path.relpath(args.results)}`), beside each table's traits:",
        "",
        "| table | gap | " + " | ".join(TRAITS) + " |",
        "|---|---:|" + "---:|" * len(TRAITS),
    ]
    for t, gap, r in zip(tables, gaps, rows, strict=True):
        cells = [f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in TRAITS]
        lines.append(f"| {t} | {gap:+.1f} | " + " | ".join(cells) + " |")
    rho = [spearmanr([r[k] for r in rows], gaps).statistic for k in TRAITS]
    lines.append("| Spearman with the gap | | " + " | ".join(f"{v:+.2f}" for v in rho) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()
