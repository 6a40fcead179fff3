import itertools
import math

import pytest
import torch

from gradnoise import exact, ortho, sampling, stats
from gradnoise import seeds as gnseeds

f64 = torch.float64


@pytest.fixture
def gen(request):
    """A generator of the book's seeds (GRADNOISE_SEED varies it), on the CPU, one per test."""
    return gnseeds.generator(f"test:{request.node.name}", "cpu")


def frame(m, n, s, gen):
    """G = U diag(s) V^T with its Haar factors U (m x m) and V (n x n)."""
    U = sampling.random_orthogonal(m, gen)
    V = sampling.random_orthogonal(n, gen)
    r = len(s)
    return (U[:, :r] * torch.tensor(s, dtype=f64)) @ V[:, :r].T, U, V


def brute_mean_law(values, probs, k):
    law = {}
    for idx in itertools.product(range(len(values)), repeat=k):
        key = round(sum(values[i] for i in idx) / k, 12)
        law[key] = law.get(key, 0.0) + math.prod(probs[i] for i in idx)
    keys = sorted(law)
    return torch.tensor(keys, dtype=f64), torch.tensor([law[x] for x in keys], dtype=f64)


@pytest.mark.parametrize("values,probs", [([2.0, -0.5], [0.2, 0.8]),
                                          ([-1.0, 0.0, 3.0], [0.5, 0.3, 0.2]),
                                          ([0.1, 0.2, 0.3, 0.7], [0.4, 0.3, 0.2, 0.1])])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_mean_law_matches_enumeration(values, probs, k):
    s, p = exact.mean_law(values, probs, k)
    bs, bp = brute_mean_law(values, probs, k)
    assert s.shape == bs.shape  # equal sums (0.1 + 0.2 = 0.3, ...) merged into one point
    assert torch.allclose(s, bs, atol=1e-12) and torch.allclose(p, bp, rtol=1e-12, atol=1e-15)
    assert bool((s[1:] > s[:-1]).all())


def test_mean_law_moments_for_large_k():
    values, probs, k = torch.tensor([2.0, -0.5], dtype=f64), torch.tensor([0.2, 0.8], dtype=f64), 400
    s, p = exact.mean_law(values, probs, k)
    assert s.numel() == k + 1 and abs(float(p.sum()) - 1) < 1e-13
    k2 = float((probs * values**2).sum())
    k3 = float((probs * values**3).sum())
    assert abs(float((p * s).sum())) < 1e-14
    assert abs(float((p * s**2).sum()) - k2 / k) < 1e-13 * k2 / k * k
    assert abs(float((p * s**3).sum()) - k3 / k**2) < 1e-10 * abs(k3) / k**2 * k


def test_mean_law_rejects_bad_laws():
    with pytest.raises(ValueError, match="probs"):
        exact.mean_law([1.0, -1.0], [0.6, 0.6], 2)
    with pytest.raises(ValueError, match="probs"):
        exact.mean_law([1.0, -1.0], [1.2, -0.2], 2)
    with pytest.raises(ValueError, match="values"):
        exact.mean_law([[1.0, -1.0]], [0.5, 0.5], 2)
    with pytest.raises(ValueError, match="k"):
        exact.mean_law([1.0, -1.0], [0.5, 0.5], 0)


def test_along_top_singular_direction_is_unbiased(gen):
    # G + x u1 v1^T has the singular vectors of G, so Ortho(G + x u1 v1^T) = Ortho(G) while s1 + x > 0.
    G, U, V = frame(4, 6, [2.0, 1.2, 0.8, 0.5], gen)
    D = torch.outer(U[:, 0], V[:, 0])
    out = exact.expected_polar_along(G, D, [1.5, -0.3], [1 / 6, 5 / 6], 7, centered=True)
    assert out.abs().max() < 1e-13


