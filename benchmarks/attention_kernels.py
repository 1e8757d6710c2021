"""Causal attention forward + backward at the meta-training shapes, per implementation.

    python -m benchmarks.attention_kernels                 # GPU: B = 128 and 512 sequences
    python -m benchmarks.attention_kernels --quick         # CPU smoke run

The paper's model attends over L = 100 tokens with 8 heads of size 32: short sequences and
small heads, where a flash-attention kernel's 64 x 64 tiles are mostly padding. Each
implementation's forward and backward (bf16 on a GPU) is captured in one CUDA graph and
replayed, as in training (``training/stepper.py``), so launch overhead stays out; the table
gives ms per layer and the largest difference of its output and input gradients from a
float32 reference.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.common import command_line, write_outputs


def _sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _explicit(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Masked softmax written out, for inductor to fuse (scale, mask, softmax in one kernel)."""
    t = q.shape[-2]
    s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    p = s.float().masked_fill(~causal, float("-inf")).softmax(-1).to(v.dtype)
    return p @ v


def _backend(backend: SDPBackend) -> Callable:
    def run(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        with sdpa_kernel(backend):
            return _sdpa(q, k, v)

    return run


def implementations(device: torch.device) -> dict[str, Callable]:
    impls = {"sdpa, compiled": torch.compile(_sdpa), "explicit softmax, compiled": torch.compile(_explicit)}
    impls["explicit softmax, eager"] = _explicit
    if device.type == "cuda":
        impls |= {
            "sdpa flash": _backend(SDPBackend.FLASH_ATTENTION),
            "sdpa memory-efficient": _backend(SDPBackend.EFFICIENT_ATTENTION),
            "sdpa cuDNN": _backend(SDPBackend.CUDNN_ATTENTION),
        }
    impls["sdpa math"] = _backend(SDPBackend.MATH)
    return impls


def _inputs(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, seed: int) -> list[Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return [torch.randn(shape, generator=g).to(device, dtype).requires_grad_() for _ in range(3)]


def _fwd_bwd(fn: Callable, qkv: list[Tensor], grad: Tensor) -> list[Tensor]:
    for t in qkv:
        t.grad = None
    out = fn(*qkv)
    out.backward(grad)
    return [out.detach()] + [t.grad for t in qkv]


def time_ms(fn: Callable, qkv: list[Tensor], grad: Tensor, iters: int) -> float:
    """ms per forward + backward: replays of one captured graph on a GPU, a loop on CPU."""
    if qkv[0].device.type != "cuda":
        import time

        _fwd_bwd(fn, qkv, grad)
        start = time.perf_counter()
        for _ in range(iters):
            _fwd_bwd(fn, qkv, grad)
        return (time.perf_counter() - start) / iters * 1e3
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # compile, autotune and allocate outside the capture
            _fwd_bwd(fn, qkv, grad)
    torch.cuda.current_stream().wait_stream(side)
    for t in qkv:
        t.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(*qkv)
        out.backward(grad)
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def compare(batch: int, heads: int, length: int, head_dim: int, device: torch.device, iters: int) -> list[dict]:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shape = (batch, heads, length, head_dim)
    ref_in = [t.detach().double().requires_grad_() for t in _inputs(shape, dtype, device, 0)]
    grad = torch.randn(shape, generator=torch.Generator(device="cpu").manual_seed(1)).to(device)
    reference = _fwd_bwd(_explicit, ref_in, grad.double())
    rows = []
    for name, fn in implementations(device).items():
        qkv = _inputs(shape, dtype, device, 0)
        try:
            got = _fwd_bwd(fn, qkv, grad.to(dtype))
            err = max(float((g.double() - r).abs().max()) for g, r in zip(got, reference, strict=True))
            ms = time_ms(fn, qkv, grad.to(dtype), iters)
        except RuntimeError as e:  # a backend that does not take these shapes on this device
            rows.append({"batch": batch, "impl": name, "ms": None, "max_error": None, "error": str(e)[:120]})
            continue
        rows.append({"batch": batch, "impl": name, "ms": ms, "max_error": err})
    return rows


def table(rows: list[dict], layers: int) -> str:
    lines = [f"| B | implementation | ms per layer | ms x {layers} layers | max error |", "|---:|---|---:|---:|---:|"]
    for r in rows:
        if r["ms"] is None:
            lines.append(f"| {r['batch']} | {r['impl']} | unsupported | | {r['error']} |")
        else:
            lines.append(
                f"| {r['batch']} | {r['impl']} | {r['ms']:.3f} | {r['ms'] * layers:.3f} | {r['max_error']:.2g} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="128,512")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4, help="scales the per-layer time to a model's")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: small shapes")
    parser.add_argument("--out", type=Path, help="also write attention_kernels.{md,json} here")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    if args.quick:
        args.batches, args.heads, args.length, args.head_dim, args.iters = "2", 2, 12, 8, 2
    rows = []
    for b in args.batches.split(","):
        rows += compare(int(b), args.heads, args.length, args.head_dim, device, args.iters)
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    command = command_line("benchmarks.attention_kernels", argv)
    text = (
        f"{where}, torch {torch.__version__}: {args.heads} heads x {args.length} tokens x {args.head_dim}, "
        f"forward + backward\n\n{table(rows, args.layers)}\n\nMade by `{command}`."
    )
    print(text)
    if args.out is not None:
        write_outputs(args.out, "attention_kernels", text, {"device": where, "torch": torch.__version__, "rows": rows})
    return text


if __name__ == "__main__":
    main()
