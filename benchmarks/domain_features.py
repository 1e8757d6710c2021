"""Domain features: in-context learning on a pre-trained network's features against raw pixels.

    python -m benchmarks.domain_features                   # writes benchmarks/results/domain_features.{md,json,png}
    python -m benchmarks.domain_features --quick --out /tmp/df    # smoke run (CI)

The paper (Kirsch et al., 2022, Sec. 4.4, Fig. 10) meta-trains on ImageNet embeddings and
finds that matching domain features speed up in-context learning while the learner still
generalises to other domains (about 45% on CIFAR10). ImageNet weights cannot be downloaded
here, so a small convolutional network (:mod:`training.features`) is pre-trained by
supervised classification of ``--feature-data``'s train split, nothing else; its
``config.json`` in ``--work-dir`` says what it saw. Two learners are then meta-trained alike
on ``--meta-data``'s train split (the paper's Alg. 1 tasks: a random projection to
``--out-dim`` features and a label permutation per sequence): one on the raw pixels (at
``--pixel-size``, 8 x 8 by default: the size at which this small learner leaves its loss
plateau in 3,000 steps, see ``benchmarks.task_transition``; at 28 x 28 projected to 64 it
did not), one on the network's features of the ``--image-size`` images. Both are
meta-tested on fresh tasks from the test splits of MNIST, FashionMNIST, CIFAR10 (grayscale,
resized) and the paper's random data, each input passed through the learner's own
preprocessing: accuracy at every position of the sequence (how fast
it learns in context) and, during meta-training, the accuracy of the last 10 positions on
MNIST and CIFAR10 (how fast it learns to learn). Runs go to ``--work-dir`` and are reused when
their config is unchanged.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import command_line  # noqa: E402
from benchmarks.task_transition import LEARNER_KWARGS, add_run_options, report, small_run_config, trained  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import load_dataset  # noqa: E402
from training.evaluate import meta_test  # noqa: E402
from training.features import accuracy, save_feature_net, train_feature_net  # noqa: E402

META_TEST = "mnist,fashion_mnist,cifar10,random"
DURING = "mnist,cifar10"  # meta-tested while meta-training
POSITIONS = (1, 2, 5, 10, 25)  # accuracy of the prediction after this many examples ...
LAST = 10  # ... and over the last LAST positions


def feature_net(args: argparse.Namespace) -> Path:
    """Pre-train the feature network on ``--feature-data``'s train split (or reuse it); its folder."""
    folder = Path(args.work_dir) / f"feature_net_{args.feature_data}{'_quick' if args.quick else ''}"
    wanted = {"dataset": args.feature_data, "split": "train", "epochs": args.feature_epochs, "seed": 0}
    if (folder / "config.json").is_file():
        saved = json.loads((folder / "config.json").read_text())
        if {k: saved.get(k) for k in wanted} == wanted and saved["size"] == args.image_size:
            return folder
    with torch.random.fork_rng():
        x, y = load_dataset(args.feature_data, "train", size=args.image_size, channels=1)
        if args.quick:
            x, y = x[:512], y[:512]
        net = train_feature_net(x, y, size=args.image_size, channels=1, epochs=args.feature_epochs)
        x_test, y_test = load_dataset(args.feature_data, "test", size=args.image_size, channels=1)
    provenance = wanted | {
        "images": len(x),
        "labels": "the split's own classes, supervised cross-entropy",
        "train_accuracy": accuracy(net, x, y),
        "test_accuracy": accuracy(net, x_test, y_test),  # a report only: no test image trained it
    }
    save_feature_net(net, folder, provenance)
    return folder


