"""The meta-training task prior (training/priors), at CPU sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.priors import clusters, corruptions, mlp, trees
from training.priors.common import MAX_CLASSES, class_counts, cut_into_classes
from training.priors.images import ImageTasks
from training.priors.mixture import PriorConfig, PriorSampler, assign_slots, compact_labels, family_sizes


def generators(seed: int = 0):
    return torch.Generator().manual_seed(seed), np.random.default_rng(seed)


@pytest.mark.parametrize("family", [mlp, trees, clusters])
def test_table_families_return_labelled_rows_of_their_width(family):
    g, rng = generators()
    for _ in range(4):  # several structures (depth, activation, ...)
        t = family.sample(6, 40, 12, g, rng)
        assert t.x.shape == (6, 40, 12) and torch.isfinite(t.x).all()
        assert t.y.shape == (6, 40) and t.y.min() >= 0 and t.y.max() < MAX_CLASSES
        assert t.feature_mask.shape == (6, 12) and t.feature_mask[:, 0].all()


def test_corruptions_keep_shapes_and_labels_and_add_missing_values():
    g, rng = generators()
    seen_missing = False
    for _ in range(8):
        t = trees.sample(8, 60, 10, g, rng)
        c = corruptions.corrupt(t, g, rng)
        assert c.x.shape == t.x.shape and c.y.shape == t.y.shape
        assert (c.y <= t.y.amax(1, keepdim=True)).all()  # label noise stays within the task's classes
        assert not torch.isinf(c.x).any()
        seen_missing |= bool(torch.isnan(c.x).any())
    assert seen_missing


def test_cut_into_classes_uses_k_classes():
    g, _ = generators()
    k = torch.tensor([2, 5, 10])
    y = cut_into_classes(torch.randn(3, 500, generator=g), k, g)
    for row, kk in zip(y, k, strict=True):
        assert row.max() < MAX_CLASSES and len(row.unique()) <= kk


def test_image_tasks_draw_from_chosen_classes():
    g, rng = generators()
    x = torch.arange(100, dtype=torch.float32)[:, None].expand(-1, 9).clone()
    y = torch.arange(100) % 10
    tasks = ImageTasks([(x, y)])
    for _ in range(6):
        t = tasks.sample(4, 30, 5, g, rng)
        assert t.x.shape[:2] == (4, 30) and t.y.max() < MAX_CLASSES
        assert t.feature_mask.shape == (4, t.x.shape[2])


def test_labels_are_compacted_and_given_distinct_slots():
    y = torch.tensor([[3, 3, 7, 0], [1, 1, 1, 1]])
    compact, k = compact_labels(y)
    assert compact.tolist() == [[1, 1, 2, 0], [0, 0, 0, 0]] and k.tolist() == [3, 1]
    slots, used = assign_slots(compact, k, 10, torch.Generator().manual_seed(0))
    assert used.sum(1).tolist() == [3, 1]
    assert used.gather(1, slots).all()  # every label sits on a used slot
    assert len(set(slots[0].tolist())) == 3


def test_family_sizes_split_the_batch():
    assert family_sizes({"mlp": 0.35, "trees": 0.25, "clusters": 0.15, "images": 0.25}, 64) == {
        "mlp": 22,
        "trees": 16,
        "clusters": 10,
        "images": 16,
    }
    assert sum(family_sizes({"mlp": 1, "trees": 1, "clusters": 1}, 7).values()) == 7


def test_sampler_batches_are_model_inputs_and_reproducible():
    images = [(torch.randn(200, 16), torch.arange(200) % 10)]
    cfg = PriorConfig(max_features=12)

    def draw(calls: int):
        sampler = PriorSampler(cfg, 48, 8, 10, images, torch.Generator().manual_seed(1), seed=3, calls=calls)
        return sampler.sample(16)

    x, y, used = draw(0)
    assert x.shape == (16, 48, 8) and y.shape == (16, 48) and used.shape == (16, 10)
    assert torch.isfinite(x).all()
    assert used.gather(1, y).all()
    for a, b in zip(draw(0), (x, y, used), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(draw(1)[0], x)  # the step number is part of the host seed


def test_binary_share_sets_the_share_of_two_class_tasks_and_none_draws_as_before():
    def draw(share):
        return class_counts(20000, torch.Generator().manual_seed(0), "cpu", binary_share=share)

    assert torch.equal(
        draw(None), torch.randint(2, MAX_CLASSES + 1, (20000,), generator=torch.Generator().manual_seed(0))
    )
    assert (draw(1.0) == 2).all() and (draw(0.0) >= 3).all() and (draw(0.0) <= MAX_CLASSES).all()
    half = draw(0.5)
    assert abs((half == 2).float().mean().item() - 0.5) < 0.02
    assert set(half.unique().tolist()) == set(range(2, MAX_CLASSES + 1))


def test_binary_share_one_makes_every_table_task_binary_and_leaves_images_alone():
    images = [(torch.randn(200, 16), torch.arange(200) % 10)]
    cfg = PriorConfig(weights={"mlp": 1, "trees": 1, "clusters": 1, "images": 1}, max_features=12, binary_share=1.0)
    _, _, used = PriorSampler(cfg, 48, 8, 10, images, torch.Generator().manual_seed(1), seed=3).sample(32)
    tables, image_tasks = used[:24].sum(1), used[24:].sum(1)  # families in the order of cfg.weights
    assert (tables <= 2).all() and (tables == 2).any()
    assert (image_tasks > 2).any()
    with pytest.raises(ValueError, match="binary_share"):
        PriorConfig(binary_share=1.5)


def test_prior_config_rejects_unknown_families():
    with pytest.raises(ValueError, match="unknown families"):
        PriorConfig(weights={"forest": 1.0})


def test_chunks_corrupted_together_keep_their_own_host_draws():
    g, rng = generators()
    t = trees.sample(12, 50, 6, g, rng)
    sizes = [4, 3, 5]
    starts = np.cumsum([0, *sizes])
    seen_missing = False
    for seed in range(8):
        host = np.random.default_rng(seed)  # the host draws corrupt makes: per chunk, missing values or not
        drawn = []
        for _ in sizes:
            drawn.append(host.random() < 0.35)
            if drawn[-1]:
                host.random()  # at random, or the largest values
        c = corruptions.corrupt(t, g, np.random.default_rng(seed), chunks=sizes)
        assert c.x.shape == t.x.shape and not torch.isinf(c.x).any()
        for lo, hi, missing in zip(starts[:-1], starts[1:], drawn, strict=True):
            has_nan = bool(torch.isnan(c.x[lo:hi]).any())
            assert missing or not has_nan
            seen_missing |= has_nan
    assert seen_missing


def test_sampler_prepares_tables_and_images_of_every_view_together():
    images = [(torch.randn(200, 30), torch.arange(200) % 10)]  # 30 pixels: wider than the 8 slots
    cfg = PriorConfig(max_features=5, chunks=3)
    sampler = PriorSampler(cfg, 20, 8, 10, images, torch.Generator().manual_seed(0), seed=0)
    for _ in range(6):  # full, subset and low-rank image views beside the tables
        x, y, used = sampler.sample(20)
        assert x.shape == (20, 20, 8) and torch.isfinite(x).all()
        assert used.gather(1, y).all()
        assert (x.abs().sum((1, 2)) > 0).all()  # every sequence has inputs
