"""Loss plateaus at the start of meta-training, and the interventions that end them sooner.

    python -m benchmarks.plateaus --jobs 6                  # on a GPU (~10 min); writes benchmarks/results/plateaus.*
    python -m benchmarks.plateaus --quick --out /tmp/pl     # smoke run (CI)

The paper's Fig. 7, 8, 9 (Kirsch et al., 2022, Sec. 4.4): meta-training a Transformer on
random projections and label permutations of MNIST starts on a plateau, at the loss of a
learner that ignores its context, and may stay there for most of a run. The paper varies
the meta-batch size and the number of tasks, and proposes interventions: a smaller Adam
epsilon or the sign of momentum (the gradients on the plateau are tiny, so Adam's
epsilon dominates its step), and biased permutations (a fraction of every batch on one
fixed label permutation).

Each *study* changes one setting of a shared base run (:data:`BASE`: :mod:`benchmarks.
task_transition`'s Transformer, a fresh task per sequence, 128 sequences per step, Adam
with epsilon 1e-8 at lr 1e-3, no biased permutations) and trains it from every seed of
``--seeds`` (the model's initialisation and its tasks) with ``training.train``,
meta-testing every ``--eval-every`` steps on fresh tasks of the MNIST test split (the same
tasks every time). The *plateau* of a run lasts until the first meta-test at which the
accuracy of the last 10 positions reaches ``--left-at`` (chance is 10%); a run that never
gets there is reported as ``> steps``. Runs go to ``--work-dir`` and
are reused when their config is unchanged; the base run is trained once and shared by the
studies.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import command_line  # noqa: E402
from benchmarks.task_transition import LAST, add_run_options, k_label, report, run_config  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.progress import read_records  # noqa: E402
from training.train import train  # noqa: E402

BASE = {"batch_size": 128, "num_tasks": None, "adam_eps": 1e-8, "optimizer": "adam", "lr": 1e-3, "biased_fraction": 0.0}
STUDIES = {
    "batch size": [{"batch_size": b} for b in (32, 128, 512)],
    "tasks": [{"num_tasks": k} for k in (2**14, 2**16, None)],
    "Adam epsilon": [{"adam_eps": e} for e in (1e-4, 1e-6, 1e-8, 1e-12, 1e-16)],
    "optimiser": [{}, {"optimizer": "sign_momentum", "lr": 1e-3}, {"optimizer": "sign_momentum", "lr": 1e-4}],
    # Adam at the smaller steps of the sign of momentum: does the sign, or the step size, end the plateau?
    "Adam learning rate": [{"lr": 3e-4}, {"lr": 1e-4}],
    "biased fraction": [{"biased_fraction": f} for f in (0.0, 0.3, 0.6, 0.9)],
}


def setting_label(setting: dict) -> str:
    """``"batch_size=32"``; ``"base"`` for the base run itself."""
    if not setting:
        return "base"
    shown = {k: k_label(v) if k == "num_tasks" else v for k, v in setting.items()}
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def plateau_config(setting: dict, seed: int, args: argparse.Namespace) -> TrainConfig:
    """The base run with ``setting`` applied, from ``seed``; its folder is named by the full setting and
    the seed, so studies share runs."""
    full = BASE | setting
    cfg = run_config("transformer", full["num_tasks"], seed, args)
    name = "_".join(f"{k}{'inf' if v is None else v}" for k, v in sorted(full.items())) + f"_s{seed}"
    return dataclasses.replace(
        cfg,
        batch_size=full["batch_size"],
        adam_eps=full["adam_eps"],
        optimizer=full["optimizer"],
        lr=full["lr"],
        biased_fraction=full["biased_fraction"],
        biased_steps=None,  # biased permutations, when asked for, in every step
        out_dir=str(Path(args.work_dir) / name),
        log_every=args.eval_every,
        eval_every=args.eval_every,
        eval_datasets=("mnist",),
        eval_tasks=args.n_tasks,
        eval_seqs=args.n_seqs,
    )


def measure(cfg: TrainConfig, left_at: float) -> dict:
    """Train (or resume) one run; its meta-test accuracy and training loss at every evaluation."""
    torch.set_num_threads(1)
    train(cfg)
    curve = meta_test_curve(read_records(cfg.out_dir))
    return {
        "config": Path(cfg.out_dir).name,
        "steps": curve[-1]["step"],
        "plateau_steps": plateau_end(curve, left_at),
        "curve": curve,
    }


def meta_test_curve(log: list[dict]) -> list[dict]:
    """Each meta-test of a run's log: its step, MNIST accuracy of the last ``LAST`` positions and training loss."""
    loss = {r["step"]: r["loss"] for r in log if "loss" in r}
    return [
        {"step": r["step"], "acc": float(np.mean(r["eval"]["mnist"]["acc"][-LAST:])), "loss": loss.get(r["step"])}
        for r in log
        if "eval" in r
    ]


def plateau_end(curve: list[dict], left_at: float) -> int | None:
    """The step of the first meta-test with accuracy ``>= left_at``; ``None`` if the run never left the plateau."""
    return next((c["step"] for c in curve if c["acc"] >= left_at), None)


def run_studies(args: argparse.Namespace, studies: dict[str, list[dict]], seeds: list[int]) -> list[dict]:
    """One record per study, setting and seed; each distinct run is trained once, ``args.jobs`` at a time."""
    planned = [
        (study, setting, plateau_config(setting, seed, args))
        for study, settings in studies.items()
        for setting in settings
        for seed in seeds
    ]
    configs = {Path(cfg.out_dir).name: cfg for _, _, cfg in planned}
    measured: dict[str, dict] = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(measure, cfg, args.left_at): name for name, cfg in configs.items()}
        for future in as_completed(futures):
            measured[futures[future]] = future.result()
            print(json.dumps({k: v for k, v in measured[futures[future]].items() if k != "curve"}), flush=True)
    return [
        {"study": study, "setting": setting_label(setting), "seed": cfg.seed, "batch_size": cfg.batch_size}
        | measured[Path(cfg.out_dir).name]
        for study, setting, cfg in planned
    ]


