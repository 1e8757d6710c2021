"""Tests of training.tasks: the augmented task distribution of the paper (Alg. 1)."""

from __future__ import annotations

import pytest
import torch

from training import tasks
from training.tasks import (
    PaperBatches,
    TaskConfig,
    TaskSampler,
    gaussian_projection,
    task_permutation,
    task_projection,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def labelled_points(n_per_class: int, num_classes: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_per_class * num_classes, dim, generator=g)
    y = torch.arange(num_classes).repeat(n_per_class)
    return x, y


# --- tasks by index ------------------------------------------------------------------------


def test_task_projection_is_a_pure_function_of_index_and_seed():
    a = task_projection(3, 20, 12, task_seed=7)
    assert a.shape == (20, 12) and a.dtype == torch.float32
    assert torch.equal(a, task_projection(3, 20, 12, task_seed=7))
    assert not torch.allclose(a, task_projection(4, 20, 12, task_seed=7))
    assert not torch.allclose(a, task_projection(3, 20, 12, task_seed=8))


def test_task_projection_entries_have_variance_one_over_in_dim():
    a = task_projection(0, 400, 500, task_seed=0)
    assert abs(a.mean().item()) < 5 * (1 / 400) ** 0.5 / a.numel() ** 0.5  # 5 standard errors
    assert a.var().item() == pytest.approx(1 / 400, rel=0.02)


def test_task_permutation_is_a_pure_function_of_index_and_seed():
    perms = [task_permutation(k, 10, task_seed=0) for k in range(20)]
    for k, p in enumerate(perms):
        assert sorted(p.tolist()) == list(range(10))
        assert torch.equal(p, task_permutation(k, 10, task_seed=0))
    assert len({tuple(p.tolist()) for p in perms}) > 15  # 20 draws from 10! permutations
    assert len({tuple(task_permutation(0, 10, task_seed=s).tolist()) for s in range(20)}) > 15


# --- K = infinity: the Gram-matrix sampling of x @ A -----------------------------------------


def test_gaussian_projection_has_the_covariance_of_x_times_gaussian_a():
    # Columns of x @ A, A ~ N(0, 1/N_in), are iid N(0, X X^T / N_in): compare the empirical
    # covariance over 40000 columns (relative error ~1%) with the exact one, and with explicit
    # sampling of A. A repeated row makes the Gram matrix singular (the jitter path).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 6, generator=g) * torch.tensor([1.0, 2.0, 0.5, 1.0])[None, :, None]
    x[0, 3] = x[0, 0]
    n_in, cols = x.shape[-1], 40_000
    gram = (x[0] @ x[0].T) / n_in

    sampled = gaussian_projection(x, cols, g)[0]  # (4, cols)
    explicit = x[0] @ (torch.randn(n_in, cols, generator=g) / n_in**0.5)
    scale = gram.diagonal().max()
    for z in (sampled, explicit):
        assert torch.isfinite(z).all()
        assert z.mean(dim=1).abs().max() < 0.05 * scale**0.5
        cov = z @ z.T / cols
        assert torch.allclose(cov, gram, atol=0.04 * scale), (cov, gram)
        # column variance ||x_i||^2 / N_in per row
        assert torch.allclose(z.var(dim=1), x[0].square().sum(-1) / n_in, rtol=0.04)
        # Gaussian: kurtosis 3
        kurt = ((z - z.mean(1, keepdim=True)) ** 4).mean(1) / z.var(1) ** 2
        assert torch.allclose(kurt, torch.full_like(kurt, 3.0), atol=0.15)
    # the repeated example gets the same projection, as x @ A would give it
    assert torch.allclose(sampled[3], sampled[0], atol=0.05 * scale**0.5)
    assert torch.allclose(sampled @ sampled.T / cols, explicit @ explicit.T / cols, atol=0.06 * scale)


def test_gaussian_projection_draws_a_fresh_task_per_sequence():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 5, 8, generator=g).expand(2, 5, 8)  # the same sequence twice
    out = gaussian_projection(x, 4000, g)
    assert out.shape == (2, 5, 4000) and out.dtype == torch.float32
    # independent tasks: the two projections of the same inputs are uncorrelated
    corr = torch.corrcoef(torch.stack([out[0].flatten(), out[1].flatten()]))[0, 1]
    assert abs(corr.item()) < 0.05


# --- TaskSampler ---------------------------------------------------------------------------


@pytest.mark.parametrize("num_tasks", [None, 3])
def test_sampler_reproduces_from_the_generator_state(num_tasks):
    x, y = labelled_points(5, 4, 6)
    cfg = TaskConfig(length=7, num_classes=4, out_dim=5, num_tasks=num_tasks, biased_fraction=0.5)
    g = torch.Generator().manual_seed(0)
    sampler = TaskSampler(x, y, cfg, g)
    state = g.get_state()
    xb, yb = sampler.sample(6)
    assert xb.shape == (6, 7, 5) and xb.dtype == torch.float32
    assert yb.shape == (6, 7) and yb.dtype == torch.long
    x2, y2 = sampler.sample(6)
    assert not torch.equal(xb, x2)

    other = TaskSampler(x, y, cfg, torch.Generator().manual_seed(123))
    other.generator.set_state(state)
    xr, yr = other.sample(6)
    assert torch.equal(xb, xr) and torch.equal(yb, yr)


