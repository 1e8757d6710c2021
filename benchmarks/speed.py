"""CPU speed of GPICLClassifier, measured against LogisticRegression in the same run.

    python -m benchmarks.speed            # full: 100 context rows x 1,000 queries; 100..10,000 queries
    python -m benchmarks.speed --quick    # smoke run (CI): one repeat, few queries
    python -m benchmarks.speed --device cuda  # also: predict 100,000 rows of 784 features on the GPU

Prints three or four markdown tables:

1. fit and predict of a one-member ``GPICLClassifier`` (:data:`ONE_MEMBER`) with 100 training rows and
   1,000 queries, next to ``make_pipeline(StandardScaler(),
   LogisticRegression())`` on the same data, and their ratio;
2. predict time against the number of queries: the context is encoded once in ``fit``
   and every query costs the same, so it should grow linearly;
3. the arithmetic of the default checkpoint for those 1,000 queries, the rate ``predict``
   reached, and one-thread float32 and bfloat16 matrix products' rates on the same core:
   what the target's budget would need at this core's best;
4. with ``--device cuda`` (or ``--device cpu --device-rows N`` to check the code path):
   fit on 100 rows of 784 features (MNIST-sized), then predict ``--device-rows`` rows
   (default 100,000) on that device with ``batch_size=--device-batch``.

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

from benchmarks.common import command_line, thread_limit
from gpicl_sklearn import GPICLClassifier, load_checkpoint

N_CONTEXT = 100  # training rows of the measurement (the default model reads up to 1,023)
# The smallest estimator: one member reading the columns as they are, whose arithmetic table 3
# counts. The defaults run 8 members per view and two views, 16 times this work.
ONE_MEMBER = {"n_estimators": 1, "normal_scores": False}


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
        "GPICL (one member)": lambda: GPICLClassifier(**ONE_MEMBER, device="cpu", random_state=0),
        "LogisticRegression": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
    }
    rows = {}
    for name, factory in make.items():
        fitted = factory().fit(X_fit, y_fit)
        # Default arguments bind this iteration's model (closures would see the loop's last).
        fit = _median_seconds(lambda make=factory: make().fit(X_fit, y_fit), repeats)
        predict = _median_seconds(lambda model=fitted: model.predict(X_query), repeats)
        both = _median_seconds(lambda make=factory: make().fit(X_fit, y_fit).predict(X_query), repeats)
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
    return lines, g_pred, 3 * l_both


def scaling(X_fit, y_fit, X, n_queries: list[int], repeats: int) -> list[str]:
    """Table 2: GPICL predict time against the number of queries."""
    clf = GPICLClassifier(**ONE_MEMBER, device="cpu", random_state=0).fit(X_fit, y_fit)
    lines = [
        "Predict time against the number of queries (GPICL, one member, context encoded once in fit):",
        "",
        "| queries | predict (ms) | per 1,000 queries (ms) |",
        "|---:|---:|---:|",
    ]
    for n in n_queries:
        queries = _queries(X, n)
        seconds = _median_seconds(lambda batch=queries: clf.predict(batch), repeats)
        lines.append(f"| {n:,} | {seconds * 1e3:.1f} | {seconds * 1e3 / n * 1000:.1f} |")
    return lines


def model_flops_per_query(cfg, n_context: int) -> float:
    """Floating-point operations (2 per multiply-add) of one query over ``n_context`` encoded rows.

    Per block: the query's q/k/v and output projections and its MLP (``4 + 2 r`` times
    ``d_model^2`` multiply-adds with MLP ratio ``r``), and its attention over ``n_context + 1``
    keys and values (``2 (n + 1) H d_head``); plus the input layer and the head.
    """
    d, hd = cfg.d_model, cfg.n_heads * cfg.head_dim
    block = 3 * d * hd + hd * d + 2 * cfg.mlp_ratio * d * d + 2 * (n_context + 1) * hd
    return 2.0 * (cfg.n_layers * block + cfg.input_dim * d + d * cfg.num_classes)


def matmul_gflops(dtype: torch.dtype = torch.float32, size: int = 1024, repeats: int = 5) -> float:
    """One thread's rate on a large matrix product in ``dtype``: what this core can do at best."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    with thread_limit(1):
        seconds = _median_seconds(lambda: a @ b, repeats)
    return 2 * size**3 / seconds / 1e9


