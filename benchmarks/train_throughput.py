"""Meta-training throughput: ms per step of the real training loop, per mode and GPU count.

    python -m benchmarks.train_throughput                       # needs CUDA GPUs
    python -m benchmarks.train_throughput --quick               # CPU smoke run

Each row runs ``training.train`` (sampling of the tasks included) in a fresh process,
under ``torchrun`` for several GPUs, and reads the step rate of the last logging interval
from its ``metrics.jsonl``, so compilation, graph capture and warm-up stay out of the
number. Single-GPU rows run concurrently, one per GPU. The multi-GPU speed-up is
``n * t_1 / t_n`` at a fixed batch per GPU (ideal: ``n``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import command_line
from training.progress import read_records

# (name, batch per GPU, training.train flags): the paper's model at the two sizes.
SETTINGS = {
    "B=128, 784-d": (128, ["--image-size", "null", "--channels", "1"]),
    "B=512, 3072-d": (512, ["--image-size", "32", "--channels", "3"]),
}
MODES = {
    "eager": [],
    "compile": ["--compile", "true"],
    "graph": ["--cuda-graph", "true"],
    "compile+graph": ["--compile", "true", "--cuda-graph", "true"],
    # the next batch drawn after the step, not during it (training/prefetch.py)
    "compile+graph no-prefetch": ["--compile", "true", "--cuda-graph", "true", "--prefetch", "false"],
    # inputs sampled at d_model width instead of 3072 (training/folded.py; K = infinity)
    "compile+graph+fold": ["--compile", "true", "--cuda-graph", "true", "--fold-projection", "true"],
    "compile+graph+fold no-prefetch": [
        *("--compile", "true", "--cuda-graph", "true", "--fold-projection", "true", "--prefetch", "false")
    ],
    # each sequence's Gram matrix gathered from the training split's (training/tasks.py)
    "compile+graph+gram": ["--compile", "true", "--cuda-graph", "true", "--gram-table", "true"],
    "compile+graph+fold+gram": [
        *("--compile", "true", "--cuda-graph", "true", "--fold-projection", "true", "--gram-table", "true")
    ],
}


def _command(setting: str, mode: str, gpus: int, steps: int, out: Path, extra: list[str]) -> list[str]:
    batch, flags = SETTINGS[setting]
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}"]
        if gpus > 1
        else [sys.executable]
    )
    return launcher + [
        "-m",
        "training.train",
        "--out-dir",
        str(out),
        "--steps",
        str(steps),
        "--batch-size",
        str(batch),
        "--log-every",
        str(steps // 4),
        "--eval-every",
        str(10 * steps),
        "--ckpt-every",
        str(10 * steps),
        "--eval-datasets",
        "[]",
        *flags,
        *MODES[mode],
        *extra,
    ]


def _rate(out: Path) -> float | None:
    try:
        records = read_records(out)
    except FileNotFoundError:
        return None
    rates = [r["steps_per_s"] for r in records if "steps_per_s" in r]
    return rates[-1] if rates else None


def run_all(jobs: list[tuple[str, str, int]], steps: int, extra: list[str], concurrent: bool, log_dir: Path) -> dict:
    """Run ``(setting, mode, gpus)`` jobs; single-GPU ones concurrently on distinct GPUs."""
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        pending = list(jobs)
        while pending:
            batch = [pending.pop(0)]
            if concurrent and batch[0][2] == 1:
                n_gpu = _gpu_count()
                while pending and pending[0][2] == 1 and len(batch) < n_gpu:
                    batch.append(pending.pop(0))
            procs = []
            for i, (setting, mode, gpus) in enumerate(batch):
                out = Path(tmp) / f"{setting}-{mode}-{gpus}".replace(" ", "").replace(",", "_").replace("=", "")
                env = dict(os.environ)
                if gpus == 1 and concurrent:
                    env["CUDA_VISIBLE_DEVICES"] = str(i)
                log = open(log_dir / f"{out.name}.log", "w")
                procs.append(
                    (
                        setting,
                        mode,
                        gpus,
                        out,
                        log,
                        subprocess.Popen(
                            _command(setting, mode, gpus, steps, out, extra),
                            env=env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        ),
                    )
                )
            for setting, mode, gpus, out, log, proc in procs:
                rc = proc.wait()
                log.close()
                rate = _rate(out) if rc == 0 else None
                results[f"{setting} | {mode} | {gpus} GPU"] = {
                    "setting": setting,
                    "mode": mode,
                    "gpus": gpus,
                    "returncode": rc,
                    "ms_per_step": 1000 / rate if rate else None,
                }
                print(
                    f"{setting:>14} {mode:>14} {gpus} GPU: rc={rc} "
                    f"{'%.2f ms/step' % (1000 / rate) if rate else 'failed (see log)'}",
                    flush=True,
                )
    return results


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def table(results: dict) -> str:
    rows = ["| setting | mode | GPUs | ms/step | speed-up vs 1 GPU (ideal = GPUs) |", "|---|---|---|---|---|"]
    for r in results.values():
        one = next(
            (
                o
                for o in results.values()
                if o["setting"] == r["setting"] and o["mode"] == r["mode"] and o["gpus"] == 1 and o["ms_per_step"]
            ),
            None,
        )
        ms = r["ms_per_step"]
        speedup = f"{r['gpus'] * one['ms_per_step'] / ms:.2f}x" if ms and one and r["gpus"] > 1 else ""
        rows.append(f"| {r['setting']} | {r['mode']} | {r['gpus']} | {f'{ms:.2f}' if ms else 'failed'} | {speedup} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: tiny model, eager, a few steps")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--modes", default="eager,compile+graph")
    parser.add_argument("--settings", default=";".join(SETTINGS), help=f"of {' / '.join(SETTINGS)}, separated by ;")
    parser.add_argument("--gpus", default="1,4", help="GPU counts; >1 rows use the last single-GPU-capable mode list")
    parser.add_argument("--multi-gpu-modes", default="compile,compile+graph")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        extra = [
            "--learner-kwargs",
            '{"d_model": 32, "n_layers": 1, "n_heads": 2, "head_dim": 16}',
            "--batch-size",
            "4",
            "--dataset",
            "random",
            "--image-size",
            "8",
        ]
        jobs = [("B=128, 784-d", "eager", 1)]
        results = run_all(jobs, 8, extra, concurrent=False, log_dir=args.out)
        print(table(results))
        if any(r["ms_per_step"] is None for r in results.values()):
            sys.exit(1)
        return
    gpu_counts = [int(g) for g in args.gpus.split(",")]
    jobs = [(s, m, 1) for s in args.settings.split(";") for m in args.modes.split(",")]
    jobs += [("B=512, 3072-d", m, g) for g in gpu_counts if g > 1 for m in args.multi_gpu_modes.split(",")]
    results = run_all(jobs, args.steps, [], concurrent=True, log_dir=args.out)
    import torch

    header = f"GPU: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, torch {torch.__version__}"
    command = command_line("benchmarks.train_throughput", argv)
    text = (
        f"{header}\n\n{table(results)}\n\nTargets (issue #3): <= 2 ms (B=128, 784-d) and <= 8 ms "
        f"(B=512, 3072-d) on one GPU; >= 3.5x on 4 GPUs at a fixed batch per GPU.\n\nMade by `{command.strip()}`.\n"
    )
    print(text)
    (args.out / "train_throughput.md").write_text(text)
    (args.out / "train_throughput.json").write_text(json.dumps({"device": header, "results": results}, indent=1))


if __name__ == "__main__":
    main()
