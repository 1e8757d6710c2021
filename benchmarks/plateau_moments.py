"""Adam's denominator on the loss plateau: does its epsilon bind?

    python -m benchmarks.plateau_moments                     # CPU: the base run to 4,000 steps, read at 4 stages
    python -m benchmarks.plateau_moments --quick --out /tmp/pm

Adam moves each parameter entry by ``lr * m / (sqrt(v) + eps)`` (``m``, ``v``: the bias-corrected
moving averages of the gradient and of its square). The paper's case for a smaller epsilon
(Sec. 4.4, Fig. 8): on the plateau the gradients are tiny, so ``eps`` is not small against
``sqrt(v)`` and damps the step. This trains the base run of :mod:`benchmarks.plateaus`
(Adam, epsilon 1e-8, a fresh task per sequence, 128 sequences per step) and at each step of
``--at`` reads the Adam moments of its saved state: quantiles of ``sqrt(v)`` over all
parameter entries, and for each epsilon the share of entries whose step it shrinks by 9% or
more (``eps >= sqrt(v) / 10``). Shares near zero at 1e-8 mean a smaller epsilon cannot change
the run.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import command_line, write_outputs
from benchmarks.plateaus import LAST, meta_test_curve, plateau_config
from benchmarks.task_transition import add_run_options
from training.optim import make_optimizer
from training.progress import read_records
from training.state import load_state
from training.train import train

EPSILONS = (1e-8, 1e-12, 1e-16)
QUANTILES = (0.001, 0.01, 0.1, 0.5)


def adam_rms(optimizer: torch.optim.Optimizer) -> np.ndarray:
    """``sqrt(v)`` of every parameter entry: the bias-corrected RMS gradient Adam divides by
    (zero where no gradient ever reached the entry: the padding label row, unused positions)."""
    beta2 = optimizer.param_groups[0]["betas"][1]
    parts = []
    for state in optimizer.state.values():
        v_hat = state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))
        parts.append(v_hat.sqrt().flatten().double().numpy())
    return np.concatenate(parts)


def moments_at(cfg, trained: torch.nn.Module) -> dict:
    """The run's Adam moments at its last step, read back from its saved state."""
    optimizer = make_optimizer(
        cfg.optimizer, trained.parameters(), lr=cfg.lr, eps=cfg.adam_eps, betas=(cfg.beta1, cfg.beta2), capturable=False
    )
    step, _ = load_state(Path(cfg.out_dir) / "state", trained, optimizer)
    rms = adam_rms(optimizer)
    unused = rms == 0  # m = v = 0 there: no step whatever epsilon is
    rms = rms[~unused]
    log = read_records(cfg.out_dir)
    tests = [c for c in meta_test_curve(log) if c["step"] <= step]
    losses = [r["loss"] for r in log if "loss" in r and r["step"] <= step]
    return {
        "step": step,
        "loss": float(np.mean(losses[-3:])),
        "acc": tests[-1]["acc"] if tests else None,
        "device": str(next(trained.parameters()).device),
        "entries": int(rms.size),
        "entries_without_gradient": int(unused.sum()),
        "rms_quantiles": {str(q): float(np.quantile(rms, q)) for q in QUANTILES},
        "share_damped": {str(e): float(np.mean(e >= rms / 10)) for e in EPSILONS},
    }


def markdown(rows: list[dict], command: str) -> str:
    head = " | ".join(f"sqrt(v) q{100 * q:g}%" for q in QUANTILES)
    damped = " | ".join(f"damped by {e:g}" for e in EPSILONS)
    lines = [
        f"`{command}`",
        "",
        f"The base run of `benchmarks.plateaus` (Adam, epsilon 1e-8), on {rows[0]['device']}. `sqrt(v)`: "
        f"quantiles over the {rows[0]['entries']:,} parameter entries that get gradients (not counted: "
        f"{rows[0]['entries_without_gradient']:,} that never do) of the bias-corrected RMS gradient Adam "
        "divides by; *damped by eps*: share of "
        "entries with `eps >= sqrt(v) / 10` (the step shrunk by 9% or more). Accuracy: meta-test of the "
        f"last {LAST} positions (%), chance 10.",
        "",
        f"| step | loss | accuracy | {head} | {damped} |",
        "|---:|---:|---:|" + "---:|" * (len(QUANTILES) + len(EPSILONS)),
    ]
    for r in rows:
        acc = "-" if r["acc"] is None else f"{100 * r['acc']:.1f}"
        qs = " | ".join(f"{r['rms_quantiles'][str(q)]:.1e}" for q in QUANTILES)
        ds = " | ".join(f"{100 * r['share_damped'][str(e)]:.2f}%" for e in EPSILONS)
        lines.append(f"| {r['step']:,} | {r['loss']:.3f} | {acc} | {qs} | {ds} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plateau_moments", description=__doc__.splitlines()[0])
    add_run_options(parser)
    parser.set_defaults(work_dir="runs/plateau_moments", n_tasks=8, n_seqs=8)
    parser.add_argument("--at", default="250,1000,2000,4000", help="steps at which to read the moments")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke run: a few steps, tiny meta-tests")
    args = parser.parse_args(argv)
    if args.quick:
        args.at, args.length, args.eval_every, args.n_tasks, args.n_seqs = "4,8", 12, 4, 2, 2
    rows = []
    for steps in sorted(int(s) for s in args.at.split(",")):
        args.steps = steps  # each stage resumes the one before from its saved state
        cfg = plateau_config({}, args.seed, args)
        with warnings.catch_warnings():  # a longer run than the saved one is the point of a stage
            warnings.filterwarnings("ignore", message="resuming .* with changed settings")
            trained = train(cfg)
        rows.append(moments_at(cfg, trained))
        print(json.dumps(rows[-1]), flush=True)
    command = command_line("benchmarks.plateau_moments", argv)
    text = markdown(rows, command)
    print(text)
    if args.out:
        write_outputs(Path(args.out), "plateau_moments", text, {"command": command, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
