"""Start a run from trained weights, into a model as deep or deeper than the one they came from.

A deeper model grown this way computes exactly what the trained one did: its extra blocks
are interleaved with the trained ones and start as the identity. A pre-LayerNorm block adds
``attn(ln1(h))`` and ``mlp(ln2(h))`` to the residual stream ``h``; with the two output
projections (``attn.proj``, the MLP's last layer) zero, it adds nothing, while the
gradients of those projections are not zero (their inputs are not), so the new blocks begin
to learn at the first step. This adds capacity to a model without giving up what it has
learnt (training/RUNS.md: more sequences for the same 8 x 256 model bought less each time).
"""

from __future__ import annotations

import dataclasses

import torch

from gpicl_sklearn.model import GPICLTransformer

# The layers whose weights and biases write a block's output into the residual stream.
_OUTPUT_PROJECTIONS = ("attn.proj", "mlp.2")


def trained_positions(n_trained: int, n_layers: int) -> list[int]:
    """Where the trained blocks go among ``n_layers``: spread evenly, the first block first."""
    return [i * n_layers // n_trained for i in range(n_trained)]


def load_weights(learner: GPICLTransformer, trained: GPICLTransformer) -> None:
    """``learner`` takes ``trained``'s weights; blocks it has beyond them start as the identity.

    Raises
    ------
    ValueError
        ``learner`` is not a GPICL Transformer, differs from ``trained`` in anything but its
        depth, or is shallower.
    """
    if not isinstance(learner, GPICLTransformer):
        raise ValueError(f"checkpoint weights start a GPICL Transformer only, not a {type(learner).__name__}")
    mine, theirs = learner.cfg, trained.cfg
    if dataclasses.replace(mine, n_layers=theirs.n_layers) != theirs or mine.n_layers < theirs.n_layers:
        raise ValueError(
            f"cannot start a {mine} from the weights of a {theirs}: only a deeper model of the same "
            "architecture can grow from it"
        )
    state = learner.state_dict()
    source = trained.state_dict()
    at = trained_positions(theirs.n_layers, mine.n_layers)
    for name, value in source.items():
        if name.startswith("blocks."):
            _, index, rest = name.split(".", 2)
            name = f"blocks.{at[int(index)]}.{rest}"
        state[name] = value
    for index in sorted(set(range(mine.n_layers)) - set(at)):
        for layer in _OUTPUT_PROJECTIONS:
            for kind in ("weight", "bias"):
                key = f"blocks.{index}.{layer}.{kind}"
                state[key] = torch.zeros_like(state[key])
    learner.load_state_dict(state)
