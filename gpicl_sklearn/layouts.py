"""Each ensemble member's input layout, stored as integers and seeds, never as a float matrix.

:func:`gpicl_sklearn.inputs.draw_layout` describes the layouts of meta-training as a
``(2D, width)`` matrix ``P``. For the estimator that matrix would be
``n_estimators x 2 n_features x width`` floats, in memory and in every pickle (gigabytes
for a table of 200,000 columns). :class:`MemberLayouts` stores the same draws compactly:

* **slots** (at most ``width`` present columns, ``"slots"`` checkpoints): ``P`` is a
  one-hot matrix, i.e. an injection ``slot[j]`` of the present columns into the
  ``width`` input slots: an int32 per column, and ``z P`` is a scatter.
* **projection** (more present columns than slots, or ``"projection"`` checkpoints):
  ``P_jk ~ N(0, 1/n_present)`` on the present rows; only the seed is stored and ``P`` is
  regenerated in blocks of :data:`BLOCK_ROWS` rows when needed (kept in memory only while
  it is small, see :data:`CACHE_FLOATS`).

Both are drawn from the same distributions as :func:`~gpicl_sklearn.inputs.draw_layout`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gpicl_sklearn.inputs import LAYOUTS, draw_slot_indices

BLOCK_ROWS = 4096  # rows of P generated at a time: the draws do not depend on how P is used
CACHE_FLOATS = 2**25  # keep regenerated projections in memory up to 128 MiB


@dataclass
class MemberLayouts:
    """Layouts of ``E`` members over ``2D`` standardised columns (values, then missing indicators)."""

    width: int
    slots: np.ndarray  # (E, 2D) int32: input slot of each column; -1: absent or projected member
    projected: np.ndarray  # (E,) bool: member uses a Gaussian projection
    seeds: np.ndarray  # (E,) int64: seed of each member's projection
    n_present: np.ndarray  # (E,) int64: present columns per member

    def projection(self, e: int, dtype=torch.float32) -> torch.Tensor:
        """Member ``e``'s ``(2D, width)`` Gaussian matrix ``N(0, 1/n_present)`` (rows of absent columns too)."""
        generator = torch.Generator().manual_seed(int(self.seeds[e]))
        rows = self.slots.shape[1]
        blocks = [
            torch.randn(min(BLOCK_ROWS, rows - start), self.width, generator=generator, dtype=dtype)
            for start in range(0, rows, BLOCK_ROWS)
        ]
        return torch.cat(blocks) / float(max(self.n_present[e], 1)) ** 0.5

    def matrix(self, e: int) -> torch.Tensor:
        """Member ``e``'s layout as the dense ``(2D, width)`` matrix of ``draw_layout`` (for tests)."""
        if self.projected[e]:
            return self.projection(e)
        dense = torch.zeros(self.slots.shape[1], self.width)
        cols = np.flatnonzero(self.slots[e] >= 0)
        dense[cols, self.slots[e, cols]] = 1.0
        return dense


def draw_member_layouts(present: np.ndarray, width: int, mode: str, rng: np.random.Generator) -> MemberLayouts:
    """Draw each member's layout from its ``present`` columns (``(E, 2D)`` bool).

    ``"slots"``: a member with ``n_present <= width`` sends its present columns to distinct
    slots drawn by :func:`~gpicl_sklearn.inputs.draw_slot_indices`, the draw of
    meta-training; otherwise, and always in ``"projection"`` mode, it gets a Gaussian
    projection from its own seed.
    """
    if mode not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {mode!r}")
    n_present = present.sum(1).astype(np.int64)
    projected = (n_present > width) | (mode == "projection")
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    slots = draw_slot_indices(torch.from_numpy(present), width, generator).numpy().astype(np.int32)
    slots[projected] = -1
    seeds = rng.integers(2**62, size=len(present), dtype=np.int64)
    return MemberLayouts(width=width, slots=slots, projected=projected, seeds=seeds, n_present=n_present)


class LayoutApplier:
    """``z -> z P_e`` for the members' standardised rows, on one device.

    Slot members scatter their columns into the slots; projected members multiply by their
    regenerated Gaussian matrix (cached while all of them fit in :data:`CACHE_FLOATS`).
    """

    def __init__(self, layouts: MemberLayouts, device: torch.device):
        self.layouts = layouts
        self.device = device
        width = layouts.width
        # Absent columns (z = 0 there) go to a spare slot ``width`` that is dropped.
        index = np.where(layouts.slots >= 0, layouts.slots, width).astype(np.int64)
        self.index = torch.from_numpy(index).to(device)
        self.projected = np.flatnonzero(layouts.projected)
        size = len(self.projected) * layouts.slots.shape[1] * width
        self.cache = (
            {int(e): layouts.projection(int(e)).to(device) for e in self.projected} if size <= CACHE_FLOATS else None
        )

    def __call__(self, z: torch.Tensor, members: slice) -> torch.Tensor:
        """``z``: ``(g, rows, 2D)`` float32 of members ``members``; returns ``(g, rows, width)``."""
        g, rows, _ = z.shape
        out = torch.zeros(g, rows, self.layouts.width + 1, device=z.device, dtype=z.dtype)
        out.scatter_add_(2, self.index[members, None, :].expand(g, rows, -1), z)
        out = out[..., :-1]
        first = members.start or 0
        for e in self.projected:
            if first <= e < first + g:
                matrix = self.cache[int(e)] if self.cache is not None else self.layouts.projection(int(e)).to(z.device)
                out[e - first] = z[e - first] @ matrix
        return out
