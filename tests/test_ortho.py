import math

import pytest
import torch

from gradnoise import ortho, sampling
from gradnoise import seeds as gnseeds

f64 = torch.float64


@pytest.fixture
def gen(request):
    """A generator of the book's seeds (GRADNOISE_SEED varies it), on the CPU, one per test."""
    return gnseeds.generator(f"test:{request.node.name}", "cpu")


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
    with pytest.raises(ValueError, match="H is singular"):
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
    scale = B.abs().max().item()             # central differences: error ~ h^2 times third derivatives
    assert B.shape == (12, 12, 12) and torch.allclose(B, B.transpose(1, 2), atol=1e-6 * scale)
    assert torch.allclose(0.3 * torch.einsum("rpp->r", B).reshape(3, 4), ortho.polar_bias_isotropic(G, 0.3),
                          atol=1e-6 * scale)
    E = 1e-3 * torch.randn(3, 4, generator=gen, dtype=f64)
    second = ortho.polar_factor(G + E, method="svd") - O - ortho.polar_derivative(G, E)
    quad = torch.einsum("rpq,p,q->r", B, E.flatten(), E.flatten()).reshape(3, 4)
    assert (second - quad).abs().max() < 0.02 * quad.abs().max()  # what is left is third order
    with pytest.raises(ValueError, match="single matrix"):
        ortho.polar_second_order(G.expand(2, 3, 4))


# --- the auto route against an independent peer (scipy.linalg.polar), issue 6 item 6 ---------------

scipy_linalg = pytest.importorskip("scipy.linalg")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(16, 24), (12, 12), (24, 16)])
def test_auto_route_matches_scipy_polar_for_every_condition_number(gen, shape, dtype):
    m, n = shape
    r = min(m, n)
    u = torch.finfo(dtype).eps
    for kappa in (1.0, 10.0, 300.0, 1e3, 1e5, 1e7):
        s = torch.logspace(0, -math.log10(kappa), r, dtype=f64) if kappa > 1 else torch.ones(r, dtype=f64)
        G64 = sampling.with_singular_values(s.tolist(), m, n, gen)
        G = G64.to(dtype)
        # the peer: scipy's polar decomposition of the same (rounded) matrix, in float64
        U_peer, _ = scipy_linalg.polar(G.to(f64).numpy(), side="right")
        kappa_rounded = float(torch.linalg.cond(G.to(f64)))
        if kappa_rounded * u > 1e-2:     # float32 cannot represent kappa = 1e7 faithfully: no unique answer
            continue
        out = ortho.polar_factor(G).to(f64)
        err = torch.linalg.matrix_norm(out - torch.from_numpy(U_peer)).item()
        bound = 20 * max(m, n) * u * kappa_rounded       # the SVD route's forward error, u * kappa
        assert err <= bound, (shape, dtype, kappa, err, bound)


def test_auto_route_reroutes_float32_from_kappa_300_issue_case(gen):
    """The case seen by the examination: float32 64x128 with kappa >= 300 gave errors 0.11-0.21."""
    s = torch.logspace(0, -math.log10(300), 64, dtype=f64)
    G = torch.stack([sampling.with_singular_values(s.tolist(), 64, 128, gen) for _ in range(5)]).float()
    err = torch.linalg.matrix_norm(ortho.polar_factor(G).double() - ortho.polar_factor(G.double(), method="svd"))
    assert err.max().item() < 1e-3


def test_auto_route_honours_rtol_and_pinv(gen):
    G = sampling.with_singular_values([1.0, 0.5, 1e-3], 3, 5, gen)
    # with rtol = 1e-2 the third singular value counts as zero: no silent full-rank answer
    with pytest.raises(ValueError, match="rank-deficient"):
        ortho.polar_factor(G, rtol=1e-2)
    part = ortho.polar_factor(G, rtol=1e-2, pinv=True)
    assert torch.linalg.matrix_rank(part).item() == 2
    # with the default rtol the matrix is full rank, and auto equals the SVD route
    assert torch.allclose(ortho.polar_factor(G), ortho.polar_factor(G, method="svd"), atol=1e-11)


@pytest.mark.parametrize("scale", [1e155, 1e-170])
def test_extreme_scales(gen, scale):
    G = sampling.with_singular_values([1.0, 0.7, 0.4], 3, 4, gen)
    ref = ortho.polar_factor(G, method="svd")
    for method in ("auto", "gram", "svd"):
        assert torch.allclose(ortho.polar_factor(G * scale, method=method), ref, atol=1e-12), method


