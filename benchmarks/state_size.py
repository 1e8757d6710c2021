"""State size against parameter count: what bounds a meta-learned learner's accuracy.

    python -m benchmarks.state_size --steps 20000 --jobs 12   # on a GPU; writes benchmarks/results/state_size.*
    python -m benchmarks.state_size --quick --out /tmp/ss             # smoke run (CI)

The paper (Kirsch et al., 2022, Fig. 6, 13) finds that the accuracy of a meta-learned learner
follows the size of the state that determines its next prediction, not its number of
parameters. Each entry of ``GRID``, a learner of :mod:`training.learners` at one size, is
meta-trained on MNIST tasks alike (Alg. 1, a fresh task per sequence, biased permutations for
the first ``--biased-steps``) and meta-tested on fresh tasks of the MNIST and FashionMNIST test
splits (accuracy of the last 10 positions). The state a prediction reads:

* LSTM: its hidden and cell vectors, ``2 * hidden_size * num_layers``;
* outer-product LSTM: those and the fast-weight matrix, ``2 * hidden_size + key_size * value_size``;
* VSML: a hidden and a cell vector per weight, ``2 * input_dim * num_classes * state_size``;
* Transformer: its keys and values of the whole context, ``2 * n_layers * n_heads * head_dim * length``.

Runs go to ``--work-dir`` and are reused when their config is unchanged.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from benchmarks.common import command_line  # noqa: E402
from benchmarks.task_transition import LAST, add_run_options, report, small_run_config, trained  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import load_dataset  # noqa: E402
from training.evaluate import meta_test  # noqa: E402
from training.optim import OPTIMIZERS  # noqa: E402

DATASETS = ("mnist", "fashion_mnist")
GRID = [
    ("lstm", {"hidden_size": 64}),
    ("lstm", {"hidden_size": 256}),
    ("lstm", {"hidden_size": 1024}),
    ("oplstm", {"hidden_size": 64, "key_size": 16, "value_size": 16}),
    ("oplstm", {"hidden_size": 64, "key_size": 32, "value_size": 32}),
    ("oplstm", {"hidden_size": 64, "key_size": 64, "value_size": 64}),
    ("vsml", {"state_size": 4}),
    ("vsml", {"state_size": 8}),
    ("vsml", {"state_size": 16}),
    ("transformer", {"d_model": 32, "n_layers": 2, "n_heads": 4, "head_dim": 8}),
    ("transformer", {"d_model": 64, "n_layers": 2, "n_heads": 4, "head_dim": 16}),
    ("transformer", {"d_model": 128, "n_layers": 2, "n_heads": 4, "head_dim": 32}),
]
# The option that sets each learner's size in the grid (what ``--sizes`` names).
SIZE_OPTION = {"lstm": "hidden_size", "oplstm": "key_size", "vsml": "state_size", "transformer": "d_model"}


def state_size(learner: str, kw: dict, input_dim: int, num_classes: int, length: int) -> int:
    """Numbers the learner's next prediction reads besides its parameters (module docstring)."""
    if learner == "lstm":
        return 2 * kw["hidden_size"] * kw.get("num_layers", 1)
    if learner == "oplstm":
        return 2 * kw["hidden_size"] + kw["key_size"] * kw["value_size"]
    if learner == "vsml":
        return 2 * input_dim * num_classes * kw["state_size"]
    if learner == "transformer":
        return 2 * kw["n_layers"] * kw["n_heads"] * kw["head_dim"] * length
    raise ValueError(f"no state size for learner {learner!r}")


def run_config(learner: str, kw: dict, args: argparse.Namespace) -> TrainConfig:
    name = learner + "_" + "_".join(f"{k}{v}" for k, v in kw.items())
    if learner == "transformer":
        kw = {**kw, "max_len": args.length}
    return small_run_config(
        args,
        name,
        length=args.length,
        learner=learner,
        learner_kwargs=kw,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
    )


