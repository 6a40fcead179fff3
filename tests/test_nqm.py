import math

import pytest
import sympy as sp
import torch

import gradnoise as gn
from gradnoise import nqm, stats

f64 = torch.float64


def _cpu(x):
    return torch.as_tensor(x, dtype=f64).cpu()


def test_sgd_second_moment_matches_sympy_closed_form():
    """1-D SGD: E[theta_t^2] = r^{2t} theta0^2 + q a^2 (1 - r^{2t}) / (1 - r^2), solved by SymPy's rsolve."""
    t = sp.symbols("t", integer=True, nonnegative=True)
    a, hh, q, th0 = sp.Rational(3, 100), sp.Rational(7, 2), sp.Rational(2, 5), sp.Rational(6, 5)
    s = sp.Function("s")
    sol = sp.rsolve(s(t + 1) - (1 - a * hh) ** 2 * s(t) - a**2 * q, s(t), {s(0): th0**2})
    _, second = nqm.moment_trajectory(float(hh), float(q), float(a), 0.0, 1, 0.0, float(th0), steps=40)
    exact = torch.tensor([float(sol.subs(t, k)) for k in range(41)], dtype=f64)
    assert torch.allclose(_cpu(second[:, 0]), exact, rtol=1e-12, atol=0)


def test_momentum_stationary_matches_sympy_lyapunov():
    """Heavy ball: the steady state solves S = A S A^T + q b b^T; SymPy solves it symbolically."""
    al, be, h, q = sp.symbols("alpha beta h q", positive=True)
    s00, s01, s11 = sp.symbols("s00 s01 s11")
    A = sp.Matrix([[1 - al * h, -al * be], [h, be]])
    b = sp.Matrix([-al, 1])
    S = sp.Matrix([[s00, s01], [s01, s11]])
    eqs = A * S * A.T + q * b * b.T - S
    sol = sp.solve([eqs[0, 0], eqs[0, 1], eqs[1, 1]], [s00, s01, s11], dict=True)[0]
    var = sp.simplify(sol[s00])
    assert sp.simplify(var - al * q * (1 + be) / (h * (1 - be) * (2 * (1 + be) - al * h))) == 0
    vals = {al: 0.07, be: 0.6, h: 3.0, q: 0.5}
    got = nqm.stationary_second_moment(3.0, 0.5, 0.07, 0.6)[..., 0].item()
    assert abs(got - float(var.subs(vals))) < 1e-12 * abs(got)


def test_moments_at_equals_iteration_and_approaches_steady_state():
    h = torch.tensor([2.0, 0.3, 0.05], dtype=f64)
    for method in nqm.METHODS:
        mean, second = nqm.moment_trajectory(h, 1.5, 0.2, 0.7, 4, 0.5, 1.0, steps=57, method=method)
        m57, s57 = nqm.moments_at(h, 1.5, 0.2, 0.7, 4, 0.5, 1.0, t=57, method=method)
        assert torch.allclose(mean[-1], m57, rtol=1e-11, atol=1e-15)
        assert torch.allclose(second[-1], s57, rtol=1e-11, atol=1e-15)
        _, far = nqm.moments_at(h, 1.5, 0.2, 0.7, 4, 0.5, 1.0, t=20000, method=method)
        inf = nqm.stationary_second_moment(h, 1.5, 0.2, 0.7, 4, 0.5, method=method)
        assert torch.allclose(far, inf, rtol=1e-9, atol=0)


def test_unstable_steady_state_is_nan():
    assert math.isnan(nqm.stationary_second_moment(1.0, 1.0, 2.5)[..., 0].item())
    assert nqm.spectral_radius(1.0, 2.5).item() > 1


