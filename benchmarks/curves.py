"""Accuracy against the number of examples seen, per method and dataset (paper Fig. 3 style).

    python -m benchmarks.curves                                   # reads benchmarks/results/table2.json
    python -m benchmarks.curves --table2 /tmp/t2/table2.json --out /tmp/t2

Reads the per-position accuracies that ``benchmarks.table2`` stored (prediction ``i``
is made after ``i - 1`` examples of the sequence) and writes ``curves.png`` (one panel
per dataset, 95% CI shaded, the paper's final accuracy as a marker at the last
position) and ``curves.json`` (the plotted series).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from benchmarks.common import DATASET_TITLES, RESULTS_DIR  # noqa: E402


def series(table2: dict) -> dict[str, dict[str, dict]]:
    """``{dataset: {method: {"prediction", "acc", "ci95", "paper_final"}}}`` for evaluated cells."""
    out: dict[str, dict[str, dict]] = {}
    for dataset in table2["protocol"]["datasets"]:
        for method, r in table2["results"].items():
            cell = r.get("datasets", {}).get(dataset) if r["status"] == "ok" else None
            if cell is None or cell["status"] != "ok":
                continue
            paper = (r["paper"] or {}).get(dataset)
            out.setdefault(dataset, {})[method] = {
                "prediction": list(range(1, len(cell["acc"]) + 1)),
                "acc": cell["acc"],
                "ci95": cell["ci95"],
                "paper_final": None if paper is None else paper / 100,
            }
    return out


def plot(curves: dict[str, dict[str, dict]], path: Path) -> None:
    methods_in_order = list(dict.fromkeys(m for per_dataset in curves.values() for m in per_dataset))
    colors = {m: f"C{i}" for i, m in enumerate(methods_in_order)}  # one colour per method in every panel
    n = max(len(curves), 1)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, (dataset, methods) in zip(axes.flat, curves.items(), strict=False):
        for method, s in methods.items():
            color = colors[method]
            lo = [a - c for a, c in zip(s["acc"], s["ci95"], strict=True)]
            hi = [a + c for a, c in zip(s["acc"], s["ci95"], strict=True)]
            ax.plot(s["prediction"], s["acc"], color=color, label=method)
            ax.fill_between(s["prediction"], lo, hi, color=color, alpha=0.2, linewidth=0)
            if s["paper_final"] is not None:
                ax.plot([s["prediction"][-1]], [s["paper_final"]], marker="*", color=color, markersize=10)
        ax.set_title(DATASET_TITLES.get(dataset, dataset))
        ax.set_xlabel("prediction i (after i - 1 examples)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(curves) :]:
        ax.axis("off")
    fig.suptitle("Meta-test accuracy vs examples seen (shaded: 95% CI; star: paper's final accuracy)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.curves", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--table2", type=Path, default=RESULTS_DIR / "table2.json", help="output of benchmarks.table2")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if not args.table2.is_file():
        parser.error(f"{args.table2} does not exist: run `python -m benchmarks.table2` first")
    curves = series(json.loads(args.table2.read_text()))
    if not curves:
        parser.error(f"{args.table2} holds no evaluated (method, dataset) cell to plot")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curves, args.out / "curves.png")
    (args.out / "curves.json").write_text(json.dumps({"source": str(args.table2), "curves": curves}, indent=1) + "\n")
    print(f"wrote {args.out / 'curves.png'} and {args.out / 'curves.json'}")
    return curves


if __name__ == "__main__":
    main()
