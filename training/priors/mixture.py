"""A batch of meta-training tasks from all prior families, prepared as the estimator prepares a table.

Every step draws ``batch_size`` sequences of ``length`` rows: a fixed share per family
(``PriorConfig.weights``), each family in a few chunks with their own structure. Every
chunk goes through :mod:`gpicl_sklearn.inputs` (statistics of the sequence's rows,
clipping, missing indicators, slot layout or projection onto the model's ``width``
inputs), then its classes get random distinct label slots; logits of the unused slots
are masked, as the estimator's softmax runs over the used slots only.

On a GPU the number of kernels, not their arithmetic, sets a batch's cost: only the
draws of each chunk's structure run per chunk. The corruptions run once over all table
chunks (every table family pads to ``max_features``), the input preprocessing once per
width (tables and narrow image views padded with absent features to
``max(max_features, width)``; full images at their pixel count), the label slots once
per batch. Everything drawn per sequence is drawn as before, so the tasks' distribution
is unchanged; no step reads a device value on the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from gpicl_sklearn.inputs import draw_layout, fit_input_stats, model_inputs
from training.data import load_dataset
from training.priors import clusters, corruptions, mlp, trees
from training.priors.common import MAX_CLASSES, RawTasks
from training.priors.images import ImageTasks

TABLE_FAMILIES = {"mlp": mlp.sample, "trees": trees.sample, "clusters": clusters.sample}


@dataclass(frozen=True)
class PriorConfig:
    """The task mixture: shares of each family per batch and the table sizes."""

    weights: dict = field(default_factory=lambda: {"mlp": 0.35, "trees": 0.25, "clusters": 0.15, "images": 0.25})
    max_features: int = 100  # tables get 1..max_features features (log-uniform)
    chunks: int = 2  # chunks per family and batch, each with its own depth, activation, view, ...
    layout: str = "slots"
    image_datasets: tuple = ("mnist", "fashion_mnist")  # train splits, native pixels
    binary_share: float | None = None  # table tasks with two classes; None: 2..10 uniformly (images: always)

    def __post_init__(self):
        object.__setattr__(self, "weights", dict(self.weights))
        object.__setattr__(self, "image_datasets", tuple(self.image_datasets))
        unknown = set(self.weights) - {*TABLE_FAMILIES, "images"}
        if unknown:
            raise ValueError(f"PriorConfig.weights: unknown families {sorted(unknown)}")
        if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ValueError(f"PriorConfig.weights must be non-negative with a positive sum, got {self.weights}")
        if self.binary_share is not None and not 0 <= self.binary_share <= 1:
            raise ValueError(f"PriorConfig.binary_share must be in [0, 1] or None, got {self.binary_share}")


def load_images(cfg: PriorConfig, split: str, device) -> list[tuple[Tensor, Tensor]]:
    """The datasets the image tasks draw from (none without image tasks): native pixels,
    one channel, as a user passes MNIST to the estimator."""
    names = cfg.image_datasets if cfg.weights.get("images", 0) > 0 else ()
    return [load_dataset(name, split, size=None, channels=1, device=device) for name in names]


def family_sizes(weights: dict, batch_size: int) -> dict[str, int]:
    """Sequences per family: proportional to ``weights``, summing to ``batch_size``."""
    names = [n for n, w in weights.items() if w > 0]
    w = np.array([weights[n] for n in names], dtype=float)
    exact = w / w.sum() * batch_size
    sizes = np.floor(exact).astype(int)
    sizes[np.argsort(sizes - exact)[: batch_size - sizes.sum()]] += 1  # largest remainders
    return {n: int(s) for n, s in zip(names, sizes, strict=True) if s > 0}


def compact_labels(y: Tensor) -> tuple[Tensor, Tensor]:
    """Labels renumbered ``0..k-1`` over the classes present in each sequence, and ``k``."""
    present = torch.zeros(y.shape[0], MAX_CLASSES, dtype=torch.long, device=y.device)
    present.scatter_(1, y, 1)
    new = present.cumsum(1) - 1
    return new.gather(1, y), present.sum(1)


def assign_slots(y: Tensor, k: Tensor, num_slots: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random distinct label slots for classes ``0..k-1``: ``(slot labels, (b, num_slots) used mask)``."""
    perm = torch.rand(y.shape[0], num_slots, generator=g, device=y.device).argsort(1)
    used = torch.zeros(y.shape[0], num_slots, dtype=torch.bool, device=y.device)
    used.scatter_(1, perm, torch.arange(num_slots, device=y.device)[None].expand(y.shape[0], -1) < k[:, None])
    return perm.gather(1, y), used


