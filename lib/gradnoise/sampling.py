r"""The model the chapters measure: a fixed matrix ``G`` and per-token gradient noise.

A per-token gradient is :math:`g_i = G + \delta_i` with i.i.d. :math:`\delta_i`, mean zero and
independent entries of variance ``var`` (covariance ``var * I`` on the ``m*n`` entries). Two laws:
``"gaussian"`` and ``"rademacher"`` (entries :math:`\pm\sqrt{\mathrm{var}}`, to show a result does not
hinge on Gaussianity). Every sampler takes a ``torch.Generator`` and returns tensors shaped
``(trials, blocks, m, n)`` on the generator's device.
"""
from __future__ import annotations

import math

import torch

from . import checks
from .device import DTYPE

LAWS = ("gaussian", "rademacher")


def _shape(shape, name: str, empty_ok: bool = False) -> tuple:
    """A shape: an integer or a sequence of positive integers."""
    if isinstance(shape, (str, bytes)) or shape is None:
        raise ValueError(f"{name} must be a sequence of positive integers, got {shape!r}")
    if not hasattr(shape, "__iter__"):
        shape = (shape,)
    out = tuple(checks.count(d, name) for d in shape)
    if not out and not empty_ok:
        raise ValueError(f"{name} must have at least one dimension")
    return out


def random_orthogonal(n: int, generator: torch.Generator, dtype: torch.dtype = DTYPE, batch: tuple = ()) -> torch.Tensor:
    """Haar-distributed ``n x n`` orthogonal matrices, shape ``(*batch, n, n)`` (QR of Gaussians, signs fixed)."""
    n = checks.positive_int(n, "n")
    checks.generator(generator)
    checks.floating_dtype(dtype)
    checks.exact_dtype(torch.empty(0, dtype=dtype), "dtype")
    batch = _shape(batch, "batch", empty_ok=True)
    checks.allocation((*batch, n, n), dtype, "n and batch (random_orthogonal)", copies=4)
    Z = torch.randn(*batch, n, n, generator=generator, dtype=dtype, device=generator.device)
    Q, R = torch.linalg.qr(Z)
    return Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)


def with_singular_values(s, m: int, n: int, generator: torch.Generator, dtype: torch.dtype = DTYPE) -> torch.Tensor:
    r"""A random ``m x n`` matrix :math:`U\,\mathrm{diag}(s)\,V^\top` with Haar-random ``U``, ``V``.

    ``s`` is a sequence of ``min(m, n)`` non-negative singular values (zeros make it rank-deficient).
    """
    m = checks.positive_int(m, "m")
    n = checks.positive_int(n, "n")
    checks.generator(generator)
    checks.floating_dtype(dtype)
    s = checks.real_tensor(s, "s", low=0, dtype=dtype, device=generator.device)
    if s.ndim != 1 or s.numel() != min(m, n):
        raise ValueError(f"s must hold min(m, n) = {min(m, n)} singular values, got shape {tuple(s.shape)}")
    if bool((s < 0).any()) or not bool(torch.isfinite(s).all()):
        raise ValueError("s must be finite and non-negative")
    U = random_orthogonal(m, generator, dtype)[:, : s.numel()]
    V = random_orthogonal(n, generator, dtype)[:, : s.numel()]
    return (U * s) @ V.T


def token_noise(shape, var: float, generator: torch.Generator, law: str = "gaussian", dtype: torch.dtype = DTYPE) -> torch.Tensor:
    """I.i.d. per-token noise of the given shape: mean 0, entry variance ``var``."""
    var = checks.positive_real(var, "var")
    checks.generator(generator)
    checks.floating_dtype(dtype)
    shape = _shape(shape, "shape")
    law = checks.choice(law, "law", LAWS)
    # the Gaussian draw and its scaled copy; Rademacher's integer draw (int64) and its float copies
    checks.allocation(shape, dtype, "shape (token_noise)", copies=2 if law == "gaussian" else 2 + 8 / torch.empty((), dtype=dtype).element_size())
    if law == "gaussian":
        z = torch.randn(*shape, generator=generator, dtype=dtype, device=generator.device)
    else:
        z = torch.randint(0, 2, tuple(shape), generator=generator, device=generator.device).to(dtype) * 2 - 1
    return z * math.sqrt(var)


