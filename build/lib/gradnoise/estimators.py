r"""Estimators of the (pre-conditioned) gradient, batched over Monte-Carlo trials.

Shapes: a stack of matrices is ``(..., blocks, m, n)``: the leading dimensions are trials (and any
other batch), ``blocks`` indexes tokens, micro-batches or steps. ``f`` is the map applied to a mean
gradient: :func:`gradnoise.ortho.polar_factor` for Muon-style estimators, the identity for plain means.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from . import checks

Map = Callable[[torch.Tensor], torch.Tensor]


def identity(x: torch.Tensor) -> torch.Tensor:
    """The identity map (plain, un-preconditioned means) on a floating tensor."""
    checks.tensor(x, "x", allow_empty=True, finite=False)
    return x


def _apply(f: Map, x: torch.Tensor, what: str) -> torch.Tensor:
    """``f(x)``, which must be a tensor with ``x``'s leading (batch) dimensions."""
    out = f(x)
    if not isinstance(out, torch.Tensor) or out.shape[: x.ndim - 2] != x.shape[: x.ndim - 2]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"f must map {what} {tuple(x.shape)} to a tensor with the same leading dimensions, got {got}")
    return out


def minibatch_mean(tokens: torch.Tensor) -> torch.Tensor:
    """Mean over the token axis of per-token gradients shaped ``(..., k, m, n)``."""
    checks.matrix(tokens, "tokens", min_ndim=3)
    return tokens.mean(dim=-3)


