"""Drawing the next batch while the train step runs: a sampler's batches, one step ahead.

On a GPU a draw is many kernels outside the train step's CUDA graph (the prior's hundreds
of small ones; for the paper's tasks a gather, a Gram matrix, a batched Cholesky and the
projection of ``B x L x N_x`` normal draws); a :class:`Prefetcher` queues
the draw of batch ``t + 1`` on a side stream right after the train step of batch ``t``
was queued, so the two run concurrently on the device instead of one after the other.
Each batch carries an event; the consumer's stream waits on it (nothing waits on the
host), and the tensors are marked as used by that stream (``record_stream``) so the
allocator does not hand their memory to the side stream before the step is done.

A resumed run must draw what the uninterrupted run drew: the sampler's generator state
and call counter of the batch *not yet consumed* are what :meth:`Prefetcher.rng_state`
returns and what a checkpoint must save (the draw in flight is drawn again after a resume).
"""

from __future__ import annotations

import torch
from torch import Tensor


class Prefetcher:
    """``next()``: ``sampler.sample(batch_size)``, drawn one call ahead.

    Parameters
    ----------
    sampler
        Has ``sample(batch_size) -> tuple of tensors``, ``g`` (its ``torch.Generator``:
        its state is the sampler's position) and optionally ``calls`` (a call counter that
        seeds host draws, :class:`training.priors.mixture.PriorSampler`, or picks the phase,
        :class:`training.tasks.PaperBatches`).
    batch_size : int
    ahead : bool, optional
        Draw ahead; default: on CUDA generators only (on a CPU the draw cannot overlap the
        step, and ``next()`` is a plain ``sample``).
    """

    def __init__(self, sampler, batch_size: int, ahead: bool | None = None):
        self.sampler, self.batch_size = sampler, batch_size
        device = sampler.g.device
        self.ahead = device.type == "cuda" if ahead is None else ahead
        self.stream = torch.cuda.Stream(device) if self.ahead and device.type == "cuda" else None
        self.pending: tuple[tuple[Tensor, ...], torch.cuda.Event | None] | None = None
        self.position = sampler.g.get_state()  # before the pending draw

    def rng_state(self) -> Tensor:
        """The generator state to checkpoint: the sampler's before the batch ``next()`` returns next."""
        return self.position if self.pending is not None else self.sampler.g.get_state()

    def _draw(self) -> tuple[tuple[Tensor, ...], torch.cuda.Event | None]:
        if self.stream is None:
            return self.sampler.sample(self.batch_size), None
        self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))  # inputs written before
        with torch.cuda.stream(self.stream):
            batch = self.sampler.sample(self.batch_size)
            event = torch.cuda.Event()
            event.record(self.stream)
        return batch, event

    def next(self) -> tuple[Tensor, ...]:
        """The next batch (on CUDA: ready for the current stream), then the draw of the one after."""
        if self.pending is None:
            self.pending = self._draw()
        batch, event = self.pending
        if event is not None:
            consumer = torch.cuda.current_stream(self.stream.device)
            consumer.wait_event(event)
            for t in batch:
                t.record_stream(consumer)
        if self.ahead:
            self.position = self.sampler.g.get_state()
            self.pending = self._draw()
        else:
            self.pending = None
        return batch

    def sample(self, batch_size: int) -> tuple[Tensor, ...]:
        """``next()`` under the sampler's interface (``batch_size`` must be the one given)."""
        if batch_size != self.batch_size:
            raise ValueError(f"this Prefetcher draws batches of {self.batch_size}, not {batch_size}")
        return self.next()
