"""How rows of a table become the model's input vectors: one definition for training and inference.

Meta-training applies these functions to every synthetic or image task, and
:class:`~gpicl_sklearn.GPICLClassifier` applies them to the user's table, so the model sees
at ``fit`` exactly the kind of inputs it saw in training. Everything is batched over
*sequences* (a meta-training task, or an ensemble member of the estimator): ``x`` is
``(B, rows, D)`` with ``NaN`` marking a missing value.

1. :func:`fit_input_stats`: per-sequence statistics from the **context rows only**.
   Each feature is divided by its largest magnitude first (values near 1e300 do not
   overflow the variance), then z-scored. A feature with missing values in the context
   gets a *missing indicator* column, so the model can tell "missing" from any value.
   Features constant in the context carry no information and are dropped.
2. :func:`standardize`: z-scores clipped to ``[-Z_CLIP, Z_CLIP]`` (a rare category or an
   outlier must not dominate), missing values set to 0 (the context mean), the
   indicators appended, and everything divided by the root-mean-square of the context's
   values, so the inputs have unit mean square whatever the table.
3. :func:`draw_layout`: a ``(2D, width)`` matrix that places the present columns into the
   model's ``width`` input slots. ``"slots"``: each column into its own random slot (the
   model sees each feature on an axis of its own and can learn per-feature thresholds);
   when more columns are present than slots, or in ``"projection"`` mode (the paper's
   augmentation, Kirsch et al. 2022), a Gaussian random projection ``N(0, 1/n_present)``,
   whose outputs also have unit variance.

:func:`model_inputs` chains 2 and 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Meta-training inputs are bounded; a feature that is almost constant in the context (a
# border pixel, a rare category) gets z-scores in the tens or hundreds, which would
# dominate every other feature.
Z_CLIP = 3.0
LAYOUTS = ("slots", "projection")


@dataclass
class InputStats:
    """Per-sequence statistics of the context rows (``B`` sequences, ``D`` features)."""

    prescale: Tensor  # (B, D): 1 / max |x| over the context
    mean: Tensor  # (B, 2D): of the prescaled values, then of the missing indicators
    inv_std: Tensor  # (B, 2D)
    present: Tensor  # (B, 2D) bool: columns that carry information
    inv_rms: Tensor  # (B, 1, 1)


def fit_input_stats(x: Tensor, feature_mask: Tensor | None = None) -> InputStats:
    """Statistics of the context rows ``x`` (``(B, n, D)``, ``NaN`` = missing).

    ``feature_mask`` (``(B, D)`` bool) marks the features that exist in each sequence
    (meta-training pads tables of different widths to one ``D``); ``None``: all exist.
    Computed in ``x``'s dtype; pass float64 for user data.
    """
    missing = torch.isnan(x)
    exists = torch.ones(x.shape[0], x.shape[2], dtype=torch.bool, device=x.device)
    if feature_mask is not None:
        exists = exists & feature_mask
    values = x.masked_fill(missing, 0.0)
    n_obs = (~missing).sum(1)  # (B, D)
    peak = values.abs().amax(1)
    prescale = torch.where(peak > 0, 1.0 / peak.clamp_min(torch.finfo(x.dtype).tiny), torch.ones_like(peak))
    values = values * prescale[:, None, :]
    mean = values.sum(1) / n_obs.clamp_min(1)
    centred = torch.where(missing, 0.0, values - mean[:, None, :])
    std = (centred.square().sum(1) / n_obs.clamp_min(1)).sqrt()
    indicator = missing.to(x.dtype)
    ind_mean = indicator.mean(1)
    ind_std = (ind_mean * (1 - ind_mean)).sqrt()
    # Relative to the prescaled range (at most 1): smaller spreads are rounding noise.
    eps = 1e-6 if x.dtype == torch.float32 else 1e-12
    present = torch.cat([exists & (std > eps), exists & (ind_std > 0)], dim=1)
    mean = torch.cat([mean, ind_mean], dim=1)
    inv_std = torch.cat([1.0 / std.clamp_min(eps), 1.0 / ind_std.clamp_min(eps)], dim=1)
    stats = InputStats(prescale=prescale, mean=mean, inv_std=inv_std, present=present, inv_rms=x.new_ones(()))
    z = _clipped(x, stats)
    n_present = present.sum(1).clamp_min(1)  # (B,)
    mean_square = z.square().sum((1, 2)) / (n_present * x.shape[1])
    stats.inv_rms = torch.where(mean_square > 0, mean_square.clamp_min(1e-12).rsqrt(), 1.0)[:, None, None]
    return stats


def _clipped(x: Tensor, stats: InputStats) -> Tensor:
    """Clipped z-scores of values and indicators, ``(B, m, 2D)``; absent columns are 0."""
    missing = torch.isnan(x)
    values = x.masked_fill(missing, 0.0) * stats.prescale[:, None, :]
    both = torch.cat([values, missing.to(x.dtype)], dim=2)
    z = ((both - stats.mean[:, None, :]) * stats.inv_std[:, None, :]).clamp(-Z_CLIP, Z_CLIP)
    z = torch.cat([z[..., : x.shape[2]].masked_fill(missing, 0.0), z[..., x.shape[2] :]], dim=2)
    return z * stats.present[:, None, :]


def standardize(x: Tensor, stats: InputStats) -> Tensor:
    """Rows ``x`` (``(B, m, D)``) as clipped, rescaled z-scores with indicators, ``(B, m, 2D)``."""
    return _clipped(x, stats) * stats.inv_rms


def draw_slot_indices(present: Tensor, width: int, generator: torch.Generator | None = None) -> Tensor:
    """``(B, 2D)`` long: the input slot of each present column, ``-1`` elsewhere.

    A uniformly random injection of the present columns into the ``width`` slots, per
    sequence; a sequence with more present columns than slots gets ``-1`` everywhere (it is
    projected instead, see :func:`draw_layout`). The estimator stores these indices
    (:mod:`gpicl_sklearn.layouts`); meta-training expands them to one-hot rows.
    """
    b, columns = present.shape
    dev = present.device
    keys = torch.rand(b, columns, device=dev, generator=generator).masked_fill(~present, 2.0)
    rank = keys.argsort(1).argsort(1)  # present columns first, in random order
    slot_of = torch.rand(b, width, device=dev, generator=generator).argsort(1)  # rank -> slot, per sequence
    slot = slot_of.gather(1, rank.clamp_max(width - 1))
    fits = (present.sum(1) <= width)[:, None]
    return torch.where(present & fits, slot, -1)


def draw_layout(present: Tensor, width: int, mode: str, generator: torch.Generator | None = None) -> Tensor:
    """The ``(B, 2D, width)`` matrix that maps standardised columns onto the model's input slots.

    ``"slots"``: present column ``j`` goes to its own slot (:func:`draw_slot_indices`, a
    one-hot row); sequences with more present columns than slots, and every sequence in
    ``"projection"`` mode, get ``A_jk ~ N(0, 1/n_present)`` on the present rows instead
    (zero rows elsewhere).
    """
    if mode not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {mode!r}")
    b, columns = present.shape
    dev, dtype = present.device, torch.float32
    n_present = present.sum(1)  # (B,)
    gauss = torch.randn(b, columns, width, device=dev, generator=generator, dtype=dtype)
    projection = gauss * present[..., None] / n_present.clamp_min(1).to(dtype).sqrt()[:, None, None]
    if mode == "projection":
        return projection
    slot = draw_slot_indices(present, width, generator)
    # One-hot by comparison: F.one_hot checks its values on the host (a device sync off CUDA).
    slots = (slot[..., None] == torch.arange(width, device=dev)).to(dtype)
    use_slots = (n_present <= width)[:, None, None]
    return torch.where(use_slots, slots, projection)


def model_inputs(x: Tensor, stats: InputStats, layout: Tensor) -> Tensor:
    """``standardize(x) @ layout``: the ``(B, m, width)`` inputs of the model."""
    return standardize(x, stats).to(layout.dtype) @ layout
