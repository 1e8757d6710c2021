"""training.prefetch: batches drawn ahead are the sampler's batches, and a checkpoint's state is exact."""

from __future__ import annotations

import pytest
import torch

from training.prefetch import Prefetcher
from training.priors.mixture import PriorConfig, PriorSampler

IMAGES = [(torch.randn(200, 16), torch.arange(200) % 10)]


def sampler(calls: int = 0, state: torch.Tensor | None = None) -> PriorSampler:
    g = torch.Generator().manual_seed(1)
    if state is not None:
        g.set_state(state)
    return PriorSampler(PriorConfig(max_features=12), 24, 8, 10, IMAGES, g, seed=3, calls=calls)


@pytest.mark.parametrize("ahead", [False, True])
def test_prefetcher_returns_the_samplers_batches(ahead):
    plain, wrapped = sampler(), Prefetcher(sampler(), 12, ahead=ahead)
    assert wrapped.ahead is ahead and wrapped.stream is None  # a CPU generator: no side stream
    for _ in range(3):
        for a, b in zip(plain.sample(12), wrapped.sample(12), strict=True):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="batches of 12"):
        wrapped.sample(4)


def test_prefetcher_state_resumes_at_the_batch_not_yet_returned():
    wrapped = Prefetcher(sampler(), 12, ahead=True)
    for _ in range(2):
        wrapped.next()
    state = wrapped.rng_state()  # what a checkpoint after 2 steps saves
    assert not torch.equal(state, wrapped.sampler.g.get_state())  # the generator is one draw further
    resumed = sampler(calls=2, state=state)
    for a, b in zip(resumed.sample(12), wrapped.next(), strict=True):
        assert torch.equal(a, b)


def test_prefetcher_on_cpu_draws_on_demand_by_default():
    wrapped = Prefetcher(sampler(), 12)
    assert not wrapped.ahead
    wrapped.next()
    assert wrapped.pending is None and torch.equal(wrapped.rng_state(), wrapped.sampler.g.get_state())


@pytest.mark.parametrize("prefetch", [[], ["--prefetch"]])
def test_profile_prior_reports_ops_syncs_and_time(prefetch):
    from benchmarks import profile_prior

    argv = ["--batch-size", "8", "--length", "8", "--device", "cpu", "--image-rows", "100", "--batches", "1"]
    text = profile_prior.main(argv + prefetch)
    assert "| ops/batch | syncs/batch | ms/batch |" in text
    ops, syncs = (float(v) for v in text.splitlines()[-1].strip("| ").split(" | ")[:2])
    assert ops > 100 and syncs == 0  # no device value is read on the host
