"""Memorisation, task identification, general learning: accuracy against the number of meta-training tasks.

    python -m benchmarks.task_transition                  # writes benchmarks/results/task_transition.{md,json,png}
    python -m benchmarks.task_transition --quick --out /tmp/tt    # smoke run (CI)
    python -m benchmarks.task_transition --learners transformer,mlp --transformer-widths 32,64,128 \
        --mlp-widths 128,256,512 --tasks 256,1024,2048,4096,16384,65536,inf --steps 10000 --jobs 14 \
        --out benchmarks/results/task_transition_size    # Fig. 4, a GPU (docs/paper_findings.md)

The paper's Fig. 2 / 4 / 11 (Kirsch et al., 2022): a learner meta-trained on ``K`` tasks
(random projections and label permutations of MNIST, Alg. 1) memorises them when ``K`` is
small, and learns to learn, i.e. generalises to unseen tasks and datasets, when ``K`` is large
(about ``2**13`` for their Transformer); an MLP sees one token at a time, so it can only
memorise (its capacity grows with its parameters). For each learner and ``K`` this trains
one run with ``training.train`` and meta-tests it:

* **seen**: the first ``min(K, n_tasks)`` training tasks, on the MNIST train split;
* **unseen**: fresh tasks on the MNIST test split;
* **fashion_mnist**: fresh tasks on the FashionMNIST test split (an unseen dataset).

Accuracy is the mean over the last 10 positions of each sequence; *improvement* is that
minus the accuracy of the first prediction (made with an empty context): in-context learning
is what makes it positive. The grid is coarser and the models smaller than the paper's (8 x 8
MNIST, 64 features, short runs on CPU by default): ``--image-size``, ``--steps`` and the
learner sizes scale it up on a GPU. Runs go to ``--work-dir`` and are reused when their
config is unchanged (training resumes or is skipped).
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import RESULTS_DIR, command_line, write_outputs  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import load_dataset  # noqa: E402
from training.evaluate import meta_test  # noqa: E402
from training.progress import read_records  # noqa: E402
from training.train import train  # noqa: E402


def learner_kwargs(learner: str, width: int) -> dict:
    """The 2-layer learner at ``width``: the Transformer's ``d_model`` (4 heads of ``width / 4``),
    the MLP's hidden units."""
    if learner == "transformer":
        return {"d_model": width, "n_layers": 2, "n_heads": 4, "head_dim": width // 4}
    return {"hidden_size": width, "num_hidden_layers": 2}


DEFAULT_WIDTHS = {"transformer": 64, "mlp": 256}
LEARNER_KWARGS = {learner: learner_kwargs(learner, width) for learner, width in DEFAULT_WIDTHS.items()}
SPLITS = (("seen", "mnist", "train"), ("unseen", "mnist", "test"), ("fashion_mnist", "fashion_mnist", "test"))
LAST = 10  # accuracy over the last LAST positions


def parse_tasks(text: str) -> list[int | None]:
    """``"4,64,inf"`` -> ``[4, 64, None]`` (``None``: a fresh task for every sequence)."""
    return [None if t.strip() in ("inf", "infinity") else int(t) for t in text.split(",")]


def k_label(k: int | None) -> str:
    """``2^10`` for a power of two, ``inf`` for a fresh task per sequence, else the number (a finer grid)."""
    if k is None:
        return "inf"
    return f"2^{k.bit_length() - 1}" if k & (k - 1) == 0 else str(k)


def small_run_config(args: argparse.Namespace, name: str, **fields) -> TrainConfig:
    """A CPU-sized run in ``--work-dir/name``: MNIST at ``--image-size``, one channel, float32,
    ``--steps`` with ``--biased-steps``, no meta-tests while training; ``fields`` set or override
    the rest (the learner, its sizes, the batch, ...). On a GPU each step replays one CUDA graph:
    these small steps are launch-bound (one H200: 550 steps/s for the 2-layer Transformer,
    96 eager)."""
    base = dict(
        dataset="mnist",
        image_size=args.image_size,
        channels=1,
        biased_steps=args.biased_steps,
        steps=args.steps,
        bf16=False,
        cuda_graph=True,  # ignored on a CPU
        max_minutes=args.max_minutes,
        log_every=max(1, args.steps // 20),
        ckpt_every=args.steps,
        eval_every=10**9,
        eval_datasets=(),
    )
    return TrainConfig(**(base | fields), out_dir=str(Path(args.work_dir) / name))


def run_config(
    learner: str, tasks: int | None, seed: int, args: argparse.Namespace, width: int | None = None
) -> TrainConfig:
    """One run of ``learner`` at ``width`` (default :data:`DEFAULT_WIDTHS`) on ``tasks`` tasks."""
    width = width or DEFAULT_WIDTHS[learner]
    return small_run_config(
        args,
        f"{learner}{width}_K{'inf' if tasks is None else tasks}_s{seed}",
        length=args.length,
        num_tasks=tasks,
        learner=learner,
        learner_kwargs=learner_kwargs(learner, width),
        batch_size=args.batch_size,
        seed=seed,
        task_seed=seed,
    )


def trained(cfg: TrainConfig) -> tuple[torch.nn.Module, torch.device, list[dict], dict]:
    """Train (or resume) one run on one thread: the learner (eval mode), the device it ran on
    (CUDA when available), its metrics records, and ``{"steps", "final_loss"}`` from them."""
    torch.set_num_threads(1)
    learner = train(cfg).eval()
    log = read_records(cfg.out_dir)
    losses = [r["loss"] for r in log if "loss" in r]
    # The steps the run has taken: a reused run may be past a smaller --steps.
    summary = {"steps": max(r["step"] for r in log), "final_loss": float(np.mean(losses[-3:]))}
    return learner, next(learner.parameters()).device, log, summary


def measure(cfg: TrainConfig, n_tasks: int, n_seqs: int) -> dict:
    """Train (or resume) one run, then meta-test it on seen tasks, unseen tasks and FashionMNIST."""
    learner, dev, _, summary = trained(cfg)
    kw = cfg.learner_kwargs
    width = kw.get("d_model", kw.get("hidden_size"))
    record = {"learner": cfg.learner, "width": width, "tasks": cfg.num_tasks, "seed": cfg.seed, **summary}
    record["parameters"] = sum(p.numel() for p in learner.parameters())
    for label, dataset, split in SPLITS:
        if label == "seen" and cfg.num_tasks is None:
            continue  # with K = infinity no task is seen twice
        x, y = load_dataset(dataset, split, size=cfg.image_size, channels=cfg.channels, device=dev)
        ids = list(range(min(cfg.num_tasks, n_tasks))) if label == "seen" else None
        with torch.no_grad():
            correct = meta_test(
                learner,
                x,
                y,
                out_dim=x.shape[1],
                n_tasks=n_tasks,
                n_seqs=n_seqs,
                length=cfg.length,
                seed=cfg.seed,
                task_ids=ids,
                task_seed=cfg.task_seed,
            )
        acc = correct.mean(axis=(0, 1))
        record[label] = {"acc": float(acc[-LAST:].mean()), "improvement": float(acc[-LAST:].mean() - acc[0])}
    return record


def markdown(records: list[dict], command: str, args: argparse.Namespace) -> str:
    lines = [
        f"`{command}`",
        "",
        f"MNIST at {args.image_size} x {args.image_size} ({args.image_size**2} features), sequences of "
        f"{args.length}, {args.batch_size} sequences per step, biased permutations for the first "
        f"{args.biased_steps} steps; meta-test {args.n_tasks} tasks x {args.n_seqs} sequences. Accuracy: mean "
        f"of the last {LAST} positions; improvement: that minus the first prediction's accuracy (points).",
        "",
        "| learner | width | parameters | K | steps | final loss | seen | unseen | fashion_mnist "
        "| improvement (unseen) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        seen = f"{100 * r['seen']['acc']:.1f}" if "seen" in r else "-"
        lines.append(
            f"| {r['learner']} (seed {r['seed']}) | {r['width']} | {r['parameters']:,} | {k_label(r['tasks'])} | "
            f"{r['steps']} | {r['final_loss']:.3f} | "
            f"{seen} | {100 * r['unseen']['acc']:.1f} | {100 * r['fashion_mnist']['acc']:.1f} | "
            f"{100 * r['unseen']['improvement']:+.1f} |"
        )
    return "\n".join(lines)


def figure(records: list[dict], path: Path) -> None:
    """One panel per learner: accuracy against ``K``, a colour per width, a line style per split."""
    learners = list(dict.fromkeys(r["learner"] for r in records))
    styles = {"seen": ":", "unseen": "-", "fashion_mnist": "--"}
    fig, axes = plt.subplots(1, len(learners), figsize=(5 * len(learners), 5), squeeze=False, sharey=True)
    finite = [r["tasks"] for r in records if r["tasks"] is not None]
    inf_x = 2 * max(finite) if finite else 2  # K = infinity drawn to the right of the largest K
    for ax, learner in zip(axes[0], learners, strict=True):
        widths = sorted({r["width"] for r in records if r["learner"] == learner})
        for colour, width in enumerate(widths):
            rows = [r for r in records if r["learner"] == learner and r["width"] == width]
            for label, _, _ in SPLITS:
                pts = sorted(
                    (inf_x if r["tasks"] is None else r["tasks"], 100 * r[label]["acc"]) for r in rows if label in r
                )
                if pts:
                    ax.plot(
                        *zip(*pts, strict=True),
                        "o",
                        ls=styles[label],
                        color=f"C{colour}",
                        label=f"{label}, width {width}",
                    )
        ax.set_xscale("log", base=2)
        ax.set_title(learner)
        ax.set_xlabel("meta-training tasks K (rightmost: infinity)")
        ax.grid(alpha=0.3)
        # below the panel: the curves fill it
        ax.legend(fontsize="x-small", ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    axes[0][0].set_ylabel(f"accuracy, last {LAST} positions (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def measure_all(configs: list[TrainConfig], args: argparse.Namespace) -> list[dict]:
    """:func:`measure` every run, ``args.jobs`` at once; each record is printed as soon as it is in."""
    records: list[dict] = [{}] * len(configs)
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(measure, cfg, args.n_tasks, args.n_seqs): i for i, cfg in enumerate(configs)}
        for future in as_completed(futures):
            records[futures[future]] = future.result()
            print(json.dumps(records[futures[future]]), flush=True)
    return records


def report(
    stem: str, records: list[dict], text: str, command: str, args: argparse.Namespace, draw, extra: dict | None = None
) -> None:
    """Print the table; write ``<stem>.md/.json/.png`` (``draw(records, path)`` makes the figure) to ``--out``.

    ``extra``: more top-level entries of the JSON (e.g. what a feature network saw).
    """
    # one entry per run: a record names its run as "config" where one run serves several records (plateaus)
    runs = {r.get("config", i): r for i, r in enumerate(records)}
    short = [r for r in runs.values() if r["steps"] < args.steps]
    if short:
        text += f"\n\nStopped by --max-minutes before {args.steps} steps: {len(short)} of {len(runs)} runs, at "
        text += ", ".join(str(r["steps"]) for r in short) + " steps; run the same command again to resume them."
    print(text)
    out = args.out or (None if args.quick else RESULTS_DIR)
    if out:
        data = {"command": command, "settings": {k: v for k, v in vars(args).items() if k != "out"}}
        write_outputs(Path(out), stem, text, data | (extra or {}) | {"records": records})
        draw(records, Path(out) / f"{stem}.png")


def add_run_options(parser: argparse.ArgumentParser, sequences: bool = True) -> None:
    """The options that shape each run and its meta-test (shared by the paper-finding benchmarks);
    ``sequences=False`` leaves out ``--batch-size`` and ``--length`` for a caller that sets them its own way."""
    parser.add_argument("--steps", type=int, default=3000)
    if sequences:
        parser.add_argument("--batch-size", type=int, default=128)
        parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=8)
    parser.add_argument("--biased-steps", type=int, default=1000)
    parser.add_argument("--n-tasks", type=int, default=16)
    parser.add_argument("--n-seqs", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once, one thread each")
    parser.add_argument(
        "--max-minutes",
        type=float,
        help="stop training each run after this long and report it as it is (checkpointed: the same command "
        "with the same --work-dir resumes it); the report names runs short of --steps",
    )
    parser.add_argument("--work-dir", default="runs/task_transition")
    parser.add_argument("--out", help=f"folder for the .md/.json/.png (default {RESULTS_DIR} unless --quick)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.task_transition", description=__doc__.splitlines()[0])
    parser.add_argument("--learners", default="transformer,mlp")
    parser.add_argument("--tasks", default="4,64,1024,16384,inf", help="K values, comma-separated; inf = a fresh task")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--transformer-widths", default=str(DEFAULT_WIDTHS["transformer"]), help="d_model values")
    parser.add_argument("--mlp-widths", default=str(DEFAULT_WIDTHS["mlp"]), help="hidden units")
    add_run_options(parser)
    parser.add_argument("--quick", action="store_true", help="smoke run: K in {4, inf}, 20 steps, tiny meta-test")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.steps, args.length, args.biased_steps, args.n_tasks, args.n_seqs = "4,inf", 20, 20, 10, 2, 2
    command = command_line("benchmarks.task_transition", argv)
    widths = {"transformer": args.transformer_widths, "mlp": args.mlp_widths}
    configs = [
        run_config(learner, tasks, int(seed), args, int(width))
        for learner in args.learners.split(",")
        for width in widths[learner].split(",")
        for tasks in parse_tasks(args.tasks)
        for seed in args.seeds.split(",")
    ]
    records = measure_all(configs, args)
    report("task_transition", records, markdown(records, command, args), command, args, figure)


if __name__ == "__main__":
    main()