def token_gradients(G: torch.Tensor, var: float, generator: torch.Generator, trials: int, tokens: int, law: str = "gaussian") -> torch.Tensor:
    """Per-token gradients ``G + delta_i``, shape ``(trials, tokens, m, n)``."""
    checks.matrix(G, "G")
    trials = checks.positive_int(trials, "trials")
    tokens = checks.positive_int(tokens, "tokens")
    checks.allocation((trials, tokens, *G.shape), G.dtype, "trials x tokens x G (token_gradients)", copies=3)
    return G + token_noise((trials, tokens, *G.shape[-2:]), var, generator, law, G.dtype)


def block_means(G: torch.Tensor, var: float, generator: torch.Generator, trials: int, blocks: int, tokens: int, law: str = "gaussian") -> torch.Tensor:
    r"""Means of ``blocks`` disjoint micro-batches of ``tokens`` per-token gradients each.

    Shape ``(trials, blocks, m, n)``. For Gaussian tokens the mean of ``tokens`` draws is sampled
    directly from its exact law :math:`N(G, \mathrm{var}/\mathrm{tokens})`, so large batches cost
    nothing extra; for other laws the tokens are drawn and averaged.
    """
    checks.matrix(G, "G")
    var = checks.positive_real(var, "var")
    trials = checks.positive_int(trials, "trials")
    blocks = checks.positive_int(blocks, "blocks")
    tokens = checks.positive_int(tokens, "tokens")
    law = checks.choice(law, "law", LAWS)
    if law != "gaussian":
        checks.allocation((trials, blocks, tokens, *G.shape), G.dtype, "trials x blocks x tokens x G (the tokens)", copies=3)
    shape = (trials, blocks, *G.shape[-2:])
    checks.allocation((trials, blocks, *G.shape), G.dtype, "trials x blocks x G (block_means)", copies=3)
    if law == "gaussian":
        return G + token_noise(shape, var / tokens, generator, law, G.dtype)
    noise = token_noise((trials, blocks, tokens, *G.shape[-2:]), var, generator, law, G.dtype)
    return G + noise.mean(dim=2)


CHUNK_TRIALS = 1 << 17
"""Trials :func:`in_chunks` draws at a time by default (131 072). Every default size of the book is below
it, so at ``GRADNOISE_SCALE=1`` a chunked draw is the same single call, with the same numbers."""


def in_chunks(draw, trials: int, chunk: int | None = None):
    r"""``draw(n)`` for ``trials`` trials in all, at most ``chunk`` at a time, joined along dim 0.

    ``draw(n)`` returns a tensor, or a dict of tensors, whose leading dimension is ``n`` (one entry per
    trial). Only one chunk's intermediates (the micro-batch means, the leave-one-out factors ...) exist at a
    time, and the results are written into tensors allocated once for all trials, so a run made 100 times
    larger through ``GRADNOISE_SCALE`` holds what ``draw`` returns and one chunk, not 100 times the
    workspace. With ``trials <= chunk`` it is exactly ``draw(trials)``; in general the draws depend on the
    generator state and on ``chunk``.
    """
    checks.function(draw, "draw")
    trials = checks.positive_int(trials, "trials")
    chunk = CHUNK_TRIALS if chunk is None else checks.positive_int(chunk, "chunk")
    if trials <= chunk:
        return draw(trials)
    out, done = None, 0
    while done < trials:
        n = min(chunk, trials - done)
        part = draw(n)
        parts = part if isinstance(part, dict) else {None: part}
        for key, x in parts.items():
            if not isinstance(x, torch.Tensor) or x.ndim == 0 or x.shape[0] != n:
                raise ValueError(f"draw({n}) must return tensors whose leading dimension is {n}, "
                                 f"got {type(x).__name__} {tuple(getattr(x, 'shape', ()))} for {key!r}")
        if out is None:
            for x in parts.values():
                checks.allocation((trials, *x.shape[1:]), x.dtype, "trials x one result (in_chunks)")
            out = {key: torch.empty((trials, *x.shape[1:]), dtype=x.dtype, device=x.device) for key, x in parts.items()}
        elif parts.keys() != out.keys() or any(x.shape[1:] != out[key].shape[1:] for key, x in parts.items()):
            raise ValueError("draw must return the same keys and trailing shapes for every chunk")
        for key, x in parts.items():
            out[key][done:done + n] = x
        done += n
    return out if isinstance(part, dict) else out[None]