def test_gram_route_gets_squared_tolerance(gen):
    G = sampling.with_singular_values([1.0, 1e-5], 2, 3, gen)     # sigma ratio 1e-5, above rtol = 1e-6
    out = ortho.polar_factor(G, method="gram", rtol=1e-6)
    assert torch.allclose(out @ out.mT, torch.eye(2, dtype=f64), atol=1e-6)


# --- bad input, issue 6 item 8 -------------------------------------------------------------------

@pytest.mark.parametrize("rtol", [2, 1.0, 0, -1, float("nan"), float("inf"), "1e-3", None.__class__])
def test_rtol_must_lie_in_the_open_unit_interval(gen, rtol):
    G = sampling.with_singular_values([1.0, 0.5], 2, 3, gen)
    with pytest.raises(ValueError, match="rtol"):
        ortho.polar_factor(G, rtol=rtol)


def test_indefinite_H_is_named():
    H = torch.diag(torch.tensor([1.0, -0.5], dtype=f64))
    for pinv in (False, True):
        with pytest.raises(ValueError, match="H must be positive semi-definite"):
            ortho.inv_sqrt_psd(H, pinv=pinv)
    with pytest.raises(ValueError, match="H is singular"):
        ortho.inv_sqrt_psd(torch.diag(torch.tensor([1.0, 0.0], dtype=f64)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_into_exact_routes(dtype):
    G = torch.eye(3, 4, dtype=dtype)
    for fn in (ortho.polar_factor, ortho.preconditioned, lambda x: ortho.polar_derivative(x, x)):
        with pytest.raises(ValueError, match="float32 or float64"):
            fn(G)
    assert ortho.newton_schulz(G.float(), dtype=dtype).dtype == torch.float32   # what low precision is for


def test_polar_derivative_kind_and_batch_mismatch(gen):
    G = sampling.with_singular_values([1.0, 0.5], 2, 3, gen)
    with pytest.raises(ValueError, match="must match"):
        ortho.polar_derivative(G, G.float())
    with pytest.raises(ValueError, match="do not broadcast"):
        ortho.polar_derivative(G.expand(3, 2, 3), torch.zeros(4, 2, 3, dtype=f64))


@pytest.mark.parametrize("var", [float("inf"), float("nan"), "0.1", None, 0, -1, True])
def test_var_must_be_a_finite_positive_number(gen, var):
    G = sampling.with_singular_values([1.0, 0.5], 2, 3, gen)
    with pytest.raises(ValueError, match="var"):
        ortho.polar_bias_isotropic(G, var)
    with pytest.raises(ValueError, match="var"):
        sampling.token_noise((2, 2), var, gen)


def test_size_and_step_limits(gen):
    with pytest.raises(ValueError, match="steps must be at most 100"):
        ortho.newton_schulz(torch.eye(3, dtype=f64), steps=10**9)
    with pytest.raises(ValueError, match="GiB"):
        ortho.polar_second_order(torch.eye(40, dtype=f64))
    with pytest.raises(ValueError, match="GiB"):
        sampling.token_gradients(torch.eye(4, 6, dtype=f64), 0.1, gen, trials=10**9, tokens=10)


def test_counts_accept_numpy_and_0d_tensors(gen):
    np = pytest.importorskip("numpy")
    G = torch.eye(2, 3, dtype=f64)
    a = sampling.block_means(G, 0.1, gen, np.int64(4), torch.tensor(2), 3)
    assert a.shape == (4, 2, 2, 3)


def test_general_covariance_bias_matches_isotropic_and_finite_differences(gen):
    for shape in [(3, 5), (4, 4), (5, 2)]:
        m, n = shape
        G = sampling.with_singular_values(torch.linspace(1.0, 0.4, min(m, n)).tolist(), m, n, gen)
        eye = torch.eye(m * n, dtype=f64)
        assert torch.allclose(ortho.polar_bias(G, cov=0.1 * eye), ortho.polar_bias_isotropic(G, 0.1), atol=1e-13)
        A = torch.randn(m * n, m * n, generator=gen, dtype=f64)
        C = 0.05 * A @ A.T / (m * n)
        b_fd = torch.einsum("rpq,pq->r", ortho.polar_second_order(G), C).reshape(m, n)
        b = ortho.polar_bias(G, cov=C)
        assert torch.allclose(b, b_fd, atol=1e-6), shape
        factors = torch.linalg.cholesky(C).mT.reshape(m * n, m, n)    # C = sum_k vec(F_k) vec(F_k)^T
        assert torch.allclose(ortho.polar_bias(G, factors=factors), b, atol=1e-13)
        O = ortho.polar_factor(G)
        assert abs(ortho.polar_linear_variance(G, cov=C) + 2 * (O * b).sum().item()) < 1e-12


def test_polar_expansion_matches_derivative_and_second_difference(gen):
    for shape in [(3, 5), (4, 4), (5, 2)]:
        m, n = shape
        G = sampling.with_singular_values(torch.linspace(1.0, 0.4, min(m, n)).tolist(), m, n, gen)
        E = torch.randn(6, m, n, generator=gen, dtype=f64)
        L1, Q2 = ortho.polar_expansion(G, E)
        assert torch.allclose(L1, ortho.polar_derivative(G, E), atol=1e-13)
        h = 1e-4
        second = (ortho.polar_factor(G + h * E, method="svd") + ortho.polar_factor(G - h * E, method="svd")
                  - 2 * ortho.polar_factor(G, method="svd")) / (2 * h**2)
        assert torch.allclose(Q2, second, atol=1e-5 * Q2.abs().max().item()), shape


@pytest.mark.parametrize("shape", [(4, 6), (32, 64), (6, 4)])
def test_newton_schulz_equals_torch_muon_helper_bit_for_bit(gen, shape):
    helper = pytest.importorskip("torch.optim._muon")._zeropower_via_newtonschulz
    G = torch.randn(*shape, generator=gen, dtype=torch.float32)
    ours = ortho.newton_schulz(G, dtype=torch.bfloat16)
    theirs = helper(G.clone(), (3.4445, -4.7750, 2.0315), 5, 1e-7).float()
    assert torch.equal(ours, theirs)


def _on_device(label):
    """A generator on the book's device (CUDA under GRADNOISE_DEVICE=cuda): these tests exercise the backend."""
    return gnseeds.generator(f"test:{label}")


@pytest.mark.parametrize("chunk", [1, 5, 21, 84, 1000])
def test_batched_decomposition_equals_one_call(chunk):
    gen = _on_device("batched-decomposition")
    A = torch.randn(3, 7, 4, 5, dtype=f64, device=gen.device, generator=gen)
    H = A @ A.mT
    w_one, Q_one = torch.linalg.eigh(H)
    w, Q = ortho.batched_decomposition(torch.linalg.eigh, H, chunk=chunk)
    assert w.shape == w_one.shape and Q.shape == Q_one.shape
    assert torch.allclose(w, w_one, rtol=1e-12, atol=1e-12)
    assert torch.allclose((Q * w.unsqueeze(-2)) @ Q.mT, H, rtol=0, atol=1e-12)   # eigenvectors up to sign
    only_w = ortho.batched_decomposition(torch.linalg.eigvalsh, H, chunk=chunk)
    assert only_w.shape == w_one.shape and torch.allclose(only_w, w_one, rtol=1e-12, atol=1e-12)
    U, s, Vh = ortho.batched_decomposition(lambda X: torch.linalg.svd(X, full_matrices=False), A, chunk=chunk)
    assert torch.allclose(s, torch.linalg.svdvals(A), rtol=1e-12, atol=1e-12)
    assert torch.allclose((U * s.unsqueeze(-2)) @ Vh, A, rtol=0, atol=1e-12)


def test_polar_factor_over_many_chunks_matches_one_matrix_at_a_time(monkeypatch):
    gen = _on_device("polar-chunks")
    G = torch.randn(100, 4, 6, dtype=f64, device=gen.device, generator=gen)
    G[7] = G[7, :, :1] @ G[7, :1, :] + 1e-9 * G[7]               # one ill-conditioned matrix: the SVD route
    whole = ortho.polar_factor(G)
    monkeypatch.setattr(ortho, "DECOMPOSITION_CHUNK", 16)
    chunked = ortho.polar_factor(G)
    singly = torch.stack([ortho.polar_factor(g, method="svd") for g in G])
    good = torch.arange(100, device=G.device) != 7
    for other in (whole, singly):                                   # kappa ~ 1e9 for G[7]: SVD error ~ u*kappa
        assert torch.allclose(chunked[good], other[good], rtol=0, atol=1e-12)
        assert torch.allclose(chunked[7], other[7], rtol=0, atol=1e-5)


@pytest.mark.parametrize("chunk", [0, -3, 2.5, "8"])
def test_batched_decomposition_rejects_bad_chunk(chunk):
    with pytest.raises(ValueError, match="chunk"):
        ortho.batched_decomposition(torch.linalg.eigvalsh, torch.eye(3, dtype=f64), chunk=chunk)


def test_laplacian_over_the_entries():
    gen = torch.Generator().manual_seed(5)
    X = torch.randn(3, 2, 4, dtype=torch.float64, generator=gen)           # a batch of three 2x4 matrices
    # cubic entries: central differences are exact, and the Laplacian of X_ij^3 is 6 X_ij
    torch.testing.assert_close(ortho.laplacian(lambda Y: Y**3, X, 1e-2), 6 * X, rtol=1e-9, atol=1e-9)
    # a number per matrix: sum of squares has Laplacian 2mn
    torch.testing.assert_close(ortho.laplacian(lambda Y: (Y**2).sum((-2, -1)), X, 1e-2),
                               torch.full((3,), 16.0, dtype=torch.float64), rtol=1e-9, atol=1e-9)
    # nested: Delta^2 of sum X^4 is 24 mn; the stencil's truncation adds exactly 2 h^2 per entry to Delta
    lap2 = ortho.laplacian(lambda Y: ortho.laplacian(lambda Z: (Z**4).sum((-2, -1)), Y, 1e-2), X, 1e-2)
    torch.testing.assert_close(lap2, torch.full((3,), 24.0 * 8, dtype=torch.float64), rtol=1e-5, atol=0)
    # a nearest wrong stencil (dividing by 2 h^2) is told apart
    assert not torch.allclose(ortho.laplacian(lambda Y: Y**3, X, 1e-2), 3 * X)
    with pytest.raises(ValueError, match="h must be"):
        ortho.laplacian(lambda Y: Y, X, 0.0)
    with pytest.raises(ValueError, match="f must be"):
        ortho.laplacian(3, X, 1e-2)


def test_second_order_terms_tie_and_bias():
    """T_2 = 4 |b_1|^2, and the tie T_1 + T_2 + 2 T_3 = -4 T_4 (|Ortho|^2 constant), with T_1 from the Laplacian
    stencil; counting T_3 once breaks it."""
    gen = gnseeds.generator("test:second-order-terms", device="cpu")
    G = sampling.with_singular_values([2.0, 1.3, 0.8], 3, 4, gen).to(torch.float64)
    t2, t3, t4 = ortho.second_order_terms(G)
    b1 = ortho.polar_bias_isotropic(G, 1.0)
    assert abs(t2 - 4 * float((b1**2).sum())) < 1e-12 * t2
    t1 = 2 * float((ortho.laplacian(lambda X: ortho.polar_bias_isotropic(X, 1.0), G, 4e-3) * ortho.polar_factor(G)).sum())
    scale = max(abs(t1), t2, 2 * t3, abs(4 * t4))
    assert abs(t1 + t2 + 2 * t3 + 4 * t4) < 1e-4 * scale
    assert abs(t1 + t2 + t3 + 4 * t4) > 1e-2 * scale
    with pytest.raises(ValueError, match="G must be a single matrix"):
        ortho.second_order_terms(G[None])


def test_laplacian_along_isotropic_factors_is_the_scaled_laplacian():
    """With F_j = sqrt(v) e_j the covariance-weighted Laplacian is v times the plain one; a quadratic f has an
    exact second difference, so Delta_Sigma of |X|^2 is 2 tr Sigma."""
    gen = gnseeds.generator("test:laplacian-along", device="cpu")
    G = sampling.with_singular_values([2.0, 1.0], 2, 3, gen).to(torch.float64)
    v, h = 0.3, 4e-3
    iso = v**0.5 * torch.eye(6, dtype=torch.float64).reshape(6, 2, 3)
    b1 = lambda X: ortho.polar_bias_isotropic(X, 1.0)     # noqa: E731
    assert torch.allclose(ortho.laplacian_along(b1, G, iso, h), v * ortho.laplacian(b1, G, h), rtol=1e-8, atol=0)
    F = torch.randn(4, 2, 3, generator=gen, dtype=torch.float64)
    out = ortho.laplacian_along(lambda X: (X**2).sum(), G, F, 1e-2)
    assert abs(out.item() - 2 * (F**2).sum().item()) < 1e-8
    with pytest.raises(ValueError, match="factors must be"):
        ortho.laplacian_along(b1, G, F[:, :1], h)
