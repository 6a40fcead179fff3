r"""Minibatches of a finite data set: every batch enumerated, or many batches sampled at once.

A data set is a tensor of per-example gradients ``g`` shaped ``(..., n, d)``. A *scheme* says how
``m`` batches of ``B`` examples are drawn from it at one :math:`\theta`:

- ``"with"``: each batch is ``B`` indices drawn independently and uniformly (with replacement), and the
  ``m`` batches are independent;
- ``"without"``: each batch is a uniformly random ``B``-subset (without replacement), the ``m`` batches
  independent of each other;
- ``"epoch"``: one uniformly random permutation of the data set is cut into ``m`` consecutive, disjoint
  batches (``m B <= n``), as in one epoch of shuffled training.

:func:`batch_indices` lists every equally likely outcome of a scheme, so that expectations over batches
are exact averages (to rounding); :func:`sample_indices` draws many outcomes at once for Monte Carlo.
:func:`batch_means` turns either into minibatch means :math:`g_{\mathcal B_j} = \frac1B\sum_{i\in\mathcal B_j} g_i`.
"""
from __future__ import annotations

import itertools
import math

import torch

from . import checks

SCHEMES = ("with", "without", "epoch")


def _scheme(scheme: str) -> str:
    return checks.choice(scheme, "scheme", SCHEMES)


MAX_LOG_SIZE = 10_000.0
"""Largest natural logarithm of an enumeration size that :func:`enumeration_size` forms as an integer."""


def _sizes(n: int, batch: int, batches: int, scheme: str) -> None:
    checks.positive_int(n, "n")
    checks.positive_int(batch, "batch")
    checks.positive_int(batches, "batches")
    if scheme == "without" and batch > n:
        raise ValueError(f"batch = {batch} exceeds n = {n} (sampling without replacement)")
    if scheme == "epoch" and batch * batches > n:
        raise ValueError(f"batch * batches = {batch * batches} exceeds n = {n} (disjoint batches of one epoch)")


def enumeration_size(n: int, batch: int, batches: int = 1, scheme: str = "with") -> int:
    r"""How many equally likely outcomes :func:`batch_indices` lists.

    ``"with"``: :math:`n^{mB}`; ``"without"``: :math:`\binom nB^m`; ``"epoch"``:
    :math:`n!/\big((B!)^m (n-mB)!\big)` (ordered sequences of disjoint unordered batches).
    """
    scheme = _scheme(scheme)
    _sizes(n, batch, batches, scheme)
    if log_enumeration_size(n, batch, batches, scheme) > MAX_LOG_SIZE:
        raise ValueError(f"n = {n}, batch = {batch}, batches = {batches}: about "
                         f"e^{log_enumeration_size(n, batch, batches, scheme):.3g} outcomes, too many to count "
                         "exactly (log_enumeration_size gives the logarithm)")
    if scheme == "with":
        return n ** (batch * batches)
    if scheme == "without":
        return math.comb(n, batch) ** batches
    size = 1                       # n! / ((B!)^m (n - mB)!) as a product of binomials (no huge factorial)
    for j in range(batches):
        size *= math.comb(n - j * batch, batch)
    return size


def log_enumeration_size(n: int, batch: int, batches: int = 1, scheme: str = "with") -> float:
    """The natural logarithm of :func:`enumeration_size`, from log-gamma: no huge integer is formed."""
    scheme = _scheme(scheme)
    _sizes(n, batch, batches, scheme)
    if scheme == "with":
        return batch * batches * math.log(n)
    if scheme == "without":
        return batches * (math.lgamma(n + 1) - math.lgamma(batch + 1) - math.lgamma(n - batch + 1))
    return math.lgamma(n + 1) - batches * math.lgamma(batch + 1) - math.lgamma(n - batch * batches + 1)


MAX_ENTRIES = 20_000_000
"""Most indices (outcomes x batches x batch) :func:`batch_indices` enumerates (it builds them in Python)."""


