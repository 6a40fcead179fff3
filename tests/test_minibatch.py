import math

import pytest
import torch

import gradnoise
from gradnoise import minibatch as mb, stats
from gradnoise import seeds as gnseeds

f64 = torch.float64


@pytest.fixture
def gen():
    return gradnoise.generator("test:minibatch", device="cpu")


def test_enumeration_sizes_and_rows():
    for scheme, m, B in (("with", 2, 2), ("without", 2, 2), ("epoch", 2, 2), ("epoch", 3, 2)):
        idx = mb.batch_indices(6, B, m, scheme)
        assert idx.shape == (mb.enumeration_size(6, B, m, scheme), m, B)
        assert len({tuple(r.flatten().tolist()) for r in idx}) == idx.shape[0]   # no repeats
    assert mb.enumeration_size(6, 2, 3, "epoch") == 90
    e = mb.batch_indices(5, 2, 2, "epoch")
    assert all(len(set(r.flatten().tolist())) == 4 for r in e)                   # disjoint batches
    with pytest.raises(ValueError, match="limit"):
        mb.batch_indices(10, 5, 2, "with")
    with pytest.raises(ValueError, match="scheme"):
        mb.batch_indices(4, 2, 1, "bootstrap")
    with pytest.raises(ValueError, match="batch"):
        mb.sample_indices(4, 3, 2, 5, torch.Generator(), "epoch")


def test_exact_moments_closed_forms(gen):
    g = torch.randn(7, 3, generator=gen, dtype=f64)
    S = mb.empirical_covariance(g)
    assert torch.allclose(S, torch.cov(g.T, correction=0), atol=1e-14)
    for B in (1, 2, 3):
        mu, C = mb.exact_moments(g, B, "with")
        assert torch.allclose(mu, g.mean(0), atol=1e-14) and torch.allclose(C, S / B, atol=1e-14)
        mu, C = mb.exact_moments(g, B, "without")
        assert torch.allclose(C, (7 - B) / 6 * S / B, atol=1e-14)


@pytest.mark.parametrize("scheme", mb.SCHEMES)
def test_estimate_correction_is_exact(gen, scheme):
    g = torch.randn(6, 2, generator=gen, dtype=f64)
    idx = mb.batch_indices(6, 2, 3 if scheme != "with" else 2, scheme)
    E = mb.covariance_estimate(mb.batch_means(g, idx), 2).mean(0)
    assert torch.allclose(mb.estimate_correction(6, 2, scheme) * E, mb.empirical_covariance(g), atol=1e-13)


@pytest.mark.parametrize("scheme", mb.SCHEMES)
def test_sampled_batches_match_enumeration(gen, scheme):
    g = torch.randn(8, 1, generator=gen, dtype=f64)
    idx = mb.sample_indices(8, 3, 2, 40_000, gen, scheme)
    assert idx.shape == (40_000, 2, 3)
    if scheme != "with":
        assert all(len(set(r.tolist())) == 3 for r in idx[:100, 0])
    if scheme == "epoch":
        assert all(len(set(r.flatten().tolist())) == 6 for r in idx[:100])
    prods = mb.batch_means(g, idx)[..., 0].prod(-1)                  # E[g_B1 g_B2]: cross moment
    exact = mb.batch_means(g, mb.batch_indices(8, 3, 2, scheme))[..., 0].prod(-1).mean()
    m, se = stats.mean_stderr(prods)
    stats.assert_agrees(m, se, exact)


def test_batch_means_per_data_set(gen):
    g = torch.randn(4, 5, 2, generator=gen, dtype=f64)
    idx = mb.sample_indices(5, 2, 3, 4, gen, "with")
    out = mb.batch_means(g, idx)
    assert out.shape == (4, 3, 2)
    assert torch.allclose(out[1, 2], g[1, idx[1, 2]].mean(0))
    with pytest.raises(ValueError, match="indices"):
        mb.batch_means(g[0], idx.double())
    with pytest.raises(ValueError, match="means"):
        mb.covariance_estimate(torch.zeros(1, 2, dtype=f64), 2)


def test_batch_means_counts_route_equals_gather():
    gen = gnseeds.generator("test:batch-means-routes", "cpu")
    g = torch.randn(30, 50, generator=gen, dtype=torch.float64)
    idx = mb.draw_indices(30, 7, (4, 3), gen)
    gathered = g[idx].mean(dim=-2)
    assert torch.allclose(mb.batch_means(g, idx), gathered, atol=1e-14)       # 7 * 50 > 30: counts route
    small = torch.randn(400, 2, generator=gen, dtype=torch.float64)
    idx2 = mb.draw_indices(400, 5, (6,), gen, replacement=False)
    assert torch.allclose(mb.batch_means(small, idx2), small[idx2].mean(dim=-2), atol=0)
    assert all(len(set(row.tolist())) == 5 for row in idx2)                   # no repeats without replacement
    with pytest.raises(ValueError, match="exceeds"):
        mb.draw_indices(4, 5, (1,), gen, replacement=False)
