import pytest
import torch

import gradnoise
from gradnoise import diffusion as df, stats

f64 = torch.float64


@pytest.fixture
def gen():
    return gradnoise.generator("test:diffusion", device="cpu")


def _pair():
    H = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=f64)
    S = torch.tensor([[1.0, -0.4], [-0.4, 0.5]], dtype=f64)
    return H, S


def test_lyapunov_solutions_satisfy_their_equations():
    H, S = _pair()
    eta, B = 0.1, 4
    A = torch.eye(2, dtype=f64) - eta * H
    C = df.sgd_stationary_covariance(H, S, eta, B)
    assert torch.allclose(C, A @ C @ A.T + eta**2 * S / B, atol=1e-15)
    C_ou = df.ou_stationary_covariance(H, S, eta, B)
    assert torch.allclose(H @ C_ou + C_ou @ H.T, eta * S / B, atol=1e-15)
    # one dimension: closed forms eta s/(B h (2 - eta h)) and eta s/(2 B h)
    h, s = torch.tensor([[3.0]], dtype=f64), torch.tensor([[2.0]], dtype=f64)
    assert abs(df.sgd_stationary_covariance(h, s, 0.2, 2).item() - 0.2 * 2 / (2 * 3 * (2 - 0.6))) < 1e-14
    assert abs(df.ou_stationary_covariance(h, s, 0.2, 2).item() - 0.2 * 2 / (2 * 2 * 3)) < 1e-14


def test_lyapunov_batched_and_checked():
    H, S = _pair()
    Hb = torch.stack([H, 2 * H, 0.5 * H])
    C = df.ou_stationary_covariance(Hb, S, 0.1, 2)
    for i in range(3):
        assert torch.allclose(C[i], df.ou_stationary_covariance(Hb[i], S, 0.1, 2), atol=1e-15)
    with pytest.raises(ValueError, match="eta"):
        df.sgd_stationary_covariance(H, S, 1.5, 2)
    with pytest.raises(ValueError, match="H must"):
        df.ou_stationary_covariance(-H, S, 0.1, 2)
    with pytest.raises(ValueError, match="square"):
        df.ou_stationary_covariance(torch.zeros(2, 3, dtype=f64), S, 0.1, 2)


def test_sgd_chains_reach_the_discrete_lyapunov_covariance(gen):
    H, S = _pair()
    eta, B = 0.2, 2
    L = torch.linalg.cholesky(S / B)
    noisy = lambda th, g: th @ H.T + torch.randn(th.shape, generator=g, dtype=f64) @ L.T
    th = df.sgd_chains(torch.zeros(20_000, 2, dtype=f64), noisy, eta, 60, gen)
    C = df.sgd_stationary_covariance(H, S, eta, B)
    prods = th[:, :, None] * th[:, None, :]
    m, se = stats.mean_stderr(prods.reshape(-1, 4))
    stats.assert_agrees(m, se, C.reshape(4))
    stats.assert_rejects(m, se, df.ou_stationary_covariance(H, S, eta, B).reshape(4), z=5)


def test_euler_maruyama_ou_variance_and_recording(gen):
    h, s = 1.0, 0.5
    th = df.euler_maruyama(torch.zeros(20_000, 1, dtype=f64), lambda x: -h * x,
                           lambda x: torch.full((x.shape[0], 1, 1), s**0.5, dtype=f64), 0.01, 400, gen,
                           record_every=100)
    assert th.shape == (4, 20_000, 1)
    v, se = stats.total_variance(th[-1])
    exact = s / (2 * h) * (1 - torch.exp(torch.tensor(-2 * h * 4.0))).item() / (1 - h * 0.01 / 2)
    stats.assert_agrees(v, se, exact)
    with pytest.raises(ValueError, match="record_every"):
        df.euler_maruyama(th[0], lambda x: x, lambda x: x[..., None], 0.1, 10, gen, record_every=3)
    with pytest.raises(ValueError, match="dt"):
        df.euler_maruyama(th[0], lambda x: x, lambda x: x[..., None], -0.1, 10, gen)
