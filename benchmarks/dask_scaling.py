"""Prediction throughput of GPICLClassifier on a Dask cluster (Dask-ML ``ParallelPostFit``), 1 and 2 workers.

    python -m benchmarks.dask_scaling                 # 100,000 rows; writes benchmarks/results/dask_scaling.md
    python -m benchmarks.dask_scaling --quick         # smoke run: few rows, the tiny test model if given

The estimator is fitted once in this process on ``--train-rows`` rows; the queries are a
Dask array generated on the workers in chunks of ``--chunk`` rows (never materialised
here, as with data larger than one machine). ``ParallelPostFit`` ships the fitted
estimator to the workers pickled; the pickle holds no weights (each worker reads the
checkpoint once, from the package or the Hub), so a task costs one small message.

Rows/s is the median of ``--repeats`` timed ``predict(...).compute()`` runs after one
warm-up run (which loads the checkpoint on every worker), for

- this process without Dask, torch with 1 thread and with all threads (the baseline);
- a ``LocalCluster`` of 1 and of 2 worker processes, 1 thread each (distributed sets
  ``OMP_NUM_THREADS=1`` in its workers, so torch uses one core per worker).

Workers beyond the number of cores cannot add throughput: on a 2-core machine the 2-worker
cluster can at best match the in-process run with 2 torch threads.
"""

from __future__ import annotations

import argparse
import os
import pickle
from importlib.resources import as_file, files
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import make_classification

from benchmarks.common import RESULTS_DIR, command_line, write_outputs
from benchmarks.speed import _median_seconds
from gpicl_sklearn import GPICLClassifier
from gpicl_sklearn.checkpoint import BUNDLED, WEIGHTS_NAME


def main(argv: list[str] | None = None) -> dict:
    import dask
    import dask.array as da
    from dask_ml.wrappers import ParallelPostFit
    from distributed import Client, LocalCluster

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--rows", type=int, default=10_000, help="query rows")
    parser.add_argument("--chunk", type=int, default=1_250, help="rows per Dask partition")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--train-rows", type=int, default=500)
    parser.add_argument("--n-estimators", type=int, default=1)
    parser.add_argument("--workers", default="1,2", help="cluster sizes to measure")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--malloc-trim-threshold",
        type=int,
        default=1 << 30,
        help="also measure workers with this MALLOC_TRIM_THRESHOLD_ (distributed sets 65536); -1: only the default",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 rows, one repeat")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.malloc_trim_threshold < 0:
        args.malloc_trim_threshold = None
    if args.quick:
        args.rows, args.chunk, args.repeats, args.malloc_trim_threshold = 2_000, 500, 1, None

    X_train, y_train = make_classification(
        n_samples=args.train_rows,
        n_features=args.features,
        n_informative=min(args.features, 8),
        n_classes=args.classes,
        random_state=0,
    )
    estimator = GPICLClassifier(checkpoint=args.checkpoint, n_estimators=args.n_estimators, random_state=0)
    clf = ParallelPostFit(estimator).fit(X_train, y_train)
    # Generated on the workers, partition by partition: the client never holds the data.
    X = da.random.RandomState(1).standard_normal((args.rows, args.features), chunks=(args.chunk, args.features))
    pickled = len(pickle.dumps(clf))
    weight_bytes = _weights_size(args.checkpoint)

    load = os.getloadavg()
    rows = []
    X_local = X.compute(scheduler="sync")
    reference = clf.estimator.predict(X_local)
    threads = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        seconds = _median_seconds(lambda: clf.estimator.predict(X_local), args.repeats)
        rows.append({"setting": f"this process, no Dask, torch {n} thread{'s' * (n > 1)}", "seconds": seconds})
    torch.set_num_threads(threads)

    trims = [None] if args.malloc_trim_threshold is None else [None, args.malloc_trim_threshold]
    for trim in trims:
        for n_workers in [int(w) for w in args.workers.split(",")]:
            environ = {} if trim is None else {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": trim}
            with (
                dask.config.set(environ),
                LocalCluster(
                    n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
                ) as cluster,
                Client(cluster) as client,
            ):
                with dask.config.set(scheduler=client):
                    seconds = _median_seconds(lambda: clf.predict(X).compute(), args.repeats)
                    pred = clf.predict(X).compute()
                if not np.array_equal(pred, reference):
                    raise AssertionError("the cluster's predictions differ from this process's")
                torch_threads = sorted(set(client.run(torch.get_num_threads).values()))
            label = f"Dask LocalCluster, {n_workers} worker process{'es' * (n_workers > 1)} x 1 thread"
            label += ", distributed's MALLOC_TRIM_THRESHOLD_" if trim is None else f", MALLOC_TRIM_THRESHOLD_={trim:_}"
            rows.append(
                {
                    "setting": label,
                    "seconds": seconds,
                    "workers": n_workers,
                    "malloc_trim_threshold": trim,
                    "worker_torch_threads": torch_threads,
                }
            )

    command = command_line("benchmarks.dask_scaling", argv)
    lines = [
        f"`{command}`",
        "",
        f"CPU, {os.cpu_count()} cores, torch {torch.__version__}; checkpoint `{args.checkpoint}`, "
        f"n_estimators={args.n_estimators}, fitted on {args.train_rows} rows x {args.features} features "
        f"({args.classes} classes); {args.rows:,} query rows in partitions of {args.chunk:,}, generated on the "
        f"workers; median of {args.repeats} after a warm-up run. Load average before the run: "
        f"{load[0]:.1f} (other processes on the machine take cores from these measurements).",
        "",
        f"Pickled fitted `ParallelPostFit(GPICLClassifier)`: {pickled / 1e3:,.0f} kB "
        f"(the checkpoint's weights, not in it: {weight_bytes / 1e6:,.1f} MB).",
        "",
        "| setting | seconds | rows/s | vs 1 worker |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        trim = r.get("malloc_trim_threshold")
        one = [o for o in rows if o.get("workers") == 1 and o["malloc_trim_threshold"] == trim]
        ratio = f"{one[0]['seconds'] / r['seconds']:.2f}x" if "workers" in r and one else ""
        lines.append(f"| {r['setting']} | {r['seconds']:.2f} | {args.rows / r['seconds']:,.0f} | {ratio} |")
    lines += ["", "Predictions of every cluster equal this process's (checked)."]
    markdown = "\n".join(lines)
    print(markdown)
    data = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "pickle_bytes": pickled,
        "weights_bytes": weight_bytes,
        "cpu_count": os.cpu_count(),
        "load_average": load,
        "results": [
            {
                **r,
                "rows_per_s": args.rows / r["seconds"],
                "worker_torch_threads": sorted(r.get("worker_torch_threads", [])),
            }
            for r in rows
        ],
    }
    if not args.quick or args.out != RESULTS_DIR:
        write_outputs(args.out, "dask_scaling", markdown, data)
    return data


def _weights_size(checkpoint: str) -> int:
    """Size of the checkpoint's weights file (what the pickle does not carry)."""
    if checkpoint in BUNDLED:
        with as_file(files("gpicl_sklearn") / "checkpoints" / checkpoint / WEIGHTS_NAME) as path:
            return path.stat().st_size
    path = Path(checkpoint)
    return (path / WEIGHTS_NAME if path.is_dir() else path).stat().st_size


if __name__ == "__main__":
    main()
