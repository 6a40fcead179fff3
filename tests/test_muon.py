import math

import pytest
import torch
from torch.optim._muon import _zeropower_via_newtonschulz as torch_newton_schulz

import gradnoise
from gradnoise import muon

SHAPES = [(4, 6), (6, 4), (5, 5), (1, 7), (16, 32), (24, 8)]


def gen(label):
    return gradnoise.generator(f"test:muon:{label}", device="cpu")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_newton_schulz_is_torch_bit_for_bit(shape, dtype):
    G = torch.randn(32, *shape, generator=gen(f"ns:{shape}:{dtype}"), dtype=torch.float64).to(dtype)
    G[0] *= 1e-9                                                      # the eps floor of the norm, too
    ours = muon.newton_schulz(G)
    ref = torch.stack([torch_newton_schulz(g, muon.COEFFICIENTS, 5, muon.EPS) for g in G])
    assert ours.dtype == ref.dtype == torch.bfloat16
    assert torch.equal(ours, ref)


def test_newton_schulz_batched_route_is_within_rounding_and_batches():
    G = torch.randn(3, 50, 5, 5, generator=gen("fast"), dtype=torch.float32)
    exact, fast = muon.newton_schulz(G), muon.newton_schulz(G, exact=False)
    assert exact.shape == G.shape
    assert (exact.float() - fast.float()).abs().max().item() <= 2**-6      # a few bfloat16 ulps at most
    assert torch.equal(exact[2, 7], muon.newton_schulz(G[2, 7]))


def test_newton_schulz_float64_follows_the_scalar_polynomial():
    """In exact arithmetic NS acts on the singular values by p^5(sigma / ||G||_F)."""
    G = torch.randn(40, 6, 9, generator=gen("poly"), dtype=torch.float64)
    X = muon.newton_schulz(G, dtype=torch.float64)
    s = torch.linalg.svdvals(G)
    x = s / torch.linalg.matrix_norm(G).unsqueeze(-1)
    mapped = muon.singular_value_map(x).sort(dim=-1, descending=True).values   # p^5 is not monotone
    assert torch.allclose(torch.linalg.svdvals(X), mapped, rtol=0, atol=1e-12)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)          # and the singular vectors are G's
    assert torch.allclose(X, U @ torch.diag_embed(muon.singular_value_map(x)) @ Vh, atol=1e-12)


def test_adjusted_lr_matches_torch():
    from torch.optim._muon import _adjust_lr
    for shape in [(4, 6), (6, 4), (100, 3)]:
        for fn in [None, "original", "match_rms_adamw"]:
            assert muon.adjusted_lr(0.02, shape, fn) == _adjust_lr(0.02, fn, torch.Size(shape))
    assert muon.adjusted_lr(1.0, (16, 4)) == 2.0
    with pytest.raises(ValueError, match="adjust_lr_fn"):
        muon.adjusted_lr(1.0, (4, 4), "other")


OPTIONS = [
    dict(),                                                            # torch's defaults (Nesterov, wd 0.1)
    dict(nesterov=False, weight_decay=0.0, momentum=0.9, lr=0.05),
    dict(nesterov=True, weight_decay=0.01, momentum=0.5, lr=0.1, adjust_lr_fn="match_rms_adamw"),
    dict(nesterov=False, ns_steps=3, eps=1e-5, lr=0.02),
]