def batch_indices(n: int, batch: int, batches: int = 1, scheme: str = "with", limit: int = 2_000_000,
                  device=None) -> torch.Tensor:
    r"""Every equally likely outcome of ``scheme``: a long tensor ``(outcomes, batches, batch)``.

    Each row is one outcome, a list of ``batches`` batches of ``batch`` indices into ``range(n)``; the
    uniform average over rows of any function of the batches is its exact expectation under the scheme.
    With replacement the rows are all :math:`n^{mB}` ordered index tuples; without replacement all
    subsets (order within a batch does not change its mean); for an epoch all ordered sequences of
    disjoint subsets. Raises ``ValueError`` when there are more than ``limit`` outcomes.
    """
    scheme = _scheme(scheme)
    limit = checks.positive_int(limit, "limit")
    device = checks.torch_device(device) if device is not None else None
    if log_enumeration_size(n, batch, batches, scheme) > math.log(limit) + 1e-9:
        raise ValueError(f"n, batch and batches: about e^{log_enumeration_size(n, batch, batches, scheme):.1f} "
                         f"outcomes to enumerate exceed limit = {limit}")
    size = enumeration_size(n, batch, batches, scheme)
    if size > limit:
        raise ValueError(f"n, batch and batches: {size} outcomes to enumerate exceed limit = {limit}")
    if size * batches * batch > MAX_ENTRIES:
        raise ValueError(f"batch: {size} outcomes of {batches} x {batch} indices are {size * batches * batch} "
                         f"entries, more than the {MAX_ENTRIES} this Python-level enumeration builds")
    if scheme == "with":
        rows = list(itertools.product(range(n), repeat=batch * batches))
    elif scheme == "without":
        subsets = list(itertools.combinations(range(n), batch))
        rows = [sum(c, ()) for c in itertools.product(subsets, repeat=batches)]
    else:
        def disjoint(left, k):
            if k == 0:
                yield ()
                return
            for c in itertools.combinations(left, batch):
                taken = set(c)
                rest = tuple(i for i in left if i not in taken)
                for tail in disjoint(rest, k - 1):
                    yield c + tail
        rows = list(disjoint(tuple(range(n)), batches))
    out = torch.tensor(rows, dtype=torch.long, device=device)
    return out.reshape(size, batches, batch)


def _shape(shape) -> tuple:
    """A shape: an integer or a sequence of positive integers."""
    if isinstance(shape, (str, bytes)) or shape is None:
        raise ValueError(f"shape must be a sequence of positive integers, got {shape!r}")
    if not hasattr(shape, "__iter__"):
        shape = (shape,)
    return tuple(checks.count(d, "shape") for d in shape)


def draw_indices(n: int, batch: int, shape, gen: torch.Generator, replacement: bool = True) -> torch.Tensor:
    """Indices of independent minibatches ``(*shape, batch)`` drawn uniformly from ``range(n)``, with or
    without replacement within each batch, on ``gen``'s device (without replacement: the ``batch``
    smallest of ``n`` uniform keys, a uniformly random subset in random order)."""
    n = checks.positive_int(n, "n")
    batch = checks.positive_int(batch, "batch")
    checks.generator(gen, "gen")
    if not replacement and batch > n:
        raise ValueError(f"batch = {batch} exceeds n = {n} without replacement")
    shape = _shape(shape)
    checks.flag(replacement, "replacement")
    checks.allocation((*shape, n if not replacement else batch), torch.float64,
                      "shape x batch" if replacement else "shape x n (one key per example)", copies=2)
    if replacement:
        return torch.randint(n, (*shape, batch), generator=gen, device=gen.device)
    keys = torch.rand((*shape, n), generator=gen, device=gen.device)
    return keys.topk(batch, dim=-1, largest=False).indices


def sample_indices(n: int, batch: int, batches: int, trials: int, gen: torch.Generator,
                   scheme: str = "with") -> torch.Tensor:
    """``trials`` independent outcomes of ``scheme``, drawn at once: a long tensor ``(trials, batches, batch)``
    on the generator's device."""
    scheme = _scheme(scheme)
    _sizes(n, batch, batches, scheme)
    trials = checks.positive_int(trials, "trials")
    checks.generator(gen, "gen")
    checks.allocation((trials, batches, batch), torch.long, "trials x batches x batch (the indices)", copies=2)
    if scheme in ("with", "without"):
        return draw_indices(n, batch, (trials, batches), gen, replacement=scheme == "with")
    checks.allocation((trials, n), torch.float64, "trials x n (one permutation per trial)", copies=3)
    keys = torch.rand(trials, n, generator=gen, device=gen.device)
    return keys.argsort(dim=-1)[:, : batch * batches].reshape(trials, batches, batch)


def batch_means(g: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    r"""Minibatch means :math:`g_{\mathcal B} = \frac1B\sum_{i\in\mathcal B} g_i`.

    ``g`` is ``(n, d)`` and ``indices`` ``(..., B)`` gives ``(..., d)``; or ``g`` is ``(T, n, d)`` (one
    data set per trial) and ``indices`` ``(T, ..., B)`` gives ``(T, ..., d)``.
    """
    checks.matrix(g, "g", min_ndim=2)
    checks.long_tensor(indices, "indices")
    if indices.device != g.device:
        raise ValueError(f"indices ({indices.device}) must be on g's device ({g.device})")
    n = g.shape[-2]
    if indices.shape[-1] == 0:
        raise ValueError(f"indices has batches of 0 examples (shape {tuple(indices.shape)}): a mean of nothing")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n):
        raise ValueError(f"indices must lie in [0, {n})")
    if g.ndim == 2:
        B, d = indices.shape[-1], g.shape[-1]
        checks.allocation((*indices.shape[:-1], d), g.dtype, "indices (one mean per batch)")
        if B * d <= n:                                   # few, short rows: gather them
            checks.allocation((*indices.shape, d), g.dtype, "indices x d (the gathered rows)")
            return g[indices].mean(dim=-2)
        checks.allocation((*indices.shape[:-1], n), g.dtype, "indices x n (the counts)")
        # many or long rows (real per-example gradients: d in the thousands): count how often each
        # example is drawn and multiply, instead of materialising (..., B, d)
        counts = torch.zeros(*indices.shape[:-1], n, dtype=g.dtype, device=g.device)
        counts.scatter_add_(-1, indices, torch.ones(indices.shape, dtype=g.dtype, device=g.device))
        return counts @ g / B
    if g.ndim == 3 and indices.shape[0] == g.shape[0]:
        checks.allocation((*indices.shape, g.shape[-1]), g.dtype, "indices x d (the gathered rows)")
        flat = indices.reshape(g.shape[0], -1)
        picked = torch.gather(g, 1, flat.unsqueeze(-1).expand(-1, -1, g.shape[-1]))
        return picked.reshape(*indices.shape, g.shape[-1]).mean(dim=-2)
    raise ValueError(f"g must be (n, d), or (T, n, d) with indices (T, ..., B); got {tuple(g.shape)} "
                     f"and {tuple(indices.shape)}")