class PriorSampler:
    """Draws ``(x, y, slot_mask)`` batches: ``(B, L, width)`` inputs, ``(B, L)`` slot labels, ``(B, C)`` bool.

    Parameters
    ----------
    cfg : PriorConfig
    length, width, num_slots : int
        Rows per sequence, model input width, label slots.
    images : list of (x, y)
        Image datasets on the device (needed when ``cfg.weights["images"] > 0``).
    generator : torch.Generator
        Per-row randomness on the device; its state is the sampler's position.
    seed, calls : int
        Seed the host generator of each call's structural choices; ``calls``: batches drawn
        before (a resumed run passes its step, and draws the structures it would have).
    """

    def __init__(self, cfg: PriorConfig, length, width, num_slots, images, generator, seed: int, calls: int = 0):
        if cfg.weights.get("images", 0) > 0 and not images:
            raise ValueError("the prior has image tasks but no image datasets were given")
        self.cfg, self.length, self.width, self.num_slots = cfg, length, width, num_slots
        self.images = ImageTasks(images) if images else None
        self.g, self.seed, self.calls = generator, seed, calls

    def sample(self, batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
        rng = np.random.default_rng([self.seed, self.calls])
        self.calls += 1
        chunks: list[RawTasks] = []  # in the batch's order: families as in cfg.weights
        table_chunks: list[int] = []  # indices of the table chunks, corrupted together below
        share = self.cfg.binary_share
        for name, size in family_sizes(self.cfg.weights, batch_size).items():
            bounds = np.linspace(0, size, min(self.cfg.chunks, size) + 1).astype(int)
            for b in np.diff(bounds):
                if name == "images":
                    chunks.append(self.images.sample(int(b), self.length, self.width, self.g, rng))
                else:
                    table_chunks.append(len(chunks))
                    chunks.append(TABLE_FAMILIES[name](int(b), self.length, self.cfg.max_features, self.g, rng, share))
        if table_chunks:  # every table family pads its tables to max_features: one set of kernels for all
            merged = corruptions.corrupt(
                _concat([chunks[i] for i in table_chunks]),
                self.g,
                rng,
                chunks=[chunks[i].y.shape[0] for i in table_chunks],
            )
            start = 0
            for i in table_chunks:
                size = chunks[i].y.shape[0]
                chunks[i] = RawTasks(*(t[start : start + size] for t in (merged.x, merged.y, merged.feature_mask)))
                start += size
        x = self._prepare_chunks(chunks)
        y, k = compact_labels(torch.cat([c.y for c in chunks]))
        y, used = assign_slots(y, k, self.num_slots, self.g)
        return x, y, used

    def _prepare_chunks(self, chunks: list[RawTasks]) -> Tensor:
        """The model inputs of all chunks, in order: chunks narrower than the common width
        (``max(max_features, width)``) are padded to it with absent features and prepared
        together; wider ones (full-view images) together per width."""
        common = max(self.cfg.max_features, self.width)
        groups: dict[int, list[int]] = {}
        for i, c in enumerate(chunks):
            groups.setdefault(max(c.x.shape[2], common), []).append(i)
        pieces: list[Tensor | None] = [None] * len(chunks)
        for d, members in groups.items():
            x = self._prepare(_concat([chunks[i] for i in members], d))
            start = 0
            for i in members:
                size = chunks[i].y.shape[0]
                pieces[i] = x[start : start + size]
                start += size
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def _prepare(self, raw: RawTasks) -> Tensor:
        stats = fit_input_stats(raw.x, raw.feature_mask)
        layout = draw_layout(stats.present, self.width, self.cfg.layout, self.g)
        return model_inputs(raw.x, stats, layout)


def _concat(chunks: list[RawTasks], d: int | None = None) -> RawTasks:
    """One :class:`RawTasks` of the chunks' sequences, features padded with absent ones to ``d``."""
    if d is not None:
        chunks = [
            RawTasks(
                x=torch.nn.functional.pad(c.x, (0, d - c.x.shape[2])),
                y=c.y,
                feature_mask=torch.nn.functional.pad(c.feature_mask, (0, d - c.x.shape[2])),
            )
            if c.x.shape[2] < d
            else c
            for c in chunks
        ]
    if len(chunks) == 1:
        return chunks[0]
    return RawTasks(*(torch.cat(ts) for ts in zip(*((c.x, c.y, c.feature_mask) for c in chunks), strict=True)))