def run_config(inputs: str, features: Path, args: argparse.Namespace) -> TrainConfig:
    size = args.image_size if inputs == "features" else args.pixel_size
    return small_run_config(
        args,
        f"{args.meta_data}_{inputs}_{args.feature_data if inputs == 'features' else size}",
        dataset=args.meta_data,
        image_size=size,
        features=str(features) if inputs == "features" else None,
        out_dim=args.out_dim,
        length=args.length,
        learner="transformer",
        learner_kwargs=LEARNER_KWARGS["transformer"],
        batch_size=args.batch_size,
        eval_every=max(1, args.steps // args.evals),
        eval_datasets=tuple(args.during.split(",")),
        eval_tasks=args.n_tasks // 2 or 1,
        eval_seqs=args.n_seqs // 2 or 1,
    )


def measure(cfg: TrainConfig, datasets: list[str], n_tasks: int, n_seqs: int) -> dict:
    """Meta-train (or resume) one learner; its accuracy per position on each meta-test dataset."""
    learner, dev, log, summary = trained(cfg)
    record = {
        "inputs": "features" if cfg.features else "pixels",
        "image_size": cfg.image_size,
        **summary,
        "during": [
            {"step": r["step"], **{n: float(np.mean(r["eval"][n]["acc"][-LAST:])) for n in cfg.eval_datasets}}
            for r in log
            if "eval" in r
        ],
    }
    for name in datasets:
        x, y = load_dataset(name, "test", size=cfg.image_size, channels=cfg.channels, device=dev, features=cfg.features)
        correct = meta_test(learner, x, y, out_dim=cfg.out_dim, n_tasks=n_tasks, n_seqs=n_seqs, length=cfg.length)
        record[name] = correct.mean(axis=(0, 1)).tolist()
    return record


def markdown(records: list[dict], net: dict, command: str, args: argparse.Namespace) -> str:
    lines = [
        f"`{command}`",
        "",
        f"Feature network: {net['width']} features of a 2-convolution network trained on the "
        f"{net['dataset']} {net['split']} split ({net['images']:,} images, {net['epochs']} epochs, labels); "
        f"its own accuracy {100 * net['train_accuracy']:.1f}% (train) / {100 * net['test_accuracy']:.1f}% (test). "
        f"Learners: the {args.meta_data} train split as pixels at {args.pixel_size} x {args.pixel_size} or as "
        f"features of the {args.image_size} x {args.image_size} images, projected to {args.out_dim} per task; "
        f"sequences of {args.length}, {args.batch_size} per step, {args.steps} steps. "
        f"Meta-test: {args.n_tasks} fresh tasks x {args.n_seqs} sequences of each test split. "
        f"Accuracy (%) of the prediction after n examples, and over the last {LAST} positions.",
        "",
        "| inputs | dataset | " + " | ".join(f"n={p}" for p in POSITIONS) + f" | last {LAST} |",
        "|---|---|" + "---:|" * (len(POSITIONS) + 1),
    ]
    for r in records:
        for name in args.datasets.split(","):
            acc = r[name]
            cells = [f"{100 * acc[p]:.1f}" for p in POSITIONS if p < len(acc)]
            lines.append(f"| {r['inputs']} | {name} | " + " | ".join(cells) + f" | {100 * np.mean(acc[-LAST:]):.1f} |")
    lines += ["", f"During meta-training (accuracy of the last {LAST} positions, %):", ""]
    during = args.during.split(",")
    lines += ["| inputs | step | " + " | ".join(during) + " |", "|---|---:|" + "---:|" * len(during)]
    for r in records:
        lines += [
            f"| {r['inputs']} | {d['step']} | " + " | ".join(f"{100 * d[n]:.1f}" for n in during) + " |"
            for d in r["during"]
        ]
    return "\n".join(lines)


def figure(records: list[dict], path: Path, *, args: argparse.Namespace) -> None:
    datasets, during = args.datasets.split(","), args.during.split(",")
    fig, axes = plt.subplots(1, len(datasets) + 1, figsize=(4 * (len(datasets) + 1), 3.6))
    for r in records:
        for ax, name in zip(axes, datasets, strict=False):
            ax.plot(np.arange(len(r[name])), 100 * np.asarray(r[name]), label=r["inputs"])
            ax.set_title(name)
            ax.set_xlabel("examples in context")
        steps = [d["step"] for d in r["during"]]
        for name, style in zip(during, ("o-", "s--", "^:", "d-."), strict=False):
            axes[-1].plot(steps, [100 * d[name] for d in r["during"]], style, label=f"{r['inputs']}, {name}")
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend()
    axes[-1].set_title("during meta-training")
    axes[-1].set_xlabel("step")
    axes[-1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.domain_features", description=__doc__.splitlines()[0])
    parser.add_argument("--feature-data", default="mnist", help="train split the feature network learns from")
    parser.add_argument("--feature-epochs", type=int, default=2)
    parser.add_argument("--meta-data", default="mnist", help="train split the learners are meta-trained on")
    parser.add_argument("--pixel-size", type=int, default=8, help="images the pixel learner reads")
    parser.add_argument("--out-dim", type=int, default=64)
    parser.add_argument("--evals", type=int, default=6, help="meta-tests during meta-training")
    parser.add_argument("--datasets", default=META_TEST, help="test splits meta-tested at the end")
    parser.add_argument("--during", default=DURING, help="test splits meta-tested while meta-training")
    add_run_options(parser)  # --steps, --batch-size, --length, --image-size (the feature network's), ...
    parser.set_defaults(image_size=28, work_dir="runs/domain_features")
    parser.add_argument("--quick", action="store_true", help="smoke run: 512 images, 20 steps, tiny meta-test")
    args = parser.parse_args(argv)
    if args.quick:
        args.feature_epochs, args.steps, args.length, args.biased_steps, args.n_tasks, args.n_seqs = 1, 20, 30, 10, 2, 2
        args.evals = 2
    command = command_line("benchmarks.domain_features", argv)
    features = feature_net(args)
    configs = [run_config(inputs, features, args) for inputs in ("pixels", "features")]
    datasets = args.datasets.split(",")
    # spawned, not forked: the feature network was just trained here, on the GPU where there is one,
    # and a forked child cannot use CUDA once its parent has
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        records = list(pool.map(measure, configs, [datasets] * 2, [args.n_tasks] * 2, [args.n_seqs] * 2))
    net = json.loads((features / "config.json").read_text())
    text = markdown(records, net, command, args)
    report("domain_features", records, text, command, args, partial(figure, args=args), extra={"feature_net": net})


if __name__ == "__main__":
    main()