def microbatch_means(tokens: torch.Tensor, m: int) -> torch.Tensor:
    """Split ``k`` tokens ``(..., k, p, q)`` into ``m`` consecutive micro-batches; their means ``(..., m, p, q)``."""
    checks.matrix(tokens, "tokens", min_ndim=3)
    m = checks.positive_int(m, "m")
    k = tokens.shape[-3]
    if k % m:
        raise ValueError(f"k = {k} tokens cannot be split into m = {m} equal micro-batches")
    return tokens.unflatten(-3, (m, k // m)).mean(dim=-3)


def ema_weights(gamma: float, horizon: int | None = None, tol: float = 1e-12, dtype=torch.float64, device=None) -> torch.Tensor:
    r"""EMA weights :math:`\alpha_j = (1-\gamma)\gamma^j`, newest first, :math:`j = 0..\mathrm{horizon}-1`.

    ``horizon=None`` asks for the stationary EMA: the horizon is the smallest for which the dropped
    tail carries :math:`\gamma^{2\,\mathrm{horizon}} \le` ``tol`` of the variance of the infinite sum.
    Over a finite horizon the weights sum to :math:`1-\gamma^{\mathrm{horizon}}`, not 1.
    """
    g = checks.decay(gamma)
    checks.floating_dtype(dtype)
    device = checks.torch_device(device) if device is not None else None
    if horizon is None:
        horizon = stationary_horizon(g, tol)
    horizon = checks.positive_int(horizon, "horizon")
    checks.allocation((horizon,), dtype, "horizon (ema_weights)", copies=3)
    j = torch.arange(horizon, dtype=dtype, device=device)
    return (1 - g) * g**j


def stationary_horizon(gamma: float, tol: float = 1e-12) -> int:
    r"""Smallest ``t`` with :math:`\gamma^{2t} \le` ``tol`` (at least 1)."""
    g = checks.decay(gamma)
    tol = checks.open_unit(tol, "tol")
    return 1 if g == 0 else max(1, math.ceil(math.log(tol) / (2 * math.log(g))))


def ema(steps: torch.Tensor, gamma: float) -> torch.Tensor:
    r"""EMA of per-step matrices ``(..., t, m, n)`` (oldest first) at the last step: :math:`\sum_j \alpha_j x_{t-1-j}`."""
    checks.matrix(steps, "steps", min_ndim=3)
    t = steps.shape[-3]
    w = ema_weights(gamma, t, dtype=steps.dtype, device=steps.device).flip(0)
    return torch.einsum("t,...tmn->...mn", w, steps)


def ema_by_horizon(steps: torch.Tensor, gamma: float, horizons: int) -> torch.Tensor:
    r"""EMAs over the last ``1, 2, ..., horizons`` steps at once, shape ``(..., horizons, m, n)``.

    Entry ``t-1`` is :math:`\sum_{j<t}\alpha_j x_{T-1-j}` (``steps`` oldest first, ``T`` steps): the
    EMA started from zero ``t`` steps ago. A cumulative sum of the weighted steps, newest first.
    """
    checks.matrix(steps, "steps", min_ndim=3)
    horizons = checks.positive_int(horizons, "horizons")
    if horizons > steps.shape[-3]:
        raise ValueError(f"horizons = {horizons} exceeds the {steps.shape[-3]} steps given")
    w = ema_weights(gamma, horizons, dtype=steps.dtype, device=steps.device)
    newest_first = steps.flip(-3)[..., :horizons, :, :]
    return (w[:, None, None] * newest_first).cumsum(dim=-3)


def ema_noise_factor(gamma: float, horizon: int, rho: float = 0.0) -> float:
    r"""Exact :math:`\mathrm{tr}\,\mathrm{Cov}(E_M)/\mathrm{tr}(\Sigma/k)` of a ``horizon``-step EMA of step noises.

    The step noises have covariance :math:`\Sigma/k` each and lag-``h`` correlation :math:`\rho^h`
    (stationary AR(1); ``rho = 0``: independent steps). Returns :math:`w^\top C w` with the EMA weights
    ``w`` and :math:`C_{ij} = \rho^{|i-j|}`: a finite sum, no limit taken.
    """
    horizon = checks.positive_int(horizon, "horizon")
    checks.allocation((horizon, horizon), torch.float64, "horizon (a horizon x horizon correlation)", copies=3)
    rho = checks.real(rho, "rho", low=-1, high=1, low_open=True, high_open=True)
    w = ema_weights(gamma, horizon)
    idx = torch.arange(horizon)
    lag = (idx.unsqueeze(0) - idx.unsqueeze(1)).abs().to(w.dtype)
    return (w @ (float(rho) ** lag) @ w).item()


def richardson(g_2k: torch.Tensor, g_k: torch.Tensor) -> torch.Tensor:
    r"""Richardson extrapolation :math:`R = 2g_{2k} - g_k`: cancels a :math:`b/k` bias term."""
    checks.matrix(g_2k, "g_2k")
    checks.matrix(g_k, "g_k")
    checks.same_shape(g_2k, g_k, "g_2k", "g_k")
    return 2 * g_2k - g_k


def richardson_estimates(halves: torch.Tensor, f: Map = identity, independent: torch.Tensor | None = None):
    r"""``(g_k, g_2k, R)`` from two ``k``-token means ``halves`` shaped ``(..., 2, m, n)``.

    :math:`g_{2k} = f(\text{mean of both halves})`. Nested (default): :math:`g_k = f(\text{first half})`,
    so the ``k`` tokens of :math:`g_k` are among the ``2k`` of :math:`g_{2k}`. With ``independent``
    (a third ``k``-token mean, shape ``(..., m, n)``), :math:`g_k = f(\text{independent})` instead.
    """
    checks.matrix(halves, "halves", min_ndim=3)
    checks.function(f, "f")
    if halves.shape[-3] != 2:
        raise ValueError(f"halves must hold 2 means along dim -3, got shape {tuple(halves.shape)}")
    if independent is not None:
        checks.matrix(independent, "independent")
        checks.same_shape(independent, halves[..., 0, :, :], "independent", "one half")
        checks.same_kind(halves, independent, "halves", "independent")
    g_2k = _apply(f, halves.mean(dim=-3), "a mean")
    g_k = _apply(f, halves[..., 0, :, :] if independent is None else independent, "a mean")
    return g_k, g_2k, richardson(g_2k, g_k)


def jackknife_bias(micro: torch.Tensor, f: Map = identity) -> torch.Tensor:
    r"""Leave-one-out jackknife estimate of the bias of :math:`f(\text{mean})` from ``m`` micro-batch means.

    ``micro`` is ``(..., m, p, q)``. With :math:`\hat\theta = f(\bar g)` and
    :math:`\hat\theta_{(i)} = f(\text{mean without micro-batch } i)`, returns
    :math:`(m-1)\,(\overline{\hat\theta_{(\cdot)}} - \hat\theta)`.
    """
    checks.matrix(micro, "micro", min_ndim=3)
    checks.function(f, "f")
    m = micro.shape[-3]
    if m < 2:
        raise ValueError(f"micro must hold at least 2 micro-batches along dim -3, got {m}")
    total = micro.sum(dim=-3, keepdim=True)
    leave_one_out = (total - micro) / (m - 1)
    return (m - 1) * (_apply(f, leave_one_out, "micro-batch means").mean(dim=-3) - _apply(f, total.squeeze(-3) / m, "a mean"))
