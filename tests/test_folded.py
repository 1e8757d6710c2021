"""training/folded.py: inputs sampled at the first layer's width have the distribution, and the
expected gradient, of the projected 3072-d inputs they replace."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gpicl_sklearn.model import GPICLConfig, GPICLTransformer
from training.folded import FoldedTransformer, folded_embedding
from training.learners import build_learner
from training.tasks import TaskConfig, TaskSampler, gram_cholesky

N_IN, N_X, D, L = 6, 20, 3, 4


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(L, N_IN, generator=g, dtype=torch.float64).float()
    layer = nn.Linear(N_X, D)
    with torch.no_grad():
        w = torch.randn(D, N_X, generator=g) / math.sqrt(N_X)
        layer.weight.copy_(w + torch.tensor([[0.0], [1.0], [-0.7]]) * w[0])  # strongly correlated rows
        layer.bias.copy_(torch.randn(D, generator=g))
    return x, layer


def direct(x: torch.Tensor, layer: nn.Linear, n: int, g: torch.Generator) -> torch.Tensor:
    """``layer(x A)`` for ``n`` fresh ``A ~ N(0, 1/N_in)``: what folding replaces."""
    a = torch.randn(n, N_IN, N_X, generator=g) / math.sqrt(N_IN)
    return layer(x @ a)


def folded(x: torch.Tensor, layer: nn.Linear, n: int, g: torch.Generator) -> torch.Tensor:
    chol = gram_cholesky(x.expand(n, L, N_IN))
    return folded_embedding(layer, chol, torch.randn(n, L, D, generator=g))


def test_folded_inputs_have_the_mean_and_covariance_of_the_projected_first_layer(setup):
    x, layer = setup
    n = 200_000
    expected_cov = torch.kron(x @ x.T / N_IN, layer.weight @ layer.weight.T).detach()  # cov of vec(h), row-major
    for sample in (direct, folded):
        with torch.no_grad():
            h = sample(x, layer, n, torch.Generator().manual_seed(1)).reshape(n, L * D).double()
        centred = h - h.mean(0)
        cov = centred.T @ centred / (n - 1)
        scale = expected_cov.abs().max().item()
        assert torch.allclose(h.mean(0).float(), layer.bias.repeat(L).detach(), atol=0.02 * scale**0.5), sample.__name__
        assert (cov.float() - expected_cov).abs().max().item() < 0.02 * scale, sample.__name__


def test_folded_gradient_estimates_the_same_expected_gradient(setup):
    """Both estimators' means agree within 5 standard errors, measured from 20 chunks each."""
    x, layer = setup
    v = torch.randn(L, D, generator=torch.Generator().manual_seed(2))
    stats = {}
    for sample in (direct, folded):
        g, chunks = torch.Generator().manual_seed(3), []
        for _ in range(20):
            layer.zero_grad()
            h = sample(x, layer, 20_000, g)
            (torch.tanh(h) * v).sum(dim=(1, 2)).mean().backward()  # a nonlinear loss of the inputs
            chunks.append(torch.cat([layer.weight.grad.flatten(), layer.bias.grad]))
        chunks = torch.stack(chunks).double()
        stats[sample.__name__] = (chunks.mean(0), chunks.std(0) / math.sqrt(len(chunks)))
    (m_d, se_d), (m_f, se_f) = stats["direct"], stats["folded"]
    z = (m_d - m_f).abs() / (se_d**2 + se_f**2).sqrt()
    assert z.max().item() < 5.0
    assert (m_d.abs().max() > 20 * se_d.max()).item()  # the test has power: the gradient is well resolved


def test_folded_transformer_matches_forward_embedded_and_trains_the_wrapped_weights():
    torch.manual_seed(0)
    learner = GPICLTransformer(
        GPICLConfig(input_dim=N_X, num_classes=4, max_len=L, d_model=8, n_layers=1, n_heads=2, head_dim=4, mlp_ratio=2)
    )
    model = FoldedTransformer(learner)
    assert list(model.parameters()) == list(learner.parameters())  # no state of its own
    chol, u = gram_cholesky(torch.randn(2, L, N_IN)), torch.randn(2, L, 8)
    y = torch.randint(0, 4, (2, L))
    logits = model(chol, u, y)
    assert torch.allclose(logits, learner.forward_embedded(folded_embedding(learner.embed_x, chol, u), y))
    logits.sum().backward()
    assert learner.embed_x.weight.grad is not None and torch.isfinite(learner.embed_x.weight.grad).all()


def test_folding_needs_the_transformer_and_infinite_tasks():
    with pytest.raises(ValueError, match="GPICL Transformer"):
        FoldedTransformer(build_learner("lstm", N_X, 4, hidden_size=8))
    sampler = TaskSampler(
        torch.randn(50, N_IN),
        torch.randint(0, 4, (50,)),
        TaskConfig(length=L, num_classes=4, out_dim=N_X, num_tasks=3),
        torch.Generator(),
    )
    with pytest.raises(ValueError, match="K = infinity"):
        sampler.sample_folded(2, D)


def test_sample_folded_draws_the_same_sequences_and_labels_as_sample():
    x, y = torch.randn(50, N_IN), torch.randint(0, 4, (50,))
    cfg = TaskConfig(length=L, num_classes=4, out_dim=N_X, biased_fraction=0.5)
    chol, u, y_folded = TaskSampler(x, y, cfg, torch.Generator().manual_seed(5)).sample_folded(6, D)
    assert chol.shape == (6, L, L) and u.shape == (6, L, D) and y_folded.shape == (6, L)
    assert torch.equal(chol.triu(1), torch.zeros_like(chol))  # lower-triangular factors
    # the first half of the batch on the identity permutation: labels are the base labels
    g = torch.Generator().manual_seed(5)
    idx = torch.randint(0, 50, (6, L), generator=g)
    assert torch.equal(y_folded[:3], y[idx][:3])
    assert torch.allclose(chol @ chol.transpose(1, 2), x[idx] @ x[idx].transpose(1, 2) / N_IN, atol=1e-3)
