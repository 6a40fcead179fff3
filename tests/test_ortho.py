import math

import pytest
import torch

from gradnoise import ortho, sampling

f64 = torch.float64


@pytest.fixture
def gen():
    g = torch.Generator().manual_seed(1234)
    return g


def exact(m, n, s, gen):
    """Return G = U diag(s) V^T and U V^T from explicitly built Haar factors."""
    U = sampling.random_orthogonal(m, gen)[:, : len(s)]
    V = sampling.random_orthogonal(n, gen)[:, : len(s)]
    s = torch.tensor(s, dtype=f64)
    return (U * s) @ V.T, U @ V.T


@pytest.mark.parametrize("shape", [(4, 6), (6, 4), (5, 5), (1, 7)])
@pytest.mark.parametrize("method", ["auto", "gram", "svd"])
def test_polar_factor_matches_uvt(gen, shape, method):
    m, n = shape
    s = torch.linspace(2.0, 0.5, min(m, n)).tolist()
    G, Q = exact(m, n, s, gen)
    assert torch.allclose(ortho.polar_factor(G, method=method), Q, atol=1e-12)


def test_polar_factor_is_batched(gen):
    G = torch.randn(3, 5, 4, 6, generator=gen, dtype=f64)
    out = ortho.polar_factor(G)
    assert out.shape == G.shape
    assert torch.allclose(out[2, 1], ortho.polar_factor(G[2, 1], method="svd"), atol=1e-12)
    assert torch.allclose(out @ out.mT, torch.eye(4, dtype=f64).expand(3, 5, 4, 4), atol=1e-12)


def test_auto_route_falls_back_to_svd_when_ill_conditioned(gen):
    G, Q = exact(4, 6, [1.0, 1e-2, 1e-4, 1e-6], gen)
    err_auto = (ortho.polar_factor(G) - Q).abs().max().item()
    err_gram = (ortho.polar_factor(G, method="gram") - Q).abs().max().item()
    assert err_auto < 1e-8 < err_gram


def test_rank_deficient_raises_unless_pinv(gen):
    G, _ = exact(4, 6, [1.0, 0.5, 0.2, 0.0], gen)
    for method in ("auto", "gram", "svd"):
        with pytest.raises(ValueError, match="rank-deficient"):
            ortho.polar_factor(G, method=method)
    P = ortho.polar_factor(G, method="svd", pinv=True)
    assert torch.allclose(torch.linalg.svdvals(P), torch.tensor([1, 1, 1, 0], dtype=f64), atol=1e-10)
    assert torch.allclose(ortho.polar_factor(G, pinv=True), P, atol=1e-10)


def test_preconditioned_is_polar_factor_for_full_row_rank(gen):
    G, Q = exact(3, 5, [1.5, 1.0, 0.3], gen)
    assert torch.allclose(ortho.preconditioned(G), Q, atol=1e-12)


def test_preconditioned_tall_needs_pinv(gen):
    G, Q = exact(5, 3, [1.5, 1.0, 0.3], gen)
    with pytest.raises(ValueError, match="pinv=True"):
        ortho.preconditioned(G)
    assert torch.allclose(ortho.preconditioned(G, pinv=True), Q, atol=1e-10)


def test_inv_sqrt_psd(gen):
    A = torch.randn(4, 4, generator=gen, dtype=f64)
    H = A @ A.T + 0.1 * torch.eye(4, dtype=f64)
    K = ortho.inv_sqrt_psd(H)
    assert torch.allclose(K, K.T) and torch.allclose(K @ K @ H, torch.eye(4, dtype=f64), atol=1e-10)
    assert bool((torch.linalg.eigvalsh(K) > 0).all())
    with pytest.raises(ValueError, match="square"):
        ortho.inv_sqrt_psd(A[:, :3])
    with pytest.raises(ValueError, match="symmetric"):
        ortho.inv_sqrt_psd(A)
    with pytest.raises(ValueError, match="rank-deficient"):
        ortho.inv_sqrt_psd(torch.diag(torch.tensor([1.0, 0.0], dtype=f64)))


@pytest.mark.parametrize("bad, match", [
    (torch.ones(3, dtype=f64), "at least 2 dimensions"),
    (torch.tensor([[1.0, float("nan")]], dtype=f64), "NaN or inf"),
    (torch.tensor([[1.0, float("inf")]], dtype=f64), "NaN or inf"),
    (torch.ones(2, 2, dtype=torch.int64), "floating-point"),
    ([[1.0, 0.0]], "torch.Tensor"),
])
def test_bad_input_names_the_argument(bad, match):
    with pytest.raises(ValueError, match=match) as info:
        ortho.polar_factor(bad)
    assert str(info.value).startswith("G ")