def compute_floor(predict_seconds: float, n_queries: int, budget_seconds: float) -> list[str]:
    """Table: the model's arithmetic, the rate predict reached, and the best this core could do.

    ``budget_seconds``: what the speed target allows for fit + predict (3x LogisticRegression's).
    The model runs in float32; bfloat16 (half the bytes, a faster kernel where the core has
    one) bounds what a lower precision could buy.
    """
    cfg = load_checkpoint("default").model.cfg
    flops = model_flops_per_query(cfg, N_CONTEXT) * n_queries
    peaks = {name: matmul_gflops(dtype) for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}
    return [
        f"Arithmetic of the default checkpoint ({cfg.n_layers} x {cfg.d_model}) for {n_queries:,} queries "
        f"over {N_CONTEXT} context rows, against this core (matrix products of 1,024 x 1,024, one thread):",
        "",
        "| GFLOP | predict rate (GFLOP/s) | float32 peak (GFLOP/s) | predict at that peak (s) | "
        "bfloat16 peak (GFLOP/s) | predict at that peak (s) | target budget for fit + predict (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {flops / 1e9:.2f} | {flops / predict_seconds / 1e9:.1f} | "
        + " | ".join(f"{peak:.1f} | {flops / peak / 1e9:.3f}" for peak in peaks.values())
        + f" | {budget_seconds:.4f} |",
    ]


def device_row(device: str, n_rows: int, batch_size: int, repeats: int) -> list[str]:
    """Table 3: fit on 100 rows of 784 features, predict ``n_rows`` rows on ``device``."""
    rng = np.random.default_rng(0)
    X_fit = rng.random((N_CONTEXT, 784), dtype=np.float32).astype(np.float64)
    y_fit = np.arange(N_CONTEXT) % 10
    X = rng.random((n_rows, 784), dtype=np.float32).astype(np.float64)
    clf = GPICLClassifier(**ONE_MEMBER, device=device, batch_size=batch_size, random_state=0, n_threads=None)
    clf.fit(X_fit, y_fit)

    def predict():
        clf.predict(X)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    seconds = _median_seconds(predict, repeats)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    return [
        f"Predict {n_rows:,} rows of 784 features on {device} ({name}), one member, batch_size={batch_size}:",
        "",
        "| rows | predict (s) | rows/s |",
        "|---:|---:|---:|",
        f"| {n_rows:,} | {seconds:.3f} | {n_rows / seconds:,.0f} |",
    ]


def run(
    quick: bool = False,
    repeats: int | None = None,
    device: str | None = None,
    device_rows: int = 100_000,
    device_batch: int = 8192,
) -> str:
    repeats = repeats or (1 if quick else 5)
    X, y = load_digits(return_X_y=True)
    X_fit, y_fit = X[:N_CONTEXT], y[:N_CONTEXT]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        n_queries = 100 if quick else 1000
        table1, predict_seconds, budget = compare(X_fit, y_fit, _queries(X[N_CONTEXT:], n_queries), repeats)
        table2 = scaling(X_fit, y_fit, X[N_CONTEXT:], [10, 100] if quick else [100, 1000, 10_000], repeats)
    header = f"CPU, torch {torch.__version__}, GPICL n_threads=1 (the default)" + (" (--quick)" if quick else "")
    floor = compute_floor(predict_seconds, n_queries, budget)
    tables = [header, "", *table1, "", *table2, "", *floor]
    if device:
        tables += ["", *device_row(device, device_rows, device_batch, repeats)]
    return "\n".join(tables)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: one repeat, few queries")
    parser.add_argument("--repeats", type=int, help="timed runs per measurement (default 5, or 1 with --quick)")
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    parser.add_argument("--device", help="also time a large predict on this device (cuda, cuda:1, cpu)")
    parser.add_argument("--device-rows", type=int, default=100_000, help="rows of that predict (default 100,000)")
    parser.add_argument("--device-batch", type=int, default=8192, help="batch_size of that predict")
    args = parser.parse_args(argv)
    text = run(args.quick, args.repeats, args.device, args.device_rows, args.device_batch)
    print(text)
    if args.out:
        command = command_line("benchmarks.speed", argv)
        args.out.write_text(f"`{command}`\n\n{text}\n")


if __name__ == "__main__":
    main()