@pytest.mark.parametrize("shape", [(4, 6), (6, 4), (5, 5)])
def test_along_rotation_block_matches_closed_form(gen, shape):
    # In the singular frame, x u1 v2^T turns the block [[s1, 0], [0, s2]] into [[s1, x], [0, s2]], whose
    # polar factor is the rotation [[c, t], [-t, c]], c = (s1 + s2)/r, t = x/r, r = sqrt((s1 + s2)^2 + x^2).
    m, n = shape
    s = [2.0, 1.2, 0.8, 0.5, 0.3][: min(m, n)]
    G, U, V = frame(m, n, s, gen)
    D = torch.outer(U[:, 0], V[:, 1])
    values, probs, k = [2.5, -0.5, 0.1], [0.1, 0.3, 0.6], 9
    a, P = exact.mean_law(values, probs, k)
    r = torch.sqrt((s[0] + s[1]) ** 2 + a**2)
    c, t = (P * (s[0] + s[1]) / r).sum(), (P * a / r).sum()
    u1, u2, v1, v2 = U[:, 0], U[:, 1], V[:, 0], V[:, 1]
    O = ortho.polar_factor(G)
    want = O + (c - 1) * (torch.outer(u1, v1) + torch.outer(u2, v2)) + t * (torch.outer(u1, v2) - torch.outer(u2, v1))
    got = exact.expected_polar_along(G, D, values, probs, k)
    assert torch.allclose(got, want, atol=1e-14)
    # ... and into the null space of a wide G: the row [s1, x] normalises to [s1, x]/sqrt(s1^2 + x^2).
    if m < n:
        D = torch.outer(U[:, 0], V[:, m])
        r = torch.sqrt(s[0] ** 2 + a**2)
        want = O + ((P * s[0] / r).sum() - 1) * torch.outer(u1, v1) + (P * a / r).sum() * torch.outer(u1, V[:, m])
        assert torch.allclose(exact.expected_polar_along(G, D, values, probs, k), want, atol=1e-14)


def test_expected_polar_along_agrees_with_monte_carlo(gen):
    G = sampling.with_singular_values([1.5, 1.0, 0.7], 3, 5, gen)
    D = torch.randn(3, 5, generator=gen, dtype=f64)
    values, probs, k, trials = torch.tensor([1.2, -0.3], dtype=f64), torch.tensor([0.2, 0.8], dtype=f64), 6, 200_000
    idx = torch.multinomial(probs, trials * k, replacement=True, generator=gen).reshape(trials, k)
    xbar = values[idx].mean(1)
    est, se = stats.mean_stderr(ortho.polar_factor(G + xbar[:, None, None] * D))
    want = exact.expected_polar_along(G, D, values, probs, k)
    stats.assert_agrees(est, se, want, z=5, what="exact sum vs Monte Carlo")
    stats.assert_rejects(est, se, ortho.polar_factor(G), z=10, what="exact sum vs Monte Carlo")


@pytest.mark.parametrize("law", ["skewed", "gaussian"])
def test_one_over_k_coefficient_is_polar_bias(gen, law):
    G = sampling.with_singular_values([2.0, 1.3, 0.9, 0.6], 4, 6, gen)
    D = torch.randn(4, 6, generator=gen, dtype=f64)
    D = 0.3 * D / D.norm()
    values, probs = [2.0, -0.5], [0.2, 0.8]  # mean 0, variance 1, third cumulant 1.5
    var = 1.0

    def k_bias(k):
        if law == "gaussian":
            return k * exact.expected_polar_gaussian_along(G, D, var, k, centered=True)
        return k * exact.expected_polar_along(G, D, values, probs, k, centered=True)

    k = 512
    b_rich = 2 * k_bias(2 * k) - k_bias(k)  # k (E_k - O) = b + c/k + O(k^-2): Richardson removes c/k
    b = ortho.polar_bias(G, factors=math.sqrt(var) * D[None])
    err = float((b_rich - b).abs().max() / b.abs().max())
    assert err < 1e-5, err  # the remainder is O(k^-2) = 4e-6 here
    # what Richardson removed is the predicted k^-2 term c/k, c = c_3 kappa_3 + 3 c_4 kappa_2^2 (a fixed
    # threshold on its size would fail for draws where c happens to be small)
    c = exact.polar_taylor_along(G, D, order=4)
    kappa3 = 1.5 if law == "skewed" else 0.0
    c_pred = c[3] * kappa3 + 3 * c[4] * var**2
    gap = k * (k_bias(k) - b)
    assert float((gap - c_pred).abs().max()) <= 0.05 * float(c_pred.abs().max()) + 1e-6 * float(b.abs().max())