@pytest.mark.parametrize("folded", [False, True])
def test_gram_table_gives_the_batches_of_the_per_batch_gram(folded):
    x, y = labelled_points(6, 4, 9)
    cfg = TaskConfig(length=7, num_classes=4, out_dim=5, biased_fraction=0.5)

    def draw(gram):
        sampler = TaskSampler(x, y, cfg, torch.Generator().manual_seed(3), gram)
        return [t for _ in range(2) for t in (sampler.sample_folded(5, 3) if folded else sampler.sample(5))]

    direct, gathered = draw(None), draw(tasks.dataset_gram(x))
    # A sequence that draws a row twice has a singular Gram matrix but for the jitter (1e-4 of
    # its diagonal), whose Cholesky factor amplifies the two products' rounding to ~1e-4;
    # another draw would differ by O(1).
    for a, b in zip(direct, gathered, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_gram_table_of_another_dataset_and_finite_tasks_are_refused():
    x, y = labelled_points(3, 4, 6)
    cfg = TaskConfig(length=5, num_classes=4, out_dim=6)
    with pytest.raises(ValueError, match=r"gram must be the \(12, 12\) Gram matrix of x"):
        TaskSampler(x, y, cfg, torch.Generator(), torch.zeros(11, 11))
    with pytest.raises(ValueError, match="K = infinity"):
        PaperBatches(
            x, y, TaskConfig(length=5, num_classes=4, out_dim=6, num_tasks=3), torch.Generator(), gram_table=True
        )


@pytest.fixture(params=["table", "regenerated"])
def task_source(request, monkeypatch):
    """Finite tasks gathered from the drawn-once table, or regenerated per sequence."""
    if request.param == "regenerated":
        monkeypatch.setattr(tasks, "TASK_TABLE_BYTES", 0)
    tasks.task_table.cache_clear()
    yield request.param
    tasks.task_table.cache_clear()


def test_task_table_and_regenerated_tasks_give_the_same_batches(monkeypatch):
    x, y = labelled_points(5, 4, 6)
    cfg = TaskConfig(length=7, num_classes=4, out_dim=5, num_tasks=9, biased_fraction=0.25, task_seed=2)
    tasks.task_table.cache_clear()
    from_table = TaskSampler(x, y, cfg, torch.Generator().manual_seed(0)).sample(8)
    table = tasks.task_table(9, 6, 5, 4, 2, "cpu")  # the biased share was written to a copy
    assert torch.equal(table[1], torch.stack([task_permutation(k, 4, task_seed=2) for k in range(9)]))
    monkeypatch.setattr(tasks, "TASK_TABLE_BYTES", 9 * 6 * 5 * 4 - 1)  # one byte short: regenerate
    tasks.task_table.cache_clear()
    regenerated = TaskSampler(x, y, cfg, torch.Generator().manual_seed(0)).sample(8)
    assert tasks.task_table(9, 6, 5, 4, 2, "cpu") is None
    torch.testing.assert_close(from_table[0], regenerated[0])
    assert torch.equal(from_table[1], regenerated[1])
    tasks.task_table.cache_clear()


@pytest.mark.usefixtures("task_source")
def test_finite_tasks_are_the_indexed_projections_and_permutations():
    # Every sequence must be (x_i @ A_k, rho_k(y_i)) for base examples i and ONE task k < K
    # (the identity instead of rho_k in the biased share).
    num_classes, n_tasks, task_seed = 4, 3, 5
    x, y = labelled_points(3, num_classes, 6)
    cfg = TaskConfig(
        length=10, num_classes=num_classes, out_dim=5, num_tasks=n_tasks, biased_fraction=0.25, task_seed=task_seed
    )
    xb, yb = TaskSampler(x, y, cfg, torch.Generator().manual_seed(0)).sample(8)
    candidates = [x @ task_projection(k, 6, 5, task_seed) for k in range(n_tasks)]  # (N, out) each
    used = set()
    for b in range(8):
        matches = []
        for k, proj in enumerate(candidates):
            dist = torch.cdist(xb[b], proj)  # (L, N)
            best = dist.min(dim=1)
            if (best.values < 1e-4).all():
                matches.append((k, best.indices))
        assert len(matches) == 1, f"sequence {b} is not under exactly one task"
        k, idx = matches[0]
        used.add(k)
        perm = torch.arange(num_classes) if b < round(0.25 * 8) else task_permutation(k, num_classes, task_seed)
        assert torch.equal(yb[b], perm[y[idx]])
    assert used <= set(range(n_tasks)) and len(used) > 1


@pytest.mark.parametrize(("batch", "fraction"), [(8, 0.9), (10, 0.25), (6, 0.0), (5, 1.0)])
def test_biased_share_uses_the_identity_label_map(batch, fraction):
    # A base dataset of one example of class c makes every label of sequence b equal
    # rho_b(c); the same generator seed gives the same tasks whatever c, so the label map
    # of each sequence can be read off class by class.
    num_classes = 6
    maps = []
    for c in range(num_classes):
        cfg = TaskConfig(length=3, num_classes=num_classes, out_dim=4, biased_fraction=fraction)
        sampler = TaskSampler(torch.ones(1, 5), torch.tensor([c]), cfg, torch.Generator().manual_seed(0))
        _, yb = sampler.sample(batch)
        assert (yb == yb[:, :1]).all()
        maps.append(yb[:, 0])
    maps = torch.stack(maps, dim=1)  # (batch, num_classes): c -> rho_b(c)
    n_biased = round(fraction * batch)
    identity = torch.arange(num_classes)
    for b in range(batch):
        assert sorted(maps[b].tolist()) == list(range(num_classes)), "label map is not a permutation"
    assert (maps[:n_biased] == identity).all()
    unbiased_identity = (maps[n_biased:] == identity).all(dim=1).sum().item()
    assert unbiased_identity <= max(1, (batch - n_biased) // 4)  # 1/6! chance each


def test_labels_beyond_num_classes_are_a_clear_error():
    x, y = labelled_points(2, 5, 4)
    with pytest.raises(ValueError, match="num_classes=4"):
        TaskSampler(x, y, TaskConfig(length=3, num_classes=4, out_dim=4), torch.Generator())