def measure(cfg: TrainConfig, n_tasks: int, n_seqs: int) -> dict:
    learner, dev, log, summary = trained(cfg)
    input_dim = cfg.image_size**2  # one channel
    record = {
        "learner": cfg.learner,
        "options": cfg.learner_kwargs,
        "parameters": sum(p.numel() for p in learner.parameters()),
        "state": state_size(cfg.learner, cfg.learner_kwargs, input_dim, cfg.num_classes, cfg.length),
        **summary,
        # when the run left the plateau, if it did: the logged training loss against the step
        "loss_curve": [[r["step"], r["loss"]] for r in log if "loss" in r],
    }
    for name in DATASETS:
        x, y = load_dataset(name, "test", size=cfg.image_size, channels=1, device=dev)
        correct = meta_test(learner, x, y, out_dim=input_dim, n_tasks=n_tasks, n_seqs=n_seqs, length=cfg.length)
        record[name] = float(correct.mean(axis=(0, 1))[-LAST:].mean())
    return record


def markdown(records: list[dict], command: str, args: argparse.Namespace) -> str:
    lines = [
        f"`{command}`",
        "",
        f"MNIST at {args.image_size} x {args.image_size}, sequences of {args.length}, {args.batch_size} per step, "
        f"{args.steps} steps, biased permutations for the first {args.biased_steps}, {args.optimizer} at lr "
        f"{args.lr:g}; meta-test {args.n_tasks} fresh "
        f"tasks x {args.n_seqs} sequences. Accuracy (%) of the last {LAST} positions.",
        "",
        "| learner | options | parameters | state | steps | final loss | MNIST | FashionMNIST |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['learner']} | {json.dumps(r['options'])} | {r['parameters']:,} | {r['state']:,} | {r['steps']:,} | "
        f"{r['final_loss']:.3f} | {100 * r['mnist']:.1f} | {100 * r['fashion_mnist']:.1f} |"
        for r in records
    ]
    return "\n".join(lines)


def figure(records: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, key, label in zip(axes, ("state", "parameters"), ("state size", "parameters"), strict=True):
        for learner in dict.fromkeys(r["learner"] for r in records):
            pts = sorted((r[key], 100 * r["mnist"]) for r in records if r["learner"] == learner)
            ax.plot(*zip(*pts, strict=True), "o-", label=learner)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"MNIST accuracy, last {LAST} positions (%)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.state_size", description=__doc__.splitlines()[0])
    parser.add_argument("--learners", default="lstm,oplstm,vsml,transformer", help="a subset of the grid's learners")
    add_run_options(parser)
    parser.set_defaults(work_dir="runs/state_size")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="the meta-optimiser of every run")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--sizes",
        help="a subset of the chosen learners' grid entries as learner:size, comma-separated (size: the value of "
        "hidden_size, key_size, state_size or d_model), e.g. lstm:64,oplstm:64; default: every size",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: the smallest size of each learner, 10 steps")
    args = parser.parse_args(argv)
    chosen = args.learners.split(",")
    grid = [(name, kw) for name, kw in GRID if name in chosen]
    if args.sizes:
        sizes = set(args.sizes.split(","))
        entries = {f"{name}:{kw[SIZE_OPTION[name]]}" for name, kw in grid}
        if sizes - entries:
            missing, known = ",".join(sorted(sizes - entries)), ", ".join(sorted(entries))
            parser.error(f"--sizes {missing}: not in the grid of --learners ({known})")
        grid = [(name, kw) for name, kw in grid if f"{name}:{kw[SIZE_OPTION[name]]}" in sizes]
    if args.quick:
        grid = [next((n, kw) for n, kw in grid if n == name) for name in dict.fromkeys(n for n, _ in grid)]
        args.steps, args.length, args.biased_steps, args.n_tasks, args.n_seqs = 10, 12, 5, 2, 2
    command = command_line("benchmarks.state_size", argv)
    configs = [run_config(name, kw, args) for name, kw in grid]
    with ProcessPoolExecutor(args.jobs) as pool:
        records = list(pool.map(measure, configs, [args.n_tasks] * len(configs), [args.n_seqs] * len(configs)))
    report("state_size", records, markdown(records, command, args), command, args, figure)


if __name__ == "__main__":
    main()