def ar1_steps(innovations: torch.Tensor, rho: float, dim: int = -3) -> torch.Tensor:
    r"""Stationary AR(1) sequence along ``dim`` from i.i.d. innovations of the same variance.

    :math:`x_0 = z_0`, :math:`x_t = \rho x_{t-1} + \sqrt{1-\rho^2}\,z_t`, so every :math:`x_t` has the
    variance of :math:`z` and :math:`\mathrm{Cov}(x_t, x_{t-h}) = \rho^{h}\,\mathrm{Var}(z)`. Computed as
    one matrix product with the lower-triangular kernel (no loop over steps).
    """
    checks.matrix(innovations, "innovations", min_ndim=1)
    dim = checks.dim(dim, innovations.ndim)
    rho = checks.real(rho, "rho", low=-1, high=1, low_open=True, high_open=True)
    z = innovations.movedim(dim, -1)
    t = z.shape[-1]
    checks.allocation((t, t), z.dtype, "innovations (a t x t kernel over its steps)", copies=4)
    checks.allocation(z.shape, z.dtype, "innovations", copies=2)
    idx = torch.arange(t, device=z.device)
    lag = (idx.unsqueeze(1) - idx.unsqueeze(0)).to(z.dtype)
    K = torch.where(lag >= 0, float(rho) ** lag.clamp_min(0), torch.zeros_like(lag))
    K[:, 1:] *= math.sqrt(1 - float(rho) ** 2)
    return (z @ K.T).movedim(-1, dim)


def covariance_factor(cov: torch.Tensor) -> torch.Tensor:
    r"""A factor :math:`L` with :math:`LL^\top = \Sigma` of a symmetric PSD ``d x d`` covariance (by ``eigh``).

    Works for singular :math:`\Sigma` (zero eigenvalues give zero columns), unlike a Cholesky factor.
    """
    checks.matrix(cov, "cov")
    checks.exact_dtype(cov, "cov")
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov must be a square matrix, got shape {tuple(cov.shape)}")
    if not torch.allclose(cov, cov.mT, rtol=1e-10, atol=1e-12 * float(cov.abs().max())):
        raise ValueError("cov must be symmetric")
    w, Q = torch.linalg.eigh(cov)
    if float(w[0]) < -1e-10 * float(w[-1].abs()):
        raise ValueError(f"cov must be positive semi-definite; smallest eigenvalue {float(w[0]):.3g}")
    return Q * w.clamp_min(0).sqrt()


def correlated_means(G: torch.Tensor, factor: torch.Tensor, generator: torch.Generator, trials: int,
                     blocks: int, tokens: int) -> torch.Tensor:
    r"""Means of ``blocks`` micro-batches of ``tokens`` Gaussian per-token gradients with a general covariance.

    A token is :math:`G + \delta` with :math:`\mathrm{vec}(\delta) \sim N(0, LL^\top)` on the row-major
    entries, ``factor`` :math:`= L` (``mn x mn``; see :func:`covariance_factor`). The mean of ``tokens`` of
    them is drawn from its exact law :math:`N(G, LL^\top/\mathrm{tokens})`. Shape ``(trials, blocks, m, n)``.
    """
    checks.matrix(G, "G")
    checks.matrix(factor, "factor")
    checks.generator(generator)
    checks.same_kind(G, factor, "G", "factor")
    d = G.shape[-2] * G.shape[-1]
    if factor.shape != (d, d):
        raise ValueError(f"factor must be ({d}, {d}) for G of shape {tuple(G.shape[-2:])}, got {tuple(factor.shape)}")
    trials = checks.positive_int(trials, "trials")
    blocks = checks.positive_int(blocks, "blocks")
    tokens = checks.positive_int(tokens, "tokens")
    checks.allocation((trials, blocks, *G.shape[:-2], d), G.dtype, "trials x blocks x G (correlated_means)", copies=3)
    z = torch.randn(trials, blocks, d, generator=generator, dtype=G.dtype, device=generator.device)
    return G + (z @ factor.mT / math.sqrt(tokens)).reshape(trials, blocks, *G.shape[-2:])
