"""Bimodal solutions at the transition: the final training loss of many seeds for K near it.

    python -m benchmarks.bimodality                        # writes benchmarks/results/bimodality.{md,json,png}
    python -m benchmarks.bimodality --quick --out /tmp/bm   # smoke run (CI)

The paper's Fig. 5 (Kirsch et al., 2022): near the number of tasks ``K`` at which the
Transformer turns from memorising its tasks to learning-to-learn, runs that differ only in
their seed end in one of two solutions, a high final loss (memorisation or task
identification) or a low one (a general learner), and rarely in between. For each ``K`` this
trains ``--seeds`` runs of :mod:`benchmarks.task_transition`'s Transformer (each seed draws its
own initialisation and its own ``K`` tasks) and meta-tests them the same way: seen tasks,
unseen tasks, FashionMNIST. A run counts as a general learner when its unseen-task accuracy
is at least ``--general-at`` (chance is 10%). Runs go to ``--work-dir`` and are reused when
their config is unchanged, so the seeds already trained by ``task_transition`` are not
trained again. Each run is a process of one CPU thread, ``--jobs`` at once: give them CPU
cores, not one GPU (16 such processes sharing an H200 ran at 2.8 steps/s each, a CPU core
at 4.4; ``docs/paper_findings.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from benchmarks.common import command_line  # noqa: E402
from benchmarks.task_transition import (  # noqa: E402
    add_run_options,
    k_label,
    measure_all,
    parse_tasks,
    report,
    run_config,
)


def by_k(records: list[dict]) -> dict[int, list[dict]]:
    """The records of each ``K``, in increasing ``K``."""
    return {k: [r for r in records if r["tasks"] == k] for k in sorted({r["tasks"] for r in records})}


def markdown(records: list[dict], command: str, args: argparse.Namespace) -> str:
    lines = [
        f"`{command}`",
        "",
        f"Transformer ({records[0]['parameters']:,} parameters), MNIST at {args.image_size} x {args.image_size}, "
        f"{args.steps} steps of {args.batch_size} sequences of {args.length}, biased permutations for the first "
        f"{args.biased_steps} steps; meta-test {args.n_tasks} tasks x {args.n_seqs} sequences, accuracy of the "
        f"last 10 positions (%). General learner: unseen accuracy >= {100 * args.general_at:.0f}%.",
        "",
        "| K | seeds | general learners | final loss, each seed (sorted) | unseen accuracy, each seed (sorted) |",
        "|---:|---:|---:|---|---|",
    ]
    for k, rows in by_k(records).items():
        losses = " / ".join(f"{r['final_loss']:.3f}" for r in sorted(rows, key=lambda r: r["final_loss"]))
        unseen = " / ".join(f"{100 * a:.1f}" for a in sorted(r["unseen"]["acc"] for r in rows))
        general = sum(r["unseen"]["acc"] >= args.general_at for r in rows)
        lines.append(f"| {k_label(k)} | {len(rows)} | {general} | {losses} | {unseen} |")
    lines += [
        "",
        "Per seed; the gains are the last positions' accuracy minus the first prediction's (points): a gain on",
        "seen tasks only is task identification, on unseen tasks too it is learning in context.",
        "",
        "| K | seed | final loss | seen | seen gain | unseen | unseen gain | fashion_mnist |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        seen, unseen = r["seen"], r["unseen"]
        lines.append(
            f"| {k_label(r['tasks'])} | {r['seed']} | {r['final_loss']:.3f} | {100 * seen['acc']:.1f} | "
            f"{100 * seen['improvement']:+.1f} | {100 * unseen['acc']:.1f} | {100 * unseen['improvement']:+.1f} | "
            f"{100 * r['fashion_mnist']['acc']:.1f} |"
        )
    return "\n".join(lines)


def figure(records: list[dict], path: Path) -> None:
    """Left: final loss of every seed against K (the paper's Fig. 5); right: unseen accuracy against final loss."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    jitter = np.random.default_rng(0)
    for i, (k, rows) in enumerate(by_k(records).items()):
        loss = [r["final_loss"] for r in rows]
        left.plot(np.log2(k) + jitter.uniform(-0.08, 0.08, len(rows)), loss, "o", color=f"C{i}", alpha=0.7)
        right.plot(loss, [100 * r["unseen"]["acc"] for r in rows], "o", color=f"C{i}", label=f"K = {k_label(k)}")
    right.legend()
    left.set_xlabel("log2 K (meta-training tasks)")
    left.set_ylabel("final training loss")
    right.set_xlabel("final training loss")
    right.set_ylabel("unseen-task accuracy (%)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bimodality", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="4096,8192", help="K values near the transition, comma-separated")
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0 .. N-1 for every K")
    parser.add_argument("--general-at", type=float, default=0.3, help="unseen accuracy of a general learner")
    add_run_options(parser)
    parser.add_argument("--quick", action="store_true", help="smoke run: K = 4, 2 seeds, 20 steps, tiny meta-test")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.seeds, args.steps, args.length, args.biased_steps = "4", 2, 20, 20, 10
        args.n_tasks, args.n_seqs = 2, 2
    tasks = parse_tasks(args.tasks)
    if None in tasks:
        parser.error("--tasks: K = infinity has no seen tasks and no transition; give finite K")
    command = command_line("benchmarks.bimodality", argv)
    configs = [run_config("transformer", k, seed, args) for k in tasks for seed in range(args.seeds)]
    records = measure_all(configs, args)
    report("bimodality", records, markdown(records, command, args), command, args, figure)


if __name__ == "__main__":
    main()
