import math

import pytest
import torch

from gradnoise import estimators, ortho, sampling, stats
from gradnoise import seeds as gnseeds

f64 = torch.float64


@pytest.fixture
def gen(request):
    return gnseeds.generator(f"test:{request.node.name}", "cpu")


def test_random_orthogonal(gen):
    Q = sampling.random_orthogonal(5, gen)
    assert torch.allclose(Q @ Q.T, torch.eye(5, dtype=f64), atol=1e-12)


def test_with_singular_values(gen):
    G = sampling.with_singular_values([3.0, 1.0, 0.0], 3, 5, gen)
    assert torch.allclose(torch.linalg.svdvals(G), torch.tensor([3.0, 1.0, 0.0], dtype=f64), atol=1e-12)
    with pytest.raises(ValueError, match="min\\(m, n\\)"):
        sampling.with_singular_values([1.0, 2.0], 3, 5, gen)
    with pytest.raises(ValueError, match=r"s must be finite real numbers in \[0, inf\)"):
        sampling.with_singular_values([1.0, -1.0, 0.5], 3, 5, gen)
    with pytest.raises(ValueError, match="m must be"):
        sampling.with_singular_values([1.0], 0, 5, gen)


@pytest.mark.parametrize("law", sampling.LAWS)
def test_block_means_have_the_right_mean_and_variance(gen, law):
    G = torch.zeros(2, 3, dtype=f64)
    x = sampling.block_means(G, 0.5, gen, trials=40_000, blocks=2, tokens=4, law=law)
    assert x.shape == (40_000, 2, 2, 3)
    m, se = stats.mean_stderr(x.reshape(-1, 6))
    stats.assert_agrees(m, se, 0.0)
    v, v_se = stats.total_variance(x[:, 0])
    stats.assert_agrees(v, v_se, 6 * 0.5 / 4)
    stats.assert_rejects(v, v_se, 6 * 0.5 / 2)


def test_in_chunks_joins_chunks_and_matches_one_call(gen):
    G = torch.zeros(2, 3, dtype=f64)
    draw = lambda n: sampling.block_means(G, 0.5, gen, n, 2, 4)
    gen.manual_seed(7)
    whole = draw(10)
    gen.manual_seed(7)
    assert torch.equal(sampling.in_chunks(draw, 10), whole)             # trials <= chunk: one call
    gen.manual_seed(7)
    assert torch.equal(sampling.in_chunks(draw, 10, chunk=10), whole)
    gen.manual_seed(7)
    parts = [draw(4), draw(4), draw(2)]
    gen.manual_seed(7)
    chunked = sampling.in_chunks(lambda n: {"x": draw(n), "s": torch.full((n,), float(n), dtype=f64)}, 10, chunk=4)
    assert torch.equal(chunked["x"], torch.cat(parts)) and chunked["s"].tolist() == [4.0] * 8 + [2.0] * 2
    with pytest.raises(ValueError, match="leading dimension"):
        sampling.in_chunks(lambda n: torch.zeros(n + 1), 5, chunk=2)
    with pytest.raises(ValueError, match="same keys"):
        sampling.in_chunks(lambda n: {"a": torch.zeros(n)} if n == 2 else {"b": torch.zeros(n)}, 5, chunk=2)


def test_token_gradients_and_bad_law(gen):
    G = torch.ones(2, 2, dtype=f64)
    assert sampling.token_gradients(G, 1.0, gen, 3, 5).shape == (3, 5, 2, 2)
    with pytest.raises(ValueError, match="law"):
        sampling.token_noise((2,), 1.0, gen, law="cauchy")
    with pytest.raises(ValueError, match="var"):
        sampling.token_noise((2,), -1.0, gen)
    with pytest.raises(ValueError, match="trials"):
        sampling.block_means(G, 1.0, gen, 0, 1, 1)
    with pytest.raises(ValueError, match="tokens"):
        sampling.block_means(G, 1.0, gen, 1, 1, -3)