@pytest.mark.parametrize("shape", [(4, 6), (6, 4), (5, 5), (48, 16)])
@pytest.mark.parametrize("options", range(len(OPTIONS)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_multi_step_update_equals_torch_optim_muon(shape, options, dtype):
    opts = OPTIONS[options]
    g = gen(f"steps:{shape}:{options}:{dtype}")
    theta0 = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
    grads = torch.randn(6, *shape, generator=g, dtype=torch.float64).to(dtype)
    p = torch.nn.Parameter(theta0.clone())
    opt = torch.optim.Muon([p], **opts)
    theta, buf = theta0.clone(), torch.zeros_like(theta0)
    kw = {("coefficients" if k == "ns_coefficients" else k): v for k, v in opts.items()}
    for grad in grads:
        p.grad = grad.clone()
        opt.step()
        theta, buf, _ = muon.step(theta, grad, buf, **kw)
        assert torch.equal(opt.state[p]["momentum_buffer"], buf)
        assert torch.equal(p.detach(), theta)


def test_bfloat16_buffer_without_nesterov_is_renormalised_by_torch():
    """torch's helper divides a bfloat16 buffer in place by its norm when it is the NS input itself."""
    g0 = torch.randn(6, 4, generator=gen("alias"), dtype=torch.float64).bfloat16()
    p = torch.nn.Parameter(torch.zeros(6, 4, dtype=torch.bfloat16))
    opt = torch.optim.Muon([p], momentum=0.9, nesterov=False)
    p.grad = g0.clone()
    opt.step()
    stored = opt.state[p]["momentum_buffer"].double()
    assert abs(torch.linalg.matrix_norm(stored).item() - 1) < 1e-2
    assert not torch.allclose(stored, 0.1 * g0.double(), atol=1e-2)


def test_buffer_is_an_ema_not_a_sum():
    """After one step from zero torch's buffer holds (1 - mu) g, not g (its documentation says g)."""
    g0 = torch.randn(4, 6, generator=gen("ema"), dtype=torch.float64)
    p = torch.nn.Parameter(torch.zeros(4, 6, dtype=torch.float64))
    opt = torch.optim.Muon([p], momentum=0.9)
    p.grad = g0.clone()
    opt.step()
    assert torch.allclose(opt.state[p]["momentum_buffer"], 0.1 * g0, rtol=1e-15, atol=0)


def test_buffer_weights_and_noise_factor():
    for mu in (0.0, 0.5, 0.95):
        for nesterov in (False, True):
            w = muon.buffer_weights(mu, 4000, nesterov)
            assert math.isclose(float(w.sum()), 1.0, rel_tol=1e-12)
            assert math.isclose(muon.noise_factor(mu, 4000, nesterov), muon.noise_factor(mu, None, nesterov), rel_tol=1e-12)
    # weights reproduce the recursion itself, on an impulse
    mu, T = 0.8, 7
    impulses = torch.eye(T, dtype=torch.float64)[:, :, None]           # step s carries e_s
    buf = torch.zeros(T, 1, dtype=torch.float64)
    for s in range(T):
        buf = muon.buffer_update(buf, impulses[s], mu)
    mixed = muon.nesterov_mix(impulses[-1], buf, mu)
    assert torch.allclose(mixed[:, 0].flip(0), muon.buffer_weights(mu, T, True), atol=1e-15)
    assert torch.allclose(buf[:, 0].flip(0), muon.buffer_weights(mu, T, False), atol=1e-15)
    assert muon.noise_factor(0.95) > muon.noise_factor(0.95, nesterov=False)


def test_noise_factor_by_z_test():
    mu, T, trials = 0.9, 80, 20000
    g = gen("z")
    noise = torch.randn(trials, T, generator=g, dtype=torch.float64)
    w = muon.buffer_weights(mu, T).flip(0)
    x = noise @ w
    var, se = x.var().item(), x.var().item() * math.sqrt(2 / (trials - 1))
    assert abs(var - muon.noise_factor(mu, T)) < 5 * se
    assert abs(var - muon.noise_factor(mu, T, nesterov=False)) > 5 * se


def test_argument_checks():
    with pytest.raises(ValueError, match="G"):
        muon.newton_schulz(torch.zeros(3))
    with pytest.raises(ValueError, match="coefficients"):
        muon.newton_schulz(torch.ones(2, 2), coefficients=(1.0, 2.0))
    with pytest.raises(ValueError, match="eps"):
        muon.newton_schulz(torch.ones(2, 2), eps=0)
    with pytest.raises(ValueError, match="momentum"):
        muon.buffer_weights(1.5, 3)
    with pytest.raises(ValueError, match="grad"):
        muon.buffer_update(torch.zeros(2, 2), torch.zeros(2, 3), 0.9)
