"""GPICL against classical learners on held-out draws of its own meta-training prior, per family.

    python -m benchmarks.prior_baselines                       # default checkpoint, CPU
    python -m benchmarks.prior_baselines --quick --checkpoint PATH    # smoke run (CI)

Where GPICL trails a classical learner on real tables, two causes read differently: the
model has not learnt its prior's tasks as well as they can be learnt (more capacity or
training is the lever), or the real tables hold structure the prior does not draw (the prior
is). This scores both on the prior itself: held-out batches of
:func:`training.prior_eval.held_out_batches` (a seed no training run uses), each sequence
split into its first ``n`` rows as the context and the rest as queries; GPICL reads the
context once (KV cache) and predicts every query over the task's used label slots;
RandomForest and LogisticRegression (scaled) are fitted per sequence on the same ``n`` rows,
on the same prepared inputs. Accuracy per family and context size; by construction the
priors' columns are already numeric and scaled, so the classical learners see what GPICL sees.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.common import command_line, thread_limit
from gpicl_sklearn.checkpoint import load_checkpoint
from training.prior_eval import held_out_batches
from training.priors.mixture import PriorConfig

CLASSICAL = {
    "RandomForest": lambda: RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1),
    "LogisticRegression": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
}


@torch.no_grad()
def gpicl_hits(model, x: torch.Tensor, y: torch.Tensor, used: torch.Tensor, n: int) -> np.ndarray:
    """Correctness ``(B, L - n)`` of the queries ``x[:, n:]`` over the context ``x[:, :n]``."""
    cache = model.encode_context(model.embed_x(x[:, :n]), y[:, :n])
    logits = model.predict_logits(cache, model.embed_x(x[:, n:])).masked_fill(~used[:, None, :], float("-inf"))
    return (logits.argmax(-1) == y[:, n:]).numpy()


def classical_hits(make, x: np.ndarray, y: np.ndarray, n: int) -> np.ndarray:
    """The same for a scikit-learn learner fitted on each sequence's context alone."""
    hits = np.empty((len(x), x.shape[1] - n), dtype=bool)
    for b in range(len(x)):
        ctx_y = y[b, :n]
        if len(np.unique(ctx_y)) == 1:  # one class in the context: it is the only answer
            pred = np.full(x.shape[1] - n, ctx_y[0])
        else:
            pred = make().fit(x[b, :n], ctx_y).predict(x[b, n:])
        hits[b] = pred == y[b, n:]
    return hits


def run(args: argparse.Namespace) -> list[dict]:
    model = load_checkpoint(args.checkpoint).model.eval()
    cfg = model.cfg
    batches, families = held_out_batches(
        PriorConfig(**args.prior), args.batches, args.batch_size, cfg.max_len, cfg.input_dim, cfg.num_classes
    )
    fams = np.tile(families, len(batches))
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    if args.by_classes:  # each family split by its tasks' number of classes: binary or more
        binary = torch.cat([b[2] for b in batches]).sum(1).numpy() == 2
        fams = np.char.add(fams.astype(str), np.where(binary, ", 2 classes", ", 3+ classes"))
    records = []
    for n in args.sizes:
        start = time.perf_counter()
        hits = {"GPICL": np.concatenate([gpicl_hits(model, *b, n) for b in batches])}
        hits |= {name: classical_hits(make, x.numpy(), y.numpy(), n) for name, make in CLASSICAL.items()}
        for family in dict.fromkeys(fams):
            rows = fams == family
            stats = {k: float(h[rows].mean()) for k, h in hits.items()}
            records.append({"rows": n, "family": family, "sequences": int(rows.sum()), **stats})
        print(f"{n} context rows: {time.perf_counter() - start:.0f} s", flush=True)
    return records


def markdown(records: list[dict], command: str, args: argparse.Namespace) -> str:
    learners = ["GPICL", *CLASSICAL]
    lines = [
        f"`{command}`",
        "",
        f"Checkpoint `{args.checkpoint}`; {args.batches} held-out prior batches x {args.batch_size} sequences "
        f"(PriorConfig {json.dumps(args.prior)}, images from the test splits); the first n rows of each "
        f"sequence are the context, the rest the queries. Accuracy of the queries:",
        "",
        "| context rows | family | sequences | " + " | ".join(learners) + " | GPICL − RandomForest (points) |",
        "|---:|---|---:|" + "---:|" * (len(learners) + 1),
    ]
    for r in records:
        cells = " | ".join(f"{r[k]:.3f}" for k in learners)
        gap = 100 * (r["GPICL"] - r["RandomForest"])
        lines.append(f"| {r['rows']} | {r['family']} | {r['sequences']} | {cells} | {gap:+.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prior_baselines", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--prior", type=json.loads, default={}, help="PriorConfig fields as JSON (default: {})")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[100, 500, 1000])
    parser.add_argument("--by-classes", action="store_true", help="split each family into binary and 3+ class tasks")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="markdown file to write (default: print only)")
    parser.add_argument("--quick", action="store_true", help="one batch of 8 sequences, context sizes 10 and 20")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.batch_size, args.sizes = 1, 8, [10, 20]
    command = command_line("benchmarks.prior_baselines", argv)
    with thread_limit(args.threads):
        records = run(args)
    text = markdown(records, command, args)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
