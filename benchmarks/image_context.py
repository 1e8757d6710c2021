"""Does reading more rows pay on images? GPICL checkpoints against LogisticRegression on raw pixels.

    python -m benchmarks.image_context                          # default vs paper-mnist vs LR
    python -m benchmarks.image_context --quick --out /tmp/ic    # smoke run (CI)

For each dataset (MNIST, FashionMNIST: raw 28 x 28 pixels, 784 features) and each training
size, ``--repeats`` stratified draws of training rows from the train split, each tested on
one fixed sample of ``--test-size`` rows of the test split. Learners: ``GPICLClassifier``
with each ``--checkpoints`` entry (defaults, ``n_estimators=8``; the raw pixels go in as
they are, the estimator standardises them) and ``StandardScaler + LogisticRegression``.
A checkpoint whose context is shorter than the training set reads it through its subset
ensemble. The table gives mean accuracy and, per learner, the gain from the smallest to the
largest size: the question is whether a member that reads 1,000 rows gains what a
classical learner gains from them.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.common import RESULTS_DIR, command_line, write_outputs
from gpicl_sklearn import GPICLClassifier
from training.data import load_split

LR = "LogisticRegression"


def learners(checkpoints: list[str]) -> dict:
    made = {f"GPICL ({c})": (lambda seed, c=c: GPICLClassifier(checkpoint=c, random_state=seed)) for c in checkpoints}
    made[LR] = lambda seed: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return made


def draw(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rows, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    return x[rows], y[rows]


def run(datasets, sizes, repeats, test_size, checkpoints) -> list[dict]:
    records = []
    for name in datasets:
        x_train, y_train = load_split(name, "train")
        x_test, y_test = load_split(name, "test")
        x_train = x_train.reshape(len(x_train), -1).astype(np.float64)
        x_test, y_test = draw(x_test.reshape(len(x_test), -1).astype(np.float64), y_test, test_size, 0)
        for n in sizes:
            for r in range(repeats):
                X, y = draw(x_train, y_train, n, seed=1000 * n + r)
                for label, make in learners(checkpoints).items():
                    start = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # context-subset and convergence warnings
                        acc = float((make(r).fit(X, y).predict(x_test) == y_test).mean())
                    seconds = time.perf_counter() - start
                    records.append(dict(dataset=name, n_train=n, repeat=r, learner=label, acc=acc, seconds=seconds))
                    print(f"{name} n={n} r={r} {label}: {acc:.3f} ({seconds:.1f} s)", flush=True)
    return records


def table(records: list[dict], command: str) -> str:
    names = list(dict.fromkeys(r["learner"] for r in records))
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    sizes = sorted({r["n_train"] for r in records})

    def mean(dataset, learner, n, key="acc"):
        return float(
            np.mean([r[key] for r in records if (r["dataset"], r["learner"], r["n_train"]) == (dataset, learner, n)])
        )

    head = "| dataset | learner | " + " | ".join(f"{n} rows" for n in sizes) + f" | gain {sizes[0]} -> {sizes[-1]} |"
    lines = [f"Made by: `{command}`", "", head, "|---" * (len(sizes) + 3) + "|"]
    for d in datasets:
        for name in names:
            accs = [mean(d, name, n) for n in sizes]
            cells = " | ".join(f"{100 * a:.1f}" for a in accs)
            lines.append(f"| {d} | {name} | {cells} | {100 * (accs[-1] - accs[0]):+.1f} |")
    lines += ["", "Accuracy (%) on the same test rows, mean over draws; fit + predict seconds per draw:", ""]
    lines.append("| learner | " + " | ".join(f"{n} rows" for n in sizes) + " |")
    lines.append("|---" * (len(sizes) + 1) + "|")
    for name in names:
        secs = [np.mean([mean(d, name, n, "seconds") for d in datasets]) for n in sizes]
        lines.append(f"| {name} | " + " | ".join(f"{s:.1f}" for s in secs) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default="default,paper-mnist")
    parser.add_argument("--datasets", default="mnist,fashion_mnist")
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="mnist, 20 and 40 rows, one draw, 50 test rows")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets, args.sizes, args.repeats, args.test_size = "mnist", "20,40", 1, 50
    sizes = [int(s) for s in args.sizes.split(",")]
    records = run(args.datasets.split(","), sizes, args.repeats, args.test_size, args.checkpoints.split(","))
    command = command_line("benchmarks.image_context", argv)
    markdown = "# Image tasks: does reading more rows pay?\n\n" + table(records, command)
    md, _ = write_outputs(args.out, "image_context", markdown, {"command": command, "records": records})
    print(markdown)
    print(f"wrote {md}")


if __name__ == "__main__":
    main()
