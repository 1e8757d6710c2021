"""What one batch of the task prior costs: ops (kernel launches) and host syncs per batch, ms per batch.

    python -m benchmarks.profile_prior --batch-size 64 --length 1024 --device cuda   # the prior_8x256 batch
    python -m benchmarks.profile_prior --batch-size 64 --length 256 --device cpu     # a CPU-sized batch

Builds :class:`training.priors.mixture.PriorSampler` as :func:`training.train.train` does
(``PriorConfig`` defaults, ``--width`` input slots, 10 label slots), with random images of
MNIST's shape in place of the datasets (``--real-images``: the train splits; the cost of
a batch does not depend on the pixels). Draws ``--warmup`` batches, then profiles
``--batches`` batches with :mod:`torch.profiler` and prints per batch:

* ``ops``: top-level ATen ops (an op that no other ATen op called), i.e. the kernels a GPU
  launches eagerly (a few, such as ``empty``, launch none; on CUDA the launches themselves
  are counted too);
* ``syncs``: ops that copy a device value to the host (``item``, ``nonzero``, ...): each
  stalls the host until the device has caught up, and with it any overlap of the
  sampling with the train step;
* ``ms``: wall time per batch (timed without the profiler, after a device synchronise).

``--prefetch`` draws through :class:`training.prefetch.Prefetcher` (one batch ahead, on a
side stream on CUDA), as :func:`training.train.train` does: the same ops; on a GPU the
wall time then includes only what the host spends launching them.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.profiler import ProfilerActivity, profile

from training.priors.mixture import PriorConfig, PriorSampler, load_images

SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::unique", "aten::_unique2", "aten::masked_select")
LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")


def _images(cfg: PriorConfig, device: torch.device, real: bool, rows: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if real:
        return load_images(cfg, "train", device)
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(rows, 784, generator=g).to(device), (torch.arange(rows) % 10).to(device)) for _ in range(2)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_ops(draw, batches: int, device: torch.device) -> dict[str, float]:
    """Top-level ATen ops, syncing ops and (CUDA) kernel launches per call of ``draw``."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(batches):
            draw()
        _sync(device)
    ops = syncs = launches = 0
    for e in prof.events():
        if e.name in LAUNCHES:
            launches += 1
        if not e.name.startswith("aten::"):
            continue
        syncs += e.name in SYNC_OPS  # nested ones too (item calls _local_scalar_dense)
        parent = e.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        ops += parent is None
    out = {"ops": ops / batches, "syncs": syncs / batches}
    if device.type == "cuda":
        out["launches"] = launches / batches
    return out


def time_ms(draw, batches: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(batches):
        draw()
    _sync(device)
    return (time.perf_counter() - start) / batches * 1e3


def profile_prior(args: argparse.Namespace) -> str:
    device = torch.device(args.device)
    cfg = PriorConfig(**args.prior)
    images = _images(cfg, device, args.real_images, args.image_rows)
    generator = torch.Generator(device=device).manual_seed(0)
    sampler = PriorSampler(cfg, args.length, args.width, 10, images, generator, seed=0)
    source = None
    if args.prefetch:
        from training.prefetch import Prefetcher

        source = Prefetcher(sampler, args.batch_size, ahead=True)

    def draw():
        return source.next() if source is not None else sampler.sample(args.batch_size)

    for _ in range(args.warmup):
        draw()
    counts = count_ops(draw, args.batches, device)
    ms = time_ms(draw, args.batches, device)
    what = "Prefetcher(PriorSampler).next" if args.prefetch else "PriorSampler.sample"
    cols = " | ".join(f"{k}/batch" for k in counts)
    lines = [
        f"{what}: {args.batch_size} sequences x {args.length} rows, width {args.width}, {device}, "
        f"prior {json.dumps(args.prior)}",
        "",
        f"| {cols} | ms/batch |",
        "|" + "---:|" * (len(counts) + 1),
        "| " + " | ".join(f"{v:.0f}" for v in counts.values()) + f" | {ms:.1f} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_prior",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--width", type=int, default=128, help="the model's input slots (out_dim)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--prior", type=json.loads, default={}, help="PriorConfig fields as JSON (default: {})")
    parser.add_argument("--prefetch", action="store_true", help="through training.prefetch.Prefetcher")
    parser.add_argument("--real-images", action="store_true", help="the MNIST / FashionMNIST train splits")
    parser.add_argument("--image-rows", type=int, default=60_000, help="rows of each random image set")
    args = parser.parse_args(argv)
    text = profile_prior(args)
    print(text)
    return text


if __name__ == "__main__":
    main()
