"""Growing a trained Transformer deeper: same function at the start, new blocks that learn."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gpicl_sklearn.model import GPICLConfig, GPICLTransformer
from training.grow import load_weights, trained_positions

CFG = GPICLConfig(input_dim=6, num_classes=3, max_len=9, d_model=16, n_layers=2, n_heads=2, head_dim=8, qk_norm=True)


def model(n_layers: int, seed: int) -> GPICLTransformer:
    torch.manual_seed(seed)
    return GPICLTransformer(dataclasses.replace(CFG, n_layers=n_layers))


def test_trained_blocks_spread_evenly_first_block_first():
    assert trained_positions(8, 12) == [0, 1, 3, 4, 6, 7, 9, 10]
    assert trained_positions(8, 16) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert trained_positions(2, 2) == [0, 1]


def test_a_grown_model_computes_what_the_trained_one_did():
    trained, grown = model(2, seed=0), model(5, seed=1)
    load_weights(grown, trained)
    x, y = torch.randn(4, 9, 6), torch.randint(0, 3, (4, 9))
    torch.testing.assert_close(grown(x, y), trained(x, y))
    assert torch.equal(grown.blocks[2].mlp[0].weight, trained.blocks[1].mlp[0].weight)  # 2 -> 5: at 0 and 2


def test_new_blocks_learn_from_the_first_step():
    trained, grown = model(2, seed=0), model(4, seed=1)
    load_weights(grown, trained)
    x, y = torch.randn(4, 9, 6), torch.randint(0, 3, (4, 9))
    torch.nn.functional.cross_entropy(grown(x, y).flatten(0, 1), y.flatten()).backward()
    new = grown.blocks[1]  # 2 -> 4: trained at 0 and 2
    assert new.attn.proj.weight.grad.abs().sum() > 0 and new.mlp[2].weight.grad.abs().sum() > 0


def test_same_depth_is_a_plain_copy():
    trained, copy = model(2, seed=0), model(2, seed=1)
    load_weights(copy, trained)
    for name, value in copy.state_dict().items():
        assert torch.equal(value, trained.state_dict()[name])


@pytest.mark.parametrize("change", [{"n_layers": 1}, {"d_model": 32}, {"qk_norm": False}])
def test_growing_refuses_anything_but_a_deeper_model_of_the_same_architecture(change):
    trained = model(2, seed=0)
    other = GPICLTransformer(dataclasses.replace(CFG, **change))
    with pytest.raises(ValueError, match="only a deeper model"):
        load_weights(other, trained)


def test_growing_refuses_another_learner():
    with pytest.raises(ValueError, match="GPICL Transformer only"):
        load_weights(torch.nn.Linear(2, 2), model(2, seed=0))
