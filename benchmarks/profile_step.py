"""Where a meta-training step spends its time: task sampling, forward + backward, optimiser.

    python -m benchmarks.profile_step --batch-size 512 --image-size 32 --channels 3   # GPU
    python -m benchmarks.profile_step --quick                                        # CPU smoke run

Builds the pieces of :func:`training.train.train` (the base dataset, the task sampler,
the learner, Adam and :func:`training.train.make_train_step`), runs ``--warmup`` steps,
then profiles ``--steps`` steps with :mod:`torch.profiler`. Prints the device time of
each phase per step (each phase is a ``record_function`` range) and the ops that take
the most device time. The phases run eagerly (or compiled with ``--compile``); with
``--cuda-graph`` the step is captured and replayed as in training (``training/stepper.py``),
so the op table lists the kernels a replay executes. The wall-clock time per step (draw +
step, timed with CUDA events outside the profiler) says whether the loop keeps the GPU busy.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from training.config import TrainConfig
from training.data import load_dataset
from training.learners import build_learner
from training.optim import make_optimizer
from training.stepper import GRAPH_WARMUP_STEPS, Stepper, side_stream
from training.tasks import PaperBatches
from training.train import draw_batch, make_train_step, step_model

PHASES = ("sample", "train_step")


def _time_us(event, on_device: bool) -> float:
    """Device time of a profiler event (its CUDA kernels) on a GPU run, else its CPU time."""
    if not on_device:
        return float(event.cpu_time_total)
    for name in ("device_time_total", "cuda_time_total"):  # renamed across torch versions
        if hasattr(event, name):
            return float(getattr(event, name))
    raise RuntimeError("this torch's profiler events report no device time")


def _wall_ms(fn, steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1e3


def profile_steps(cfg: TrainConfig, steps: int, warmup: int, device: torch.device, top: int) -> str:
    x, y = load_dataset(cfg.dataset, "train", size=cfg.image_size, channels=cfg.channels, device=device)
    in_dim = cfg.input_dim(x.shape[1])
    if cfg.cuda_graph and device.type != "cuda":
        raise ValueError("--cuda-graph needs a CUDA device")
    learner = build_learner(cfg.learner, in_dim, cfg.num_classes, **cfg.learner_kwargs).to(device)
    optimizer = make_optimizer(
        cfg.optimizer,
        learner.parameters(),
        lr=cfg.lr,
        eps=cfg.adam_eps,
        betas=(cfg.beta1, cfg.beta2),
        capturable=cfg.cuda_graph,  # as training builds it: fused Adam with a graph
    )
    model = step_model(learner, cfg)
    model = torch.compile(model) if cfg.compile else model
    stepper = Stepper(make_train_step(model, optimizer, cfg, device), optimizer, side_stream(cfg.cuda_graph))
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    fold_width = learner.embed_x.out_features if cfg.fold_projection else None
    sampler = PaperBatches(
        x, y, cfg.task_config(in_dim), generator, cfg.biased_steps, fold_width, gram_table=cfg.gram_table
    )

    def one_step() -> None:
        with record_function("sample"):
            inputs, yb, slot_mask = draw_batch(sampler, cfg)
        with record_function("train_step"):
            stepper(inputs, yb, slot_mask)

    for _ in range(max(warmup, GRAPH_WARMUP_STEPS + 2) if cfg.cuda_graph else warmup):
        one_step()
    wall = _wall_ms(one_step, steps, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            one_step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    on_device = device.type == "cuda"
    unit = "device" if on_device else "CPU"

    def ms(event) -> float:
        return _time_us(event, on_device) / steps / 1e3

    lines = [
        f"{cfg.batch_size} sequences of {cfg.length} x {in_dim}-d, {cfg.learner} {cfg.learner_kwargs or ''}, "
        f"compile={cfg.compile}, cuda_graph={cfg.cuda_graph}, "
        f"fold_projection={cfg.fold_projection}, gram_table={cfg.gram_table}, {device}: {unit} time per step",
        "",
        f"Wall-clock: {wall:.3f} ms/step (draw + step, {steps} steps, outside the profiler).",
        "",
        "| phase | ms/step |",
        "|---|---:|",
    ]
    for phase in PHASES:  # a range may appear twice on a GPU run (CPU range, GPU annotation)
        lines.append(f"| {phase} | {max(ms(e) for e in events if e.key == phase):.3f} |")
    ops = sorted((e for e in events if e.key not in PHASES), key=ms, reverse=True)[:top]
    lines += [
        "",
        f"Top {top} ops by {unit} time (ms/step; nested ops count inside their callers on CPU):",
        "",
        "| op | ms/step | calls/step |",
        "|---|---:|---:|",
    ]
    lines += [f"| `{e.key[:80]}` | {ms(e):.3f} | {e.count / steps:g} |" for e in ops]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_step",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=32, help="0: native resolution (784-d MNIST)")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--cuda-graph", action="store_true", help="profile replays of the captured step (GPU)")
    parser.add_argument(
        "--fold-projection", action="store_true", help="sample inputs at d_model width (training/folded.py)"
    )
    parser.add_argument(
        "--gram-table", action="store_true", help="Gram matrices gathered from the training split's (training/tasks.py)"
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: tiny model on the random dataset")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    cfg = TrainConfig(
        batch_size=args.batch_size,
        image_size=args.image_size or None,
        channels=args.channels,
        compile=args.compile,
        cuda_graph=args.cuda_graph,
        fold_projection=args.fold_projection,
        gram_table=args.gram_table,
        bf16=True,
    )
    if args.quick:
        cfg = TrainConfig(
            dataset="random",
            image_size=8,
            channels=1,
            batch_size=4,
            length=12,
            cuda_graph=args.cuda_graph,
            fold_projection=args.fold_projection,
            learner_kwargs={"d_model": 16, "n_layers": 1, "n_heads": 2, "head_dim": 8},
        )
        args.steps, args.warmup, args.top = 2, 1, 5
    text = profile_steps(cfg, args.steps, args.warmup, device, args.top)
    print(text)
    return text


if __name__ == "__main__":
    main()
