r"""Exact expectations of :math:`\mathrm{Ortho}` of a noisy mean when the noise lies along one direction.

Model. The per-token noise is :math:`\delta_i = x_i D` with one fixed ``m x n`` direction :math:`D` and
i.i.d. scalars :math:`x_i`, so the mean of ``k`` tokens is :math:`G + \bar x_k D`. Then
:math:`\mathbb E\,\mathrm{Ortho}(G + \bar x_k D)` is an integral over the law of one scalar:

* for a discrete law of :math:`x` the mean :math:`\bar x_k` takes finitely many values
  (:func:`mean_law`, an exact convolution) and the expectation is a finite sum
  (:func:`expected_polar_along`);
* for Gaussian :math:`x`, :math:`\bar x_k \sim N(0, \mathrm{var}/k)` and Gauss–Hermite quadrature
  (:func:`expected_polar_gaussian_along`) is exact to rounding once the nodes resolve the integrand.

No Monte Carlo: these give bias terms far below any sampling resolution, so the exponent of a remainder
can be fitted to several digits. With :math:`f(x) = \mathrm{Ortho}(G + xD) = \sum_j c_j x^j` near 0
and :math:`\bar x_k` of cumulants :math:`\kappa_2/k, \kappa_3/k^2, \kappa_4/k^3`,
:math:`\mathbb E f(\bar x_k) = c_0 + c_2\kappa_2/k + (c_3\kappa_3 + 3c_4\kappa_2^2)/k^2 + O(k^{-3})`;
:func:`polar_taylor_along` gives the :math:`c_j` (to finite-difference accuracy).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import checks, ortho
from .device import DTYPE


def _law(values, probs):
    v = checks.real_tensor(values, "values", device=values.device if isinstance(values, torch.Tensor) else "cpu")
    p = checks.real_tensor(probs, "probs", low=0, device=v.device)
    if v.ndim != 1 or v.numel() == 0:
        raise ValueError(f"values must be a non-empty 1-D tensor, got shape {tuple(v.shape)}")
    if p.shape != v.shape:
        raise ValueError(f"probs must have the shape of values {tuple(v.shape)}, got {tuple(p.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError("values must be finite")
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
        raise ValueError("probs must be finite and non-negative")
    if abs(float(p.sum()) - 1.0) > 1e-12:
        raise ValueError(f"probs must sum to 1, got {float(p.sum())!r}")
    return v, p


def _merge(support: torch.Tensor, probs: torch.Tensor, tol: float):
    """Sort ``support`` and merge points closer than ``tol`` (adding their probabilities)."""
    order = torch.argsort(support)
    s, p = support[order], probs[order]
    new = torch.ones_like(s, dtype=torch.bool)
    new[1:] = (s[1:] - s[:-1]) > tol
    group = torch.cumsum(new.to(torch.int64), 0) - 1
    out_p = torch.zeros(int(group[-1]) + 1, dtype=p.dtype, device=p.device).index_add_(0, group, p)
    # The representative of each group is its probability-weighted centre (all members agree to tol).
    out_s = torch.zeros_like(out_p).index_add_(0, group, s * p)
    mass = out_p.clamp_min(torch.finfo(p.dtype).tiny)
    first = s[new]
    out_s = torch.where(out_p > 0, out_s / mass, first)
    return out_s, out_p


def _compositions(k: int, v: int, device) -> torch.Tensor:
    """All count vectors ``(c_1, ..., c_v)`` of non-negative integers summing to ``k``: shape ``(C(k+v-1, v-1), v)``."""
    counts = torch.zeros(1, 0, dtype=torch.int64, device=device)
    rem = torch.full((1,), k, dtype=torch.int64, device=device)
    for _ in range(v - 1):
        lengths = rem + 1
        rows = torch.repeat_interleave(torch.arange(counts.shape[0], device=device), lengths)
        offsets = torch.cumsum(lengths, 0) - lengths
        c = torch.arange(rows.numel(), device=device) - offsets[rows]
        counts = torch.cat([counts[rows], c[:, None]], dim=1)
        rem = rem[rows] - c
    return torch.cat([counts, rem[:, None]], dim=1)


MAX_COMPOSITIONS = 20_000_000
"""Largest number of count vectors :func:`mean_law` enumerates before refusing (memory)."""


def mean_law(values, probs, k: int):
    r"""Exact law of the mean :math:`\bar x_k = \frac1k\sum_{i=1}^k x_i` of ``k`` i.i.d. draws of a discrete law.

    :math:`P(x = \mathrm{values}_j) = \mathrm{probs}_j`. The sum is determined by the counts
    :math:`(c_1, \dots, c_v)`, :math:`\sum_j c_j = k`, of each value, whose law is multinomial:
    :math:`P(c) = k!\prod_j p_j^{c_j}/c_j!` (evaluated through ``lgamma``). Every count vector is
    enumerated (:math:`\binom{k+v-1}{v-1}` of them: ``k + 1`` for two values, about ``k**2 / 2`` for
    three) and support points that coincide are merged (to ``64 eps`` times ``k`` times the largest
    ``|value|``, so that sums such as ``0.1 + 0.2`` and ``0.3`` are one point). Values of probability 0
    are dropped. Returns ``(support, probabilities)``: 1-D float64 tensors on the device of ``values``, support sorted
    ascending, probabilities summing to 1.
    """
    v, p = _law(values, probs)
    k = checks.positive_int(k, "k")
    keep = p > 0
    v, p = v[keep], p[keep]
    if math.comb(k + v.numel() - 1, v.numel() - 1) > MAX_COMPOSITIONS:
        raise ValueError(f"k = {k} with {v.numel()} values needs more than {MAX_COMPOSITIONS} count vectors")
    c = _compositions(k, v.numel(), v.device)
    cf = c.to(DTYPE)
    logp = math.lgamma(k + 1) - torch.lgamma(cf + 1).sum(1) + cf @ p.log()
    total = cf @ v
    scale = float(v.abs().max()) or 1.0
    s, q = _merge(total, logp.exp(), 64 * torch.finfo(DTYPE).eps * scale * k)
    return s / k, q / q.sum()


def _direction(G: torch.Tensor, D: torch.Tensor):
    checks.matrix(G, "G")
    checks.matrix(D, "D")
    if G.ndim != 2:
        raise ValueError(f"G must be a single matrix, got shape {tuple(G.shape)}")
    if D.shape != G.shape:
        raise ValueError(f"D must have the shape of G {tuple(G.shape)}, got {tuple(D.shape)}")
    if D.dtype != G.dtype or D.device != G.device:
        raise ValueError(f"D ({D.dtype}, {D.device}) must match G ({G.dtype}, {G.device})")


def polar_along(G: torch.Tensor, D: torch.Tensor, x: torch.Tensor, rtol: float | None = None) -> torch.Tensor:
    r""":math:`\mathrm{Ortho}(G + x_j D)` for every scalar in the 1-D tensor ``x``: shape ``(len(x), m, n)``.

    Raises ``ValueError`` naming the offending ``x_j`` if some :math:`G + x_j D` is rank-deficient (its
    smallest singular value at most ``rtol`` times its largest; default ``max(m, n) * eps``), where the
    polar factor is not unique.
    """
    _direction(G, D)
    x = checks.real_tensor(x, "x", device=G.device, dtype=G.dtype)
    if x.ndim != 1:
        raise ValueError(f"x must be a 1-D tensor, got shape {tuple(x.shape)}")
    checks.allocation((x.numel(), *G.shape), G.dtype, "x (one m x n matrix per entry of x)", copies=4)
    tol = checks.open_unit(rtol, "rtol") if rtol is not None else max(G.shape) * torch.finfo(G.dtype).eps
    A = G + x[:, None, None] * D
    sv = torch.linalg.svdvals(A)
    bad = sv[:, -1] <= tol * sv[:, 0]
    if bool(bad.any()):
        j = int(bad.nonzero()[0])
        raise ValueError(f"G + x D is rank-deficient at support point x = {float(x[j])!r} "
                         f"(smallest/largest singular value {float(sv[j, -1] / sv[j, 0]):.3g}); "
                         "the polar factor is not unique there")
    return ortho.polar_factor(A, method="svd")


def expected_polar_along(G: torch.Tensor, D: torch.Tensor, values, probs, k: int, centered: bool = False,
                         chunk: int = 65536) -> torch.Tensor:
    r""":math:`\mathbb E\,\mathrm{Ortho}(G + \bar x_k D)` as an exact finite sum over the law of :math:`\bar x_k`.

    :math:`\sum_j P(\bar x_k = a_j)\,\mathrm{Ortho}(G + a_j D)` with ``(a, P)`` from :func:`mean_law`.
    With ``centered=True`` returns :math:`\mathbb E\,\mathrm{Ortho}(G + \bar x_k D) - \mathrm{Ortho}(G)`
    summed as :math:`\sum_j P_j[\mathrm{Ortho}(G + a_jD) - \mathrm{Ortho}(G)]`, which keeps small biases
    free of the cancellation against :math:`\mathrm{Ortho}(G)`. Raises ``ValueError`` if a support point
    makes :math:`G + a_jD` rank-deficient (see :func:`polar_along`).
    """
    _direction(G, D)
    checks.flag(centered, "centered")
    chunk = checks.positive_int(chunk, "chunk")
    a, P = mean_law(values, probs, k)
    a, P = a.to(G.device), P.to(G.device)
    return _weighted(G, D, a, P, centered, chunk)


def _weighted(G, D, a, P, centered, chunk):
    O = ortho.polar_factor(G, method="svd")
    total = torch.zeros_like(G)
    for part_a, part_P in zip(a.split(chunk), P.split(chunk)):
        total = total + torch.einsum("j,jmn->mn", part_P, polar_along(G, D, part_a) - O)
    return total if centered else O + total


MAX_NODES = 2000
"""Most Gauss–Hermite nodes :func:`hermite_rule` computes (a dense eigenproblem of that size: about a
second; the book's rules have 64)."""


def hermite_rule(nodes: int):
    r"""Gauss–Hermite rule for a standard normal: ``(z, w)`` with :math:`\mathbb E f(Z) \approx \sum_j w_j f(z_j)`.

    Exact for polynomials of degree ``< 2 * nodes``. From ``numpy.polynomial.hermite.hermgauss``
    (:math:`z = \sqrt2\,t`, :math:`w = \omega/\sqrt\pi`); float64 tensors on the CPU.
    """
    nodes = checks.count(nodes, "nodes", minimum=1, maximum=MAX_NODES)
    t, omega = np.polynomial.hermite.hermgauss(nodes)
    return (torch.as_tensor(math.sqrt(2.0) * t, dtype=DTYPE), torch.as_tensor(omega / math.sqrt(math.pi), dtype=DTYPE))


def expected_polar_gaussian_along(G: torch.Tensor, D: torch.Tensor, var: float, k: int, nodes: int = 64,
                                  centered: bool = False) -> torch.Tensor:
    r""":math:`\mathbb E\,\mathrm{Ortho}(G + \bar x D)` with :math:`\bar x \sim N(0, \mathrm{var}/k)`, by Gauss–Hermite quadrature.

    :math:`\sum_j w_j\,\mathrm{Ortho}(G + \sigma z_j D)`, :math:`\sigma = \sqrt{\mathrm{var}/k}`, over the
    ``nodes``-point rule of :func:`hermite_rule`. Exact to rounding when the integrand is smooth on the
    scale of :math:`\sigma` and the nodes are enough (check convergence in ``nodes``); the Gaussian tail
    beyond the outermost node, :math:`\approx \sqrt{4\,\mathrm{nodes}}\,\sigma`, is not seen. Raises
    ``ValueError`` if a node makes :math:`G + \sigma z_j D` rank-deficient. ``centered`` as in
    :func:`expected_polar_along`.
    """
    _direction(G, D)
    var = checks.real(var, "var", low=0, low_open=True)
    k = checks.positive_int(k, "k")
    checks.flag(centered, "centered")
    z, w = hermite_rule(nodes)
    sigma = math.sqrt(float(var) / k)
    return _weighted(G, D, (sigma * z).to(G.device), w.to(G.device), centered, 65536)


MAX_POINTS = 200
"""Most interpolation half-points :func:`polar_taylor_along` takes (a Vandermonde system of 2 * points + 1:
beyond a few dozen its conditioning, not the points, limits the accuracy)."""


def polar_taylor_along(G: torch.Tensor, D: torch.Tensor, order: int = 4, h: float | None = None,
                       points: int = 12) -> torch.Tensor:
    r"""Taylor coefficients :math:`c_0, \dots, c_{\mathrm{order}}` of :math:`f(x) = \mathrm{Ortho}(G + xD) = \sum_j c_j x^j`.

    Shape ``(order + 1, m, n)``. A Cauchy integral on the circle :math:`x = h\,e^{i\theta}` would need
    complex polar factors; instead this interpolates
    Chebyshev-spaced samples on ``[-h, h]`` (``2 * points + 1`` of them, degree ``2 * points``) and
    keeps its first ``order + 1`` coefficients. Accurate to roughly ``eps / h**order`` plus
    :math:`(h/\rho)^{2\,\mathrm{points}}`, where :math:`\rho` is the distance to the nearest complex
    singularity of :math:`f` (of the order of the smallest singular value of ``G`` over ``||D||``); keep
    ``h`` well inside it; the default is ``0.2`` times :math:`s_{\min}(G)/\|D\|_2`.
    :math:`c_1, c_2` equal :math:`L_1(D), Q_2(D)` of :func:`gradnoise.ortho.polar_expansion`.
    """
    _direction(G, D)
    order = checks.positive_int(order, "order")
    points = checks.count(points, "points", minimum=1, maximum=MAX_POINTS)
    if h is None:
        h = 0.2 * float(torch.linalg.svdvals(G)[-1] / torch.linalg.matrix_norm(D, ord=2))
        if not h > 0:
            raise ValueError("G is singular, so the default h (0.2 s_min(G) / ||D||) is 0: pass h")
    h = checks.real(h, "h", low=0, low_open=True)
    deg = 2 * points
    if order > deg:
        raise ValueError(f"order must be at most 2 * points = {deg}, got {order}")
    theta = torch.arange(deg + 1, dtype=G.dtype, device=G.device) * math.pi / deg
    x = h * torch.cos(theta)
    F = polar_along(G, D, x).reshape(deg + 1, -1)
    V = (x[:, None] / h) ** torch.arange(deg + 1, dtype=G.dtype, device=G.device)[None, :]
    coef = torch.linalg.solve(V, F)  # coefficients in powers of x / h
    scale = h ** torch.arange(order + 1, dtype=G.dtype, device=G.device)
    return (coef[: order + 1] / scale[:, None]).reshape(order + 1, *G.shape)
