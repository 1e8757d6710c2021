"""Sequence length: final-prediction accuracy against the meta-training and the meta-test context length.

    python -m benchmarks.sequence_length                       # writes benchmarks/results/sequence_length.{md,json,png}
    python -m benchmarks.sequence_length --quick --out /tmp/sl        # smoke run (CI)

The paper (Kirsch et al., 2022, Fig. 14) meta-trains and meta-tests on sequences of several
lengths. Here one learner per ``--train-lengths`` entry is meta-trained on MNIST tasks (Alg. 1,
a fresh task per sequence, biased permutations for the first ``--biased-steps``) with the same
number of rows per step (``--rows-per-step``: the batch holds ``rows // length`` sequences,
so every run costs about the same), then meta-tested on fresh tasks of the MNIST and
FashionMNIST test splits at every ``--test-lengths`` entry: the accuracy of the predictions
at the last ``10`` positions, i.e. after about ``length`` examples. The learners have learned
positions (``max_len`` = the longest test length): positions past a learner's training length
were never trained, which is what a longer test than training measures here. Each training
length is trained from every ``--seeds`` entry (its own initialisation and task draws). Runs go
to ``--work-dir`` and are reused when their config is unchanged.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from benchmarks.common import command_line  # noqa: E402
from benchmarks.task_transition import (  # noqa: E402
    LEARNER_KWARGS,
    add_run_options,
    report,
    small_run_config,
    trained,
)
from training.config import TrainConfig  # noqa: E402
from training.data import load_dataset  # noqa: E402
from training.evaluate import meta_test  # noqa: E402

DATASETS = ("mnist", "fashion_mnist")
LAST = 10


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


# A run has left the loss plateau (ln 10 = 2.303 for 10 classes) at its first logged step after the
# biased phase with a training loss below this.
OFF_PLATEAU = 2.2


def run_config(length: int, seed: int, args: argparse.Namespace) -> TrainConfig:
    return small_run_config(
        args,
        f"train_length_{length}_s{seed}",
        seed=seed,
        task_seed=seed,
        length=length,
        learner="transformer",
        learner_kwargs={**LEARNER_KWARGS["transformer"], "max_len": max(ints(args.test_lengths))},
        batch_size=max(1, args.rows_per_step // length),
    )


def measure(cfg: TrainConfig, test_lengths: list[int], n_tasks: int, n_seqs: int) -> dict:
    """Meta-train (or resume) at ``cfg.length``; accuracy of the last positions at each test length."""
    learner, dev, log, summary = trained(cfg)
    off = [r["step"] for r in log if "loss" in r and r["step"] > (cfg.biased_steps or 0) and r["loss"] < OFF_PLATEAU]
    record = {"train_length": cfg.length, "seed": cfg.seed, "batch_size": cfg.batch_size, **summary}
    record["left_plateau"] = off[0] if off else None  # the step, or None: still on it
    for name in DATASETS:
        x, y = load_dataset(name, "test", size=cfg.image_size, channels=1, device=dev)
        record[name] = {}
        for length in test_lengths:
            correct = meta_test(learner, x, y, out_dim=x.shape[1], n_tasks=n_tasks, n_seqs=n_seqs, length=length)
            record[name][str(length)] = float(correct.mean(axis=(0, 1))[-LAST:].mean())
    return record


def markdown(records: list[dict], command: str, args: argparse.Namespace) -> str:
    tests = ints(args.test_lengths)
    lines = [
        f"`{command}`",
        "",
        f"MNIST at {args.image_size} x {args.image_size}, {args.rows_per_step} rows per step "
        f"(sequences per step = rows / training length), {args.steps} steps, biased permutations for the first "
        f"{args.biased_steps}; meta-test {args.n_tasks} fresh tasks x {args.n_seqs} sequences. Accuracy (%) of "
        f"the last {LAST} positions at each meta-test length. Left the plateau: the first logged step after the "
        f"biased phase with a training loss below {OFF_PLATEAU}.",
        "",
    ]
    for name in DATASETS:
        lines += [
            f"**{name}** (test split)",
            "",
            "| training length | seed | sequences per step | left the plateau (step) | final loss | "
            + " | ".join(f"test {t}" for t in tests)
            + " |",
            "|---:|---:|---:|---:|---:|" + "---:|" * len(tests),
        ]
        lines += [
            f"| {r['train_length']} | {r['seed']} | {r['batch_size']} | {r['left_plateau'] or 'not yet'} | "
            f"{r['final_loss']:.3f} | " + " | ".join(f"{100 * r[name][str(t)]:.1f}" for t in tests) + " |"
            for r in records
        ]
        lines.append("")
    return "\n".join(lines)


def figure(records: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, len(DATASETS), figsize=(5 * len(DATASETS), 3.8), sharey=True)
    for ax, name in zip(axes, DATASETS, strict=True):
        for i, length in enumerate(dict.fromkeys(r["train_length"] for r in records)):
            color = f"C{i}"
            for j, r in enumerate(r for r in records if r["train_length"] == length):  # one line per seed
                tests = sorted(int(t) for t in r[name])
                label = None if j else f"trained on {length}"
                ax.plot(tests, [100 * r[name][str(t)] for t in tests], "o-", color=color, alpha=0.8, label=label)
            ax.axvline(length, color=color, alpha=0.3, ls=":")
        ax.set_xscale("log")
        ax.set_title(f"{name} (test split)")
        ax.set_xlabel("meta-test sequence length")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"accuracy, last {LAST} positions (%)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sequence_length", description=__doc__.splitlines()[0])
    parser.add_argument("--train-lengths", default="100,300,1000")
    parser.add_argument("--test-lengths", default="100,300,1000")
    parser.add_argument("--rows-per-step", type=int, default=12800)
    parser.add_argument("--seeds", default="0", help="the seeds each training length is trained from, comma-separated")
    add_run_options(parser, sequences=False)  # the batch follows from --rows-per-step and each training length
    parser.set_defaults(work_dir="runs/sequence_length")
    parser.add_argument("--quick", action="store_true", help="smoke run: lengths 10 and 20, 10 steps, tiny meta-test")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_lengths, args.test_lengths, args.rows_per_step = "10,20", "10,20,40", 200
        args.steps, args.biased_steps, args.n_tasks, args.n_seqs = 10, 5, 2, 2
    if max(ints(args.train_lengths)) > max(ints(args.test_lengths)):
        parser.error("--test-lengths must reach the longest training length (it sets the learners' max_len)")
    command = command_line("benchmarks.sequence_length", argv)
    configs = [run_config(length, seed, args) for length in ints(args.train_lengths) for seed in ints(args.seeds)]
    n = len(configs)
    with ProcessPoolExecutor(args.jobs) as pool:
        records = list(pool.map(measure, configs, [ints(args.test_lengths)] * n, [args.n_tasks] * n, [args.n_seqs] * n))
    report("sequence_length", records, markdown(records, command, args), command, args, figure)


if __name__ == "__main__":
    main()