def test_ar1_steps_covariance(gen):
    z = torch.randn(50_000, 6, 1, 1, generator=gen, dtype=f64)
    x = sampling.ar1_steps(z, 0.6, dim=1)[:, :, 0, 0]
    for lag in (0, 1, 3):
        prods = x[:, 5] * x[:, 5 - lag]
        m, se = stats.mean_stderr(prods)
        stats.assert_agrees(m, se, 0.6**lag)
    with pytest.raises(ValueError, match="rho"):
        sampling.ar1_steps(z, 1.0, dim=1)


def test_minibatch_and_microbatch_means(gen):
    tokens = torch.randn(7, 12, 2, 3, generator=gen, dtype=f64)
    assert torch.allclose(estimators.minibatch_mean(tokens), tokens.mean(1))
    micro = estimators.microbatch_means(tokens, 4)
    assert micro.shape == (7, 4, 2, 3)
    assert torch.allclose(micro[:, 1], tokens[:, 3:6].mean(1))
    with pytest.raises(ValueError, match="cannot be split"):
        estimators.microbatch_means(tokens, 5)
    with pytest.raises(ValueError, match="tokens must have at least 3"):
        estimators.minibatch_mean(tokens[0, 0])


def test_ema_weights_and_horizon():
    w = estimators.ema_weights(0.9, 4)
    assert torch.allclose(w, torch.tensor([0.1, 0.09, 0.081, 0.0729], dtype=f64))
    t = estimators.stationary_horizon(0.9, 1e-6)
    assert 0.9 ** (2 * t) <= 1e-6 < 0.9 ** (2 * (t - 1))
    assert estimators.ema_weights(0.9).numel() == estimators.stationary_horizon(0.9)
    assert estimators.stationary_horizon(0.0) == 1
    for bad in (1.0, -0.1, 1.5, "x"):
        with pytest.raises(ValueError, match="gamma"):
            estimators.ema_weights(bad, 3)
    with pytest.raises(ValueError, match="horizon"):
        estimators.ema_weights(0.5, 0)


def test_ema_matches_recursion(gen):
    steps = torch.randn(5, 8, 2, 2, generator=gen, dtype=f64)
    m = torch.zeros(5, 2, 2, dtype=f64)
    for t in range(8):
        m = 0.7 * m + 0.3 * steps[:, t]
    assert torch.allclose(estimators.ema(steps, 0.7), m)


def test_richardson(gen):
    a, b = torch.randn(2, 3, 3, generator=gen, dtype=f64)
    assert torch.allclose(estimators.richardson(a, b), 2 * a - b)
    with pytest.raises(ValueError, match="g_2k has shape"):
        estimators.richardson(a, b[:, :2])


def test_richardson_estimates_nested_and_independent(gen):
    halves = torch.randn(4, 2, 3, 3, generator=gen, dtype=f64)
    g_k, g_2k, R = estimators.richardson_estimates(halves)
    assert torch.allclose(R, halves[:, 1])  # linear map, nested: R is the second half's mean
    extra = torch.randn(4, 3, 3, generator=gen, dtype=f64)
    g_k, _, R = estimators.richardson_estimates(halves, ortho.polar_factor, extra)
    assert torch.allclose(g_k, ortho.polar_factor(extra))
    with pytest.raises(ValueError, match="halves must hold 2"):
        estimators.richardson_estimates(torch.randn(4, 3, 3, 3, generator=gen, dtype=f64))
    with pytest.raises(ValueError, match="independent"):
        estimators.richardson_estimates(halves, independent=extra[:, :2])


