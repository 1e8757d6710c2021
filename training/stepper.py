"""Running a train step: eagerly, or after a warm-up as the replay of one CUDA graph.

At the paper's sizes a step is a few hundred small kernels: launch overhead, not
arithmetic, sets the time. Replaying a captured graph of the whole step (forward,
backward, clip, optimiser) removes it. A capture needs the step to have run eagerly
first (autograd, cuBLAS and compiled kernels initialised), on a side stream rather than
the legacy default stream, and DDP to be built on that same stream (PyTorch's CUDA-graph
notes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor

# Eager steps before a CUDA graph is captured (autograd, cuBLAS and compiled kernels must
# have run once outside capture; DDP needs 11, PyTorch's CUDA-graph notes say).
GRAPH_WARMUP_STEPS = 11

TrainStep = Callable[[tuple[Tensor, ...], Tensor, Tensor | None], Tensor]


def side_stream(cuda_graph: bool) -> torch.cuda.Stream | None:
    """The stream for the eager steps before a capture; ``None`` when no graph is wanted."""
    return torch.cuda.Stream() if cuda_graph else None


def on_stream(stream: torch.cuda.Stream | None) -> contextlib.AbstractContextManager:
    """Run the block on ``stream`` (no-op for ``None``): where to build DDP for a capture."""
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


class Stepper:
    """``stepper(inputs, y, slot_mask) -> loss``: one optimisation step, eager or replayed.

    Parameters
    ----------
    train_step : callable
        ``train_step(inputs, y, slot_mask) -> loss`` (``slot_mask``: the used label slots, or
        ``None``): forward, backward, clip and optimiser step
        (:func:`training.train.make_train_step`).
    optimizer : torch.optim.Optimizer
        The optimiser ``train_step`` steps; its gradients are zeroed before each eager step.
    side : torch.cuda.Stream or None
        From :func:`side_stream`. ``None``: every step runs eagerly on the current stream.
        A stream: the first :data:`GRAPH_WARMUP_STEPS` steps run eagerly on it, the next
        one is captured as a CUDA graph, and every step from then on replays that graph.
    """

    def __init__(self, train_step: TrainStep, optimizer: torch.optim.Optimizer, side: torch.cuda.Stream | None):
        self.train_step, self.optimizer, self.side = train_step, optimizer, side
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self, inputs: tuple[Tensor, ...], y: Tensor, slot_mask: Tensor | None = None) -> Tensor:
        if self.side is not None and self.graph is None and self.eager_steps >= GRAPH_WARMUP_STEPS:
            self._capture(inputs, y, slot_mask)
        if self.graph is not None:
            return self._replay(inputs, y, slot_mask)
        self.eager_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        if self.side is None:
            return self.train_step(inputs, y, slot_mask)
        self.side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side):
            loss = self.train_step(inputs, y, slot_mask)
        torch.cuda.current_stream().wait_stream(self.side)
        return loss

    def _capture(self, inputs: tuple[Tensor, ...], y: Tensor, slot_mask: Tensor | None) -> None:
        torch.cuda.synchronize()
        # The graph reads its inputs from these buffers: each replay copies a batch in.
        self.static_inputs, self.static_y = tuple(t.clone() for t in inputs), y.clone()
        self.static_mask = None if slot_mask is None else slot_mask.clone()
        self.optimizer.zero_grad(set_to_none=True)  # the captured backward allocates static grads
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_loss = self.train_step(self.static_inputs, self.static_y, self.static_mask)

    def _replay(self, inputs: tuple[Tensor, ...], y: Tensor, slot_mask: Tensor | None) -> Tensor:
        for static, t in zip(self.static_inputs, inputs, strict=True):
            static.copy_(t)
        self.static_y.copy_(y)
        if slot_mask is not None:
            self.static_mask.copy_(slot_mask)
        self.graph.replay()
        return self.static_loss
