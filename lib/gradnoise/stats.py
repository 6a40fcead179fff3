r"""Monte-Carlo statistics: means, standard errors, and z-score assertions.

A check in this book compares a Monte-Carlo estimate with a prediction through the z-score
:math:`z = (\hat\mu - \mu_{\text{pred}})/\widehat{\mathrm{se}}`. :func:`assert_agrees` asks every
entry to have :math:`|z|` below a bound (5 by default: a false alarm on one entry has probability
:math:`6\times 10^{-7}`); :func:`assert_rejects` asks the same data to be far from a wrong prediction.
"""
from __future__ import annotations

import torch

from . import checks


def _trials(x: torch.Tensor, name: str, dim: int) -> int:
    checks.matrix(x, name, min_ndim=1)
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
    a, se_a, b, se_b = (torch.as_tensor(x, dtype=torch.float64) for x in (a, se_a, b, se_b))
    return a - b, torch.sqrt(se_a**2 + se_b**2)


def loglog_slope(x, y) -> float:
    """Least-squares slope of ``log10 y`` against ``log10 x`` (positive 1-D tensors of equal length)."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.ndim != 1 or x.shape != y.shape or x.numel() < 2:
        raise ValueError(f"x and y must be 1-D of equal length >= 2, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not bool((x > 0).all() and (y > 0).all()):
        raise ValueError("x and y must be positive")
    lx, ly = x.log10(), y.log10()
    return (((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum()).item()


def z_scores(estimate, stderr, predicted) -> torch.Tensor:
    """Element-wise ``(estimate - predicted) / stderr`` as a float64 tensor."""
    est = torch.as_tensor(estimate, dtype=torch.float64)
    se = torch.as_tensor(stderr, dtype=torch.float64, device=est.device)
    pred = torch.as_tensor(predicted, dtype=torch.float64, device=est.device)
    try:
        shape = torch.broadcast_shapes(est.shape, se.shape, pred.shape)
    except RuntimeError:
        shape = None
    if shape != est.shape:
        raise ValueError(f"stderr {tuple(se.shape)} and predicted {tuple(pred.shape)} must broadcast to estimate {tuple(est.shape)}")
    if not bool((se > 0).all()):
        raise ValueError("stderr must be positive everywhere")
    if not bool(torch.isfinite(est).all() and torch.isfinite(pred).all()):
        raise ValueError("estimate and predicted must be finite")
    return (est - pred) / se


def _worst(z: torch.Tensor):
    i = int(z.abs().argmax())
    return float(z.flatten()[i]), i


def assert_agrees(estimate, stderr, predicted, z: float = 5.0, what: str = "estimate") -> float:
    """Assert that every entry of ``estimate`` is within ``z`` standard errors of ``predicted``.

    Returns the largest ``|z|``; raises ``AssertionError`` naming the worst entry otherwise.
    """
    zs = z_scores(estimate, stderr, predicted)
    worst, i = _worst(zs)
    if abs(worst) >= z:
        raise AssertionError(
            f"{what} disagrees with the prediction: z = {worst:+.2f} at entry {i} "
            f"(bound |z| < {z}; {zs.numel()} entries)"
        )
    return abs(worst)


def assert_rejects(estimate, stderr, wrong, z: float = 10.0, what: str = "estimate") -> float:
    """Assert that the data reject ``wrong``: some entry is at least ``z`` standard errors from it.

    Returns the largest ``|z|`` against ``wrong``; raises ``AssertionError`` if the check lacks power.
    """
    zs = z_scores(estimate, stderr, wrong)
    worst, _ = _worst(zs)
    if abs(worst) < z:
        raise AssertionError(
            f"{what} does not reject the alternative: largest |z| = {abs(worst):.2f} < {z} "
            "(the check has too little power to tell them apart)"
        )
    return abs(worst)