def test_bad_method():
    with pytest.raises(ValueError, match="method"):
        ortho.polar_factor(torch.eye(2, dtype=f64), method="qr")


def test_newton_schulz_is_an_approximation(gen):
    G, Q = exact(4, 6, [1.0, 0.8, 0.5, 0.1], gen)
    X = ortho.newton_schulz(G)
    s = torch.linalg.svdvals(X)
    assert X.shape == G.shape and X.dtype == f64
    assert bool((s > 0.6).all() and (s < 1.3).all())
    assert (X - Q).abs().max() > 1e-3
    assert torch.allclose(ortho.newton_schulz(G.T.contiguous()), X.T, atol=1e-12)
    assert ortho.newton_schulz(G, dtype=torch.bfloat16).dtype == f64
    with pytest.raises(ValueError, match="steps"):
        ortho.newton_schulz(G, steps=0)


@pytest.mark.parametrize("shape", [(4, 6), (6, 4), (3, 3)])
def test_polar_derivative_matches_finite_differences(gen, shape):
    G, _ = exact(*shape, torch.linspace(1.5, 0.4, min(shape)).tolist(), gen)
    E = torch.randn(*shape, generator=gen, dtype=f64)
    h = 1e-6
    fd = (ortho.polar_factor(G + h * E, method="svd") - ortho.polar_factor(G - h * E, method="svd")) / (2 * h)
    assert torch.allclose(ortho.polar_derivative(G, E), fd, atol=1e-8)
    with pytest.raises(ValueError, match="E has matrix shape"):
        ortho.polar_derivative(G, E.T.contiguous() if shape[0] != shape[1] else E[:, :2])


@pytest.mark.parametrize("shape", [(4, 6), (6, 4), (3, 3)])
def test_isotropic_bias_matches_second_difference(gen, shape):
    """b = (var/2) * sum over entries e of D^2 Ortho(G)[e, e], by central second differences."""
    G, O = exact(*shape, torch.linspace(1.5, 0.4, min(shape)).tolist(), gen)
    var, h = 0.3, 1e-3
    E = torch.eye(G.numel(), dtype=f64).reshape(-1, *shape)
    second = (ortho.polar_factor(G + h * E, method="svd") + ortho.polar_factor(G - h * E, method="svd") - 2 * O) / h**2
    b_fd = 0.5 * var * second.sum(0)
    b = ortho.polar_bias_isotropic(G, var)
    assert torch.allclose(b, b_fd, atol=1e-5)
    # sigma_L^2 = E||L_1(delta)||^2 = var * sum_e ||L_1(e)||^2 and equals -2 <O, b>
    L = ortho.polar_derivative(G.expand(len(E), *shape), E)
    sL2 = ortho.polar_linear_variance_isotropic(G, var)
    assert math.isclose(sL2.item(), var * (L**2).sum().item(), rel_tol=1e-10)
    assert math.isclose(sL2.item(), -2 * (O * b).sum().item(), rel_tol=1e-10)
    with pytest.raises(ValueError, match="var"):
        ortho.polar_bias_isotropic(G, 0.0)


def test_polar_second_order_tensor(gen):
    G, O = exact(3, 4, [1.2, 0.9, 0.5], gen)
    B = ortho.polar_second_order(G)
    assert B.shape == (12, 12, 12) and torch.allclose(B, B.transpose(1, 2), atol=1e-7)
    assert torch.allclose(0.3 * torch.einsum("rpp->r", B).reshape(3, 4), ortho.polar_bias_isotropic(G, 0.3), atol=1e-7)
    E = 1e-3 * torch.randn(3, 4, generator=gen, dtype=f64)
    second = ortho.polar_factor(G + E, method="svd") - O - ortho.polar_derivative(G, E)
    quad = torch.einsum("rpq,p,q->r", B, E.flatten(), E.flatten()).reshape(3, 4)
    assert (second - quad).abs().max() < 0.02 * quad.abs().max()  # what is left is third order
    with pytest.raises(ValueError, match="single matrix"):
        ortho.polar_second_order(G.expand(2, 3, 4))