def plateau_text(r: dict) -> str:
    return f"> {r['steps']:,}" if r["plateau_steps"] is None else f"{r['plateau_steps']:,}"


def median_plateau(runs: list[dict]) -> float:
    """The median plateau of ``runs`` in steps, a run still on its plateau counting as endless."""
    return float(np.median([np.inf if r["plateau_steps"] is None else r["plateau_steps"] for r in runs]))


def markdown(records: list[dict], command: str, args: argparse.Namespace) -> str:
    """One row per study and setting; its seeds' plateaus side by side, their median and mean final metrics."""
    lines = [
        f"`{command}`",
        "",
        f"Transformer of `benchmarks.task_transition`, MNIST at {args.image_size} x {args.image_size}, sequences "
        f"of {args.length}, up to {args.steps} steps; base run: {setting_label(BASE)}; seeds {args.seeds}. "
        f"Meta-test every {args.eval_every} steps on {args.n_tasks} fresh tasks x {args.n_seqs} sequences of "
        f"the MNIST test split; accuracy of the last {LAST} positions (%). The plateau ends at the first "
        f"meta-test with accuracy >= {100 * args.left_at:.0f}% (chance 10%); the median counts a run still on "
        "its plateau as endless. Final accuracy and loss: means over the seeds at their last step.",
        "",
        "| study | setting | plateau (steps), per seed | left | median plateau (steps) | median plateau "
        "(sequences) | final accuracy | final loss |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    rows = {}
    for r in records:
        rows.setdefault((r["study"], r["setting"]), []).append(r)
    for (study, setting), runs in rows.items():
        median = median_plateau(runs)
        steps = f"> {max(r['steps'] for r in runs):,}" if np.isinf(median) else f"{median:,.0f}"
        seqs = "-" if np.isinf(median) else f"{median * runs[0]['batch_size']:,.0f}"
        left = sum(r["plateau_steps"] is not None for r in runs)
        accuracy = 100 * np.mean([r["curve"][-1]["acc"] for r in runs])
        losses = [r["curve"][-1]["loss"] for r in runs if r["curve"][-1]["loss"] is not None]
        loss = f"{np.mean(losses):.3f}" if losses else "-"
        lines.append(
            f"| {study} | {setting} | {' / '.join(plateau_text(r) for r in runs)} | {left} of {len(runs)} | "
            f"{steps} | {seqs} | {accuracy:.1f} | {loss} |"
        )
    return "\n".join(lines)


def figure(records: list[dict], path: Path) -> None:
    """One panel per study: meta-test accuracy against steps, one colour per setting, one line per seed."""
    studies = list(dict.fromkeys(r["study"] for r in records))
    fig, axes = plt.subplots(1, len(studies), figsize=(4 * len(studies), 3.4), squeeze=False, sharey=True)
    for ax, study in zip(axes[0], studies, strict=True):
        colours = {}
        for r in (r for r in records if r["study"] == study):
            first = r["setting"] not in colours
            colours.setdefault(r["setting"], f"C{len(colours)}")
            ax.plot(
                [c["step"] for c in r["curve"]],
                [100 * c["acc"] for c in r["curve"]],
                color=colours[r["setting"]],
                lw=1,
                label=r["setting"] if first else None,
            )
        ax.set_title(study)
        ax.set_xlabel("meta-training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"unseen-task accuracy, last {LAST} positions (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plateaus", description=__doc__.splitlines()[0])
    add_run_options(parser)
    parser.set_defaults(steps=15000, work_dir="runs/plateaus", n_tasks=8, n_seqs=8)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--left-at", type=float, default=0.2, help="accuracy that ends the plateau")
    parser.add_argument("--studies", default=",".join(STUDIES), help="comma-separated subset of the studies")
    parser.add_argument("--batch-sizes", help="the batch-size study's sizes, comma-separated (default 32,128,512)")
    parser.add_argument("--adam-eps", help="the Adam epsilon study's values, comma-separated (default 1e-4,...,1e-16)")
    parser.add_argument("--adam-lrs", help="the Adam learning-rate study's values, comma-separated (default 3e-4,1e-4)")
    parser.add_argument("--seeds", default="0", help="seeds of every setting, comma-separated")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 steps, tiny meta-tests")
    args = parser.parse_args(argv)
    unknown = set(args.studies.split(",")) - set(STUDIES)
    if unknown:
        parser.error(f"--studies: unknown {sorted(unknown)}; choose from {list(STUDIES)}")
    if args.quick:
        args.steps, args.length, args.eval_every, args.n_tasks, args.n_seqs = 20, 20, 10, 2, 2
    chosen = {s: STUDIES[s] for s in args.studies.split(",")}
    if args.batch_sizes and "batch size" in chosen:
        chosen["batch size"] = [{"batch_size": int(b)} for b in args.batch_sizes.split(",")]
    if args.adam_eps and "Adam epsilon" in chosen:
        chosen["Adam epsilon"] = [{"adam_eps": float(e)} for e in args.adam_eps.split(",")]
    if args.adam_lrs and "Adam learning rate" in chosen:
        chosen["Adam learning rate"] = [{"lr": float(lr)} for lr in args.adam_lrs.split(",")]
    command = command_line("benchmarks.plateaus", argv)
    records = run_studies(args, chosen, [int(s) for s in args.seeds.split(",")])
    report("plateaus", records, markdown(records, command, args), command, args, figure)


if __name__ == "__main__":
    main()