@pytest.mark.parametrize("method", nqm.METHODS)
def test_simulator_agrees_with_exact_moments(method):
    gen = gn.generator(f"test:nqm-sim-{method}")
    h = torch.tensor([4.0, 1.0, 0.1], dtype=f64)
    c = torch.tensor([1.0, 2.0, 0.5], dtype=f64)
    kw = dict(h=h, c=c, alpha=0.15, beta=0.8, B=3, p=0.5, theta0=torch.tensor([1.0, -2.0, 3.0], dtype=f64),
              method=method)
    x = nqm.simulate(**kw, steps=30, trials=40_000, generator=gen)
    mean, second = nqm.moments_at(**kw, t=30)
    m, se = stats.mean_stderr(x)
    stats.assert_agrees(m, se, mean, z=5, what="simulated mean")
    sq = torch.stack([x[..., 0] ** 2, x[..., 0] * x[..., 1], x[..., 1] ** 2], -1)
    m2, se2 = stats.mean_stderr(sq)
    stats.assert_agrees(m2, se2, second, z=5, what="simulated second moment")
    # power: a 10% error in the noise variance is rejected
    _, wrong = nqm.moments_at(**{**kw, "B": 3 / 1.1}, t=30)
    stats.assert_rejects(m2, se2, wrong, z=5, what="wrong noise variance")


def test_steps_to_target_equals_brute_force_for_sgd_and_bounds_momentum():
    d = 20
    h = 1 / torch.arange(1, d + 1, dtype=f64)
    alphas = torch.tensor([0.4, 1.0, 1.8], dtype=f64)
    betas = torch.tensor([0.0, 0.5, 0.9], dtype=f64)
    Bs = torch.tensor([1.0, 10.0, 100.0], dtype=f64)
    a, b = torch.meshgrid(alphas, betas, indexing="ij")
    st = _cpu(nqm.steps_to_target(h, h, a, b, Bs, target=0.3, max_doublings=12))
    first = _cpu(nqm.first_crossing(h, h, a[None, ..., None], b[None, ..., None], Bs[:, None, None, None],
                                    target=0.3, max_steps=2**12 - 1))
    _, s = nqm.moment_trajectory(h, h, 1.0, 0.0, 100.0, steps=40)       # the definition, once more by hand
    L = (0.5 * h * s[..., 0]).sum(-1).cpu()
    assert first[2, 1, 0].item() == int(torch.nonzero(L <= 0.3)[0])
    assert torch.equal(st[:, :, 0], first[:, :, 0])                  # SGD: exact
    finite = torch.isfinite(first)
    assert bool((st[finite] >= first[finite]).all())                 # momentum: never earlier
    assert bool((st > first).any())                                  # ... and an underdamped case is later
    assert torch.equal(torch.isinf(st), torch.isinf(first))


def test_tuned_steps_and_critical_batch_size():
    B = torch.tensor([1.0, 2, 4, 8, 16, 32], dtype=f64)
    steps = 100 / B + 10                               # S = S_min (1 + B_noise / B) with B_noise = 10
    assert abs(nqm.critical_batch_size(B, steps, factor=2) - 10.0) < 3.5
    assert math.isinf(nqm.critical_batch_size(B, 100 / B))
    h = torch.tensor([1.0, 0.1], dtype=f64)
    best, a, b = nqm.tuned_steps_to_target(h, h, torch.tensor([0.5, 1.0]), torch.tensor([0.0]), torch.tensor([1e6]),
                                           target=0.01)
    assert b.item() == 0 and a.item() == 1.0                         # noiseless: the larger stable rate wins


def test_argument_checks():
    with pytest.raises(ValueError, match="method"):
        nqm.transition(1.0, 0.1, 0.0, method="adam")
    with pytest.raises(ValueError, match="beta"):
        nqm.transition(1.0, 0.1, 1.0)
    with pytest.raises(ValueError, match="h"):
        nqm.preconditioned(-1.0, 1.0)
    with pytest.raises(ValueError, match="B"):
        nqm.moment_trajectory(1.0, 1.0, 0.1, B=0)
    with pytest.raises(ValueError, match="generator"):
        nqm.simulate(1.0, 1.0, 0.1)
    with pytest.raises(ValueError, match="target"):
        nqm.steps_to_target(torch.ones(2), torch.ones(2), 0.1, 0.0, torch.ones(1), target=0)