def test_jackknife_is_zero_for_linear_maps_and_removes_quadratic_bias(gen):
    micro = torch.randn(6, 8, 2, 2, generator=gen, dtype=f64)
    assert torch.allclose(estimators.jackknife_bias(micro), torch.zeros(6, 2, 2, dtype=f64), atol=1e-14)
    # f(x) = x**2 entrywise: f(mean) has bias Var(mean) = s2/m; the jackknife estimates it unbiasedly
    x = torch.randn(200_000, 8, 1, 1, generator=gen, dtype=f64)
    jack = estimators.jackknife_bias(x, lambda y: y**2)[:, 0, 0]
    m, se = stats.mean_stderr(jack)
    stats.assert_agrees(m, se, 1 / 8)
    stats.assert_rejects(m, se, 0.0)
    with pytest.raises(ValueError, match="at least 2 micro-batches"):
        estimators.jackknife_bias(micro[:, :1])
    with pytest.raises(ValueError, match="NaN or inf"):
        estimators.jackknife_bias(micro * float("nan"))


def test_random_orthogonal_batched(gen):
    Q = sampling.random_orthogonal(4, gen, batch=(3, 2))
    assert Q.shape == (3, 2, 4, 4)
    assert torch.allclose(Q @ Q.mT, torch.eye(4, dtype=f64).expand(3, 2, 4, 4), atol=1e-12)


def test_ema_by_horizon_matches_ema(gen):
    steps = torch.randn(5, 9, 2, 3, generator=gen, dtype=f64)
    by_t = estimators.ema_by_horizon(steps, 0.8, 6)
    assert by_t.shape == (5, 6, 2, 3)
    for t in (1, 4, 6):
        assert torch.allclose(by_t[:, t - 1], estimators.ema(steps[:, -t:], 0.8), atol=1e-14)
    with pytest.raises(ValueError, match="exceeds"):
        estimators.ema_by_horizon(steps, 0.8, 10)


def test_ema_noise_factor():
    g = 0.7
    assert estimators.ema_noise_factor(g, 1) == pytest.approx((1 - g) ** 2)
    assert estimators.ema_noise_factor(g, 400) == pytest.approx((1 - g) / (1 + g), rel=1e-12)
    assert estimators.ema_noise_factor(g, 400, 0.5) == pytest.approx((1 - g) / (1 + g) * 1.35 / 0.65, rel=1e-12)
    gen = gnseeds.generator("test:ema-noise-factor", "cpu")
    noise = sampling.ar1_steps(torch.randn(40_000, 12, 1, 2, generator=gen, dtype=f64), 0.5, dim=1)
    v, se = stats.total_variance(estimators.ema(noise, g))
    stats.assert_agrees(v, se, 2 * estimators.ema_noise_factor(g, 12, 0.5))
    with pytest.raises(ValueError, match="rho"):
        estimators.ema_noise_factor(g, 3, 1.0)


def test_argument_checks_name_the_argument():
    from gradnoise import checks
    x = torch.ones(2, 2, dtype=f64)
    assert checks.matrix(x, "A") is x
    with pytest.raises(ValueError, match="^A is empty"):
        checks.matrix(torch.ones(0, 2, dtype=f64), "A")
    with pytest.raises(ValueError, match="^a has shape"):
        checks.same_shape(x, x[:1], "a", "b")
    for bad in (0, 2.5, True, "3"):
        with pytest.raises(ValueError, match="^trials must be an integer"):
            checks.positive_int(bad, "trials")
    assert checks.decay(0) == 0.0
    assert estimators.identity(x) is x


def test_correlated_means_have_the_covariance_asked_for(gen):
    d = 6
    A = torch.randn(d, d, generator=gen, dtype=f64)
    cov = A @ A.T / d
    L = sampling.covariance_factor(cov)
    assert torch.allclose(L @ L.T, cov, atol=1e-12)
    G = torch.zeros(2, 3, dtype=f64)
    x = sampling.correlated_means(G, L, gen, 40_000, 1, 4)[:, 0].reshape(-1, d)
    prods = x.unsqueeze(-1) * x.unsqueeze(-2)
    m, se = stats.mean_stderr(prods)
    stats.assert_agrees(m, se, cov / 4)
    stats.assert_rejects(m, se, cov)
    with pytest.raises(ValueError, match="positive semi-definite"):
        sampling.covariance_factor(-cov)
    with pytest.raises(ValueError, match="factor must be"):
        sampling.correlated_means(G, L[:5, :5], gen, 2, 1, 1)