def test_gaussian_quadrature_converges_and_matches_monte_carlo(gen):
    G = sampling.with_singular_values([1.5, 1.0, 0.7], 3, 5, gen)
    D = torch.randn(3, 5, generator=gen, dtype=f64)
    D = 0.5 * D / D.norm()                  # |x| D stays below s_min over the nodes that matter
    var, k = 0.5, 4
    e = [exact.expected_polar_gaussian_along(G, D, var, k, nodes=q) for q in (40, 64, 96)]
    assert (e[1] - e[2]).abs().max() < 1e-12 and (e[0] - e[2]).abs().max() < 1e-10
    assert (exact.expected_polar_gaussian_along(G, D, var, k, nodes=4) - e[2]).abs().max() > 1e-8
    xbar = torch.randn(200_000, generator=gen, dtype=f64) * math.sqrt(var / k)
    est, se = stats.mean_stderr(ortho.polar_factor(G + xbar[:, None, None] * D))
    stats.assert_agrees(est, se, e[2], z=5, what="Gauss-Hermite vs Monte Carlo")


def test_taylor_coefficients_predict_the_k2_term(gen):
    # E f(xbar_k) = c0 + c2 k2/k + (c3 k3 + 3 c4 k2^2)/k^2 + O(k^-3) for a mean of k i.i.d. tokens.
    G = sampling.with_singular_values([2.0, 1.3, 0.9, 0.6], 4, 6, gen)
    D = torch.randn(4, 6, generator=gen, dtype=f64)
    D = 0.3 * D / D.norm()
    c = exact.polar_taylor_along(G, D, order=4)
    L1, Q2 = ortho.polar_expansion(G, D)
    assert torch.allclose(c[0], ortho.polar_factor(G), atol=1e-14)
    assert torch.allclose(c[1], L1, atol=1e-11) and torch.allclose(c[2], Q2, atol=1e-10)
    assert torch.allclose(exact.polar_taylor_along(G, D, order=4, h=0.7 * 0.2 * 0.6 / float(torch.linalg.matrix_norm(D, ord=2))),
                          c, atol=1e-7)
    values, probs = [2.0, -0.5], [0.2, 0.8]
    k2, k3 = 1.0, 1.5
    for k in (256, 512):
        r = exact.expected_polar_along(G, D, values, probs, k, centered=True) - c[2] * k2 / k
        pred = (c[3] * k3 + 3 * c[4] * k2**2) / k**2
        assert (r - pred).abs().max() < 20 / k * pred.abs().max()  # the next term is O(k^-3)


def test_rank_deficient_support_point_raises(gen):
    G, U, V = frame(3, 4, [1.0, 0.7, 0.4], gen)
    D = -torch.outer(U[:, 2], V[:, 2])  # G + x D has singular value 0.4 - x
    with pytest.raises(ValueError, match="rank-deficient"):
        exact.expected_polar_along(G, D, [0.4, -0.1], [0.5, 0.5], 1)
    with pytest.raises(ValueError, match="D"):
        exact.expected_polar_along(G, D[:2], [0.4, -0.1], [0.5, 0.5], 1)
    with pytest.raises(ValueError, match="var"):
        exact.expected_polar_gaussian_along(G, D, -1.0, 2)
