r"""Monte-Carlo statistics: means, standard errors, and z-score assertions.

A check in this book compares a Monte-Carlo estimate with a prediction through the z-score
:math:`z = (\hat\mu - \mu_{\text{pred}})/\widehat{\mathrm{se}}`. :func:`assert_agrees` asks every
entry to have :math:`|z|` below a bound (5 by default: a false alarm on one entry has probability
:math:`6\times 10^{-7}`); :func:`assert_rejects` asks the same data to be far from a wrong prediction.
"""
from __future__ import annotations

import torch

import math

from . import checks, evidence


def _as64(x, name: str, device=None) -> torch.Tensor:
    """``x`` (a number, a sequence or a real tensor) as a float64 tensor, or one line naming ``name``."""
    if x is None or isinstance(x, (str, bytes, complex)) or (
            isinstance(x, torch.Tensor) and (x.is_complex() or x.dtype == torch.bool)):
        raise ValueError(f"{name} must be real numbers or a real tensor, got {checks._short(x)}")
    try:
        return torch.as_tensor(x, dtype=torch.float64, device=device)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise ValueError(f"{name} must be real numbers or a real tensor, got {checks._short(x)}") from None


def _trials(x: torch.Tensor, name: str, dim: int) -> int:
    checks.matrix(x, name, min_ndim=1)
    dim = checks.dim(dim, x.ndim)
    n = x.shape[dim]
    if n < 2:
        raise ValueError(f"{name} needs at least 2 trials along dim {dim}, got {n}")
    return n


def mean_stderr(x: torch.Tensor, dim: int = 0):
    """Sample mean over ``dim`` and its standard error ``std / sqrt(trials)``."""
    n = _trials(x, "x", dim)
    return x.mean(dim=dim), x.std(dim=dim, correction=1) / n**0.5


def total_variance(x: torch.Tensor, dim: int = 0):
    r"""Unbiased :math:`\mathrm{tr}\,\mathrm{Cov}(x)` over trials along ``dim``, and its standard error.

    Each trial contributes :math:`d_t = \|x_t - \bar x\|^2` summed over all other dimensions; the
    estimate is :math:`\sum_t d_t/(T-1)` and its standard error :math:`\mathrm{sd}(d)\sqrt{T}/(T-1)`.
    """
    n = _trials(x, "x", dim)
    dev = (x - x.mean(dim=dim, keepdim=True)).movedim(dim, 0).reshape(n, -1)
    d = (dev**2).sum(dim=1)
    return d.sum() / (n - 1), d.std(correction=1) * n**0.5 / (n - 1)


def difference(a, se_a, b, se_b):
    """The difference ``a - b`` of two independent estimates and its standard error (added in quadrature)."""
    a, se_a, b, se_b = (_as64(x, n) for x, n in ((a, "a"), (se_a, "se_a"), (b, "b"), (se_b, "se_b")))
    for name, x in (("a", a), ("se_a", se_a), ("b", b), ("se_b", se_b)):
        if x.numel() == 0 or not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} must be non-empty and finite")
    if bool((se_a < 0).any() or (se_b < 0).any()):
        raise ValueError("se_a and se_b must be non-negative")
    try:
        torch.broadcast_shapes(a.shape, se_a.shape, b.shape, se_b.shape)
    except RuntimeError:
        raise ValueError("a, se_a, b and se_b must broadcast together") from None
    return a - b, torch.sqrt(se_a**2 + se_b**2)