def empirical_covariance(g: torch.Tensor) -> torch.Tensor:
    r""":math:`\Sigma_{\rm emp} = \frac1n\sum_i (g_i - g_n)(g_i - g_n)^\top` of ``g`` ``(..., n, d)`` (divisor
    :math:`n`, not :math:`n-1`), shaped ``(..., d, d)``."""
    checks.matrix(g, "g", min_ndim=2)
    checks.allocation((*g.shape[:-2], g.shape[-1], g.shape[-1]), g.dtype, "g (a d x d covariance)")
    c = g - g.mean(dim=-2, keepdim=True)
    return c.transpose(-1, -2) @ c / g.shape[-2]


def exact_moments(g: torch.Tensor, batch: int, scheme: str = "with"):
    r"""Exact mean ``(..., d)`` and covariance ``(..., d, d)`` of one minibatch mean, by enumeration.

    Averages over every equally likely batch of ``scheme`` (``"with"`` or ``"without"``), so the result
    is exact to rounding for any data set ``g`` ``(..., n, d)``.
    """
    checks.matrix(g, "g", min_ndim=2)
    if _scheme(scheme) == "epoch":
        raise ValueError("scheme must be 'with' or 'without' for the moments of one batch")
    batch = checks.positive_int(batch, "batch")
    checks.allocation((*g.shape[:-2], g.shape[-1], g.shape[-1]), g.dtype, "g (a d x d covariance)")
    idx = batch_indices(g.shape[-2], batch, 1, scheme, device=g.device)[:, 0]       # (N, B)
    checks.allocation((*g.shape[:-2], *idx.shape, g.shape[-1]), g.dtype, "g and batch (every batch's rows)")
    means = g[..., idx, :].mean(dim=-2)                                            # (..., N, d)
    mu = means.mean(dim=-2)
    c = means - mu.unsqueeze(-2)
    return mu, c.transpose(-1, -2) @ c / means.shape[-2]


def covariance_estimate(means: torch.Tensor, batch: int) -> torch.Tensor:
    r"""The note's estimator :math:`\hat\Sigma = \frac{B}{m-1}\sum_j (g_{\mathcal B_j}-\bar g)(g_{\mathcal B_j}-\bar g)^\top`.

    ``means`` is ``(..., m, d)`` (``m >= 2`` batch means at one :math:`\theta`); returns ``(..., d, d)``.
    Whether it is unbiased for :math:`\Sigma_{\rm emp}` depends on the scheme (chapter
    *minibatch-covariance*): multiply by :func:`estimate_correction`.
    """
    checks.matrix(means, "means", min_ndim=2)
    batch = checks.positive_int(batch, "batch")
    checks.allocation((*means.shape[:-2], means.shape[-1], means.shape[-1]), means.dtype, "means (a d x d covariance)")
    m = means.shape[-2]
    if m < 2:
        raise ValueError(f"means needs m >= 2 batches, got {m}")
    c = means - means.mean(dim=-2, keepdim=True)
    return batch * (c.transpose(-1, -2) @ c) / (m - 1)


def estimate_correction(n: int, batch: int, scheme: str) -> float:
    r"""The factor :math:`c` with :math:`\E[c\,\hat\Sigma] = \Sigma_{\rm emp}` under ``scheme``.

    ``"with"``: 1; ``"without"`` (independent batches): :math:`(n-1)/(n-B)`; ``"epoch"`` (``m >= 2``
    disjoint batches, :math:`mB \le n`): :math:`(n-1)/n`.
    """
    scheme = _scheme(scheme)
    checks.positive_int(n, "n", 2)
    checks.positive_int(batch, "batch")
    if batch > n or (scheme == "without" and batch == n):
        raise ValueError(f"batch = {batch} must be below n = {n}")
    if scheme == "with":
        return 1.0
    if scheme == "without":
        return (n - 1) / (n - batch)
    return (n - 1) / n