def loglog_slope(x, y) -> float:
    """Least-squares slope of ``log10 y`` against ``log10 x`` (positive 1-D tensors of equal length)."""
    x, y = _as64(x, "x"), _as64(y, "y")
    if x.ndim != 1 or x.shape != y.shape or x.numel() < 2:
        raise ValueError(f"x and y must be 1-D of equal length >= 2, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not bool(torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("x and y must be finite")
    if not bool((x > 0).all() and (y > 0).all()):
        raise ValueError("x and y must be positive")
    if bool((x == x[0]).all()):
        raise ValueError("x must take at least two distinct values")
    lx, ly = x.log10(), y.log10()
    return (((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum()).item()


def z_scores(estimate, stderr, predicted) -> torch.Tensor:
    """Element-wise ``(estimate - predicted) / stderr`` as a float64 tensor."""
    return _z(estimate, stderr, predicted, "predicted")


def _z(estimate, stderr, predicted, pname: str) -> torch.Tensor:
    est = _as64(estimate, "estimate")
    se = _as64(stderr, "stderr", est.device)
    pred = _as64(predicted, pname, est.device)
    try:
        shape = torch.broadcast_shapes(est.shape, se.shape, pred.shape)
    except RuntimeError:
        shape = None
    if est.numel() == 0:
        raise ValueError("estimate is empty")
    if shape != est.shape:
        raise ValueError(f"stderr {tuple(se.shape)} and {pname} {tuple(pred.shape)} must broadcast to estimate {tuple(est.shape)}")
    if not bool((se > 0).all()) or not bool(torch.isfinite(se).all()):
        raise ValueError("stderr must be positive and finite everywhere")
    if not bool(torch.isfinite(est).all() and torch.isfinite(pred).all()):
        raise ValueError(f"estimate and {pname} must be finite")
    return (est - pred) / se


def _bound(z, name: str = "z") -> float:
    """A bound must be a finite positive number (nan, inf, 0 or a negative bound make a check that cannot fail)."""
    return checks.positive_real(z, name)


def _worst(z: torch.Tensor):
    i = int(z.abs().argmax())
    return float(z.flatten()[i]), i


def resolution(stderr, predicted, z: float = 5.0) -> float:
    r"""The smallest relative change of ``predicted`` that a check at bound ``z`` would detect.

    :math:`z/\max_i(|\mu_i|/\mathrm{se}_i)`: scaling the whole prediction by :math:`1 \pm r` moves entry
    :math:`i` by :math:`r|\mu_i|`, which crosses the bound first where :math:`|\mu_i|/\mathrm{se}_i` is
    largest. ``inf`` when the prediction is zero (an absolute check: its standard error says how sharp).
    """
    bound = _bound(z)
    se = _as64(stderr, "stderr")
    pred = _as64(predicted, "predicted", se.device)
    if se.numel() == 0 or not bool(torch.isfinite(se).all()) or not bool((se > 0).all()):
        raise ValueError("stderr must be positive and finite everywhere (a standard error of 0 has no resolution)")
    if pred.numel() == 0 or not bool(torch.isfinite(pred).all()):
        raise ValueError("predicted must be non-empty and finite")
    try:
        torch.broadcast_shapes(se.shape, pred.shape)
    except RuntimeError:
        raise ValueError(f"stderr {tuple(se.shape)} and predicted {tuple(pred.shape)} must broadcast") from None
    ratio = (pred.abs() / se).max().item()
    # a prediction below a millionth of a standard error is zero as far as the check can tell: an
    # absolute check, whose sharpness is its standard error, not a relative resolution
    return bound / ratio if ratio > 1e-6 else math.inf


def assert_agrees(estimate, stderr, predicted, z: float = 5.0, what: str = "estimate",
                  claim: str | None = None) -> float:
    """Assert that every entry of ``estimate`` is within ``z`` standard errors of ``predicted``.

    Returns the largest ``|z|``; raises ``AssertionError`` naming the worst entry otherwise. ``claim``
    (an ID such as ``"000-C7"``) files the check under that claim on the book's evidence page.
    """
    bound = _bound(z)
    zs = z_scores(estimate, stderr, predicted)
    worst, i = _worst(zs)
    if abs(worst) >= bound:
        raise AssertionError(
            f"{what} disagrees with the prediction: z = {worst:+.2f} at entry {i} "
            f"(bound |z| < {bound}; {zs.numel()} entries)"
        )
    se = torch.as_tensor(stderr, dtype=torch.float64, device=zs.device).expand_as(zs)
    pred = torch.as_tensor(predicted, dtype=torch.float64, device=zs.device).expand_as(zs)
    evidence.record("agrees", what, zs.numel(), abs(worst), bound, resolution(se, pred, bound), claim)
    return abs(worst)


def assert_rejects(estimate, stderr, wrong, z: float = 10.0, what: str = "estimate",
                   claim: str | None = None) -> float:
    """Assert that the data reject ``wrong``: some entry is at least ``z`` standard errors from it.

    Returns the largest ``|z|`` against ``wrong``; raises ``AssertionError`` if the check lacks power.
    """
    bound = _bound(z)
    zs = _z(estimate, stderr, wrong, "wrong")
    worst, _ = _worst(zs)
    if abs(worst) < bound:
        raise AssertionError(
            f"{what} does not reject the alternative: largest |z| = {abs(worst):.2f} < {bound} "
            "(the check has too little power to tell them apart)"
        )
    evidence.record("rejects", what, zs.numel(), abs(worst), bound, None, claim)
    return abs(worst)


def _exact_pair(actual, expected, names):
    a = _as64(actual, names[0])
    e = _as64(expected, names[1], a.device)
    if a.numel() == 0 or e.numel() == 0:
        raise ValueError(f"{names[0]} and {names[1]} must be non-empty")
    try:
        shape = torch.broadcast_shapes(a.shape, e.shape)
    except RuntimeError:
        shape = None
    if shape != a.shape:
        raise ValueError(f"{names[1]} {tuple(e.shape)} must broadcast to {names[0]} {tuple(a.shape)}")
    if not bool(torch.isfinite(a).all() and torch.isfinite(e).all()):
        raise ValueError(f"{names[0]} and {names[1]} must be finite")
    return a, e.expand_as(a)


def _relative_error(a: torch.Tensor, e: torch.Tensor) -> float:
    scale = max(e.abs().max().item(), a.abs().max().item())
    diff = (a - e).abs().max().item()
    return diff / scale if scale > 0 else 0.0


def assert_close(actual, expected, rtol: float = 1e-10, what: str = "value", claim: str | None = None,
                 atol: float = 0.0) -> float:
    r"""An exact check (symbolic, enumerated or deterministic): ``actual`` equals ``expected`` to rounding.

    Passes when :math:`\max|a - e| \le` ``rtol`` :math:`\cdot\max(|a|, |e|)` or, if ``atol`` is given,
    :math:`\max|a - e| \le` ``atol`` (for an expected value of zero, which has no relative scale).
    Returns the relative error. Listed as *exact* on the evidence page; pair it with
    :func:`assert_differs` on the wrong alternative.
    """
    tol = _bound(rtol, "rtol")
    if not tol < 1:
        raise ValueError(f"rtol must be below 1, got {rtol!r}: a relative error of 1 or more lets any value "
                         "(of either sign) pass, so the check could not fail")
    atol = checks.positive_real(atol, "atol", allow_zero=True)
    a, e = _exact_pair(actual, expected, ("actual", "expected"))
    err = _relative_error(a, e)
    if err > tol and not (atol > 0 and (a - e).abs().max().item() <= atol):
        raise AssertionError(f"{what} differs from the exact value: relative error {err:.3g} > rtol = {tol:.3g}"
                             + (f" and absolute error {(a - e).abs().max().item():.3g} > atol = {atol:.3g}" if atol else ""))
    evidence.record("exact", what, a.numel(), err, tol, None, claim)
    return err


def assert_differs(actual, wrong, rtol: float = 1e-6, what: str = "value", claim: str | None = None,
                   atol: float | None = None) -> float:
    r"""An exact rejection: ``actual`` is farther than ``rtol`` (relative) from the ``wrong`` value.

    The relative distance :math:`\max|a - w|/\max(|a|, |w|)` must be at least ``rtol`` (default
    :math:`10^{-6}`, orders of magnitude above rounding); returns it. A ``wrong`` value that is
    identically zero has no relative scale — every nonzero ``actual``, rounding noise included, would be
    at relative distance 1 — so it needs ``atol``: the check is then :math:`\max|a| \ge` ``atol``.
    """
    tol = _bound(rtol, "rtol")
    if not tol < 2:
        raise ValueError(f"rtol must be below 2, got {rtol!r}: two values are at most a relative distance 2 apart, "
                         "so the check could never pass")
    a, w = _exact_pair(actual, wrong, ("actual", "wrong"))
    if atol is not None:
        atol = checks.positive_real(atol, "atol")
    if not bool((w != 0).any()):
        if atol is None:
            raise ValueError("wrong is identically zero, so a relative distance cannot fail; pass atol, "
                             "the smallest absolute distance from zero that counts as different")
        dist = (a - w).abs().max().item()
        if dist < atol:
            raise AssertionError(f"{what} is not told apart from zero: max |actual| = {dist:.3g} < atol = {atol:.3g}")
        evidence.record("differs", what, a.numel(), dist, atol, None, claim)
        return dist
    dist = _relative_error(a, w)
    if dist < tol:
        raise AssertionError(f"{what} does not tell the wrong value apart: relative distance {dist:.3g} < {tol:.3g}")
    evidence.record("differs", what, a.numel(), dist, tol, None, claim)
    return dist
