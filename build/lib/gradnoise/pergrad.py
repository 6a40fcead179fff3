r"""Per-example gradients and what is drawn from them: the machinery of Part IV.

A real network's gradient noise is the law of a minibatch mean of its per-example gradients
:math:`G(x_i) = \nabla_\theta\ell(x_i;\theta)`, :math:`i = 1..N`. This module computes those gradients
once per parameter point — :func:`functional_per_example_gradients` for any ``torch.nn.Module`` and
per-example loss (``torch.func``: ``functional_call`` + ``vmap(grad)`` on the whole data set at once),
:func:`per_example_gradients` for the digits MLP — and everything after that is index sampling on the
device: :func:`batch_indices` draws minibatches, :func:`batch_means` draws ``trials`` minibatch means of
any size ``k`` (with or without replacement; for ``k`` beyond :math:`N` with replacement as multinomial
counts, so ``k = 10^6`` costs no more than ``k = N``), chunked through the allocation guard. The exact
moments of those means follow from :func:`gradient_covariance`, :func:`covariance_eigenvalues` and
:func:`simple_noise_scale`.

The digits network, its data, its parameters and its (S)GD training live in
:mod:`gradnoise.networks.digits`; every name of that module is re-exported here (``pergrad.digits``,
``pergrad.checkpoints``, ``pergrad.minibatch_gradient``, ``pergrad.NAMES``, ...), so code written
against the earlier single module runs unchanged.
"""
from __future__ import annotations

import torch
from torch.func import functional_call, grad, vmap

from . import checks
from .networks.digits import (CHECKPOINT_STEPS, CLASSES, DIM, FEATURES, HIDDEN, LEARNING_RATE,  # noqa: F401
                              MAX_STEPS, MOMENTUM, NAMES, SHAPES, TEST_FRACTION, WEIGHT_DECAY, Checkpoint,
                              Digits, _backprop, _check_data, _check_params, _minibatch_gradient, _ridge,
                              accuracy, checkpoints, digits, flatten, initial_parameters, logits, losses,
                              minibatch_gradient, network, sgd, unflatten)

BATCH_MEANS_CHUNK_BYTES = 2**27
"""Working memory of one chunk of :func:`batch_means` (128 MiB): trials are processed this many bytes
of counts and means at a time, so a run made 100 times larger takes 100 times as many chunks."""


def functional_per_example_gradients(model: torch.nn.Module, params: dict, loss, x: torch.Tensor,
                                     y: torch.Tensor) -> dict:
    r"""Per-example gradients of ``loss(model(x_i), y_i, params)`` for any module, a dict of ``(n, *shape)``.

    ``params`` maps (some of) ``model``'s parameter names to tensors; ``loss(output, target, params)``
    returns the scalar loss of one example, whose ``output`` is ``model`` applied to a batch of one (a
    regulariser may use ``params``). ``torch.func.vmap(grad(...))`` over the first dimension of ``x``
    and ``y``: one pass over the data set, no Python loop.
    """
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(params, dict) or not params:
        raise ValueError("params must be a non-empty dict {name: tensor}")
    if not callable(loss):
        raise ValueError(f"loss must be a function (output, target, params) -> scalar, got {type(loss).__name__}")
    for key, t in params.items():
        checks.matrix(t, f"params[{key!r}]", min_ndim=0)
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor) or t.ndim < 1 or t.shape[0] == 0:
            raise ValueError(f"{name} must be a tensor with a non-empty first (example) dimension")
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf")      # integer inputs (tokens, labels) pass as they are
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of examples, got {x.shape[0]} and {y.shape[0]}")
    width = sum(t.numel() for t in params.values())
    checks.allocation((x.shape[0], width), next(iter(params.values())).dtype, "per-example gradients")

    def one(p, xi, yi):
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return loss(out, yi.unsqueeze(0), p)

    try:
        return vmap(grad(one), in_dims=(None, 0, 0))({k: t.detach() for k, t in params.items()}, x, y)
    except (RuntimeError, IndexError, TypeError) as err:     # the model or loss refused an example: name the inputs
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"model, params and loss failed on one example of x (with its y): {first[:200]}; check "
                         "params and x's dtype and shape against the model, and y's labels against its outputs") from None


def _digits_loss(weight_decay):
    def loss(out, target, params):
        return torch.nn.functional.cross_entropy(out, target) + _ridge(params, weight_decay)
    return loss


def per_example_gradients(params: dict, x: torch.Tensor, y: torch.Tensor,
                          weight_decay: float = WEIGHT_DECAY) -> dict:
    r"""Per-example gradients :math:`G(x_i) = \nabla_\theta\ell(x_i;\theta)` of the digits MLP, a dict of ``(n, *shape)``.

    :func:`functional_per_example_gradients` with :func:`network` and the digits loss (cross-entropy plus
    the ridge term). The hidden weight matrix's gradients are ``grads["0.weight"]``, ``(n, 32, 64)``.
    """
    _check_params(params)
    _check_data(x, y, like=params)
    weight_decay = checks.positive_real(weight_decay, "weight_decay", allow_zero=True)
    if x.ndim != 2:
        raise ValueError(f"x must be (n, {FEATURES}), got shape {tuple(x.shape)}")
    model = network(device=x.device).to(dtype=x.dtype)
    return functional_per_example_gradients(model, {n: params[n] for n in NAMES}, _digits_loss(weight_decay), x, y)


def per_example_gradient_matrix(params: dict, x: torch.Tensor, y: torch.Tensor,
                                weight_decay: float = WEIGHT_DECAY) -> torch.Tensor:
    """The flattened per-example gradients of the whole network, ``(n, d)``: row ``i`` is :math:`G(x_i)`."""
    return flatten(per_example_gradients(params, x, y, weight_decay), lead=1)


def full_gradient(params: dict, x: torch.Tensor, y: torch.Tensor, weight_decay: float = WEIGHT_DECAY) -> torch.Tensor:
    r"""The full ("true") gradient :math:`G_T = \nabla_\theta L(\theta)`, a ``(d,)`` vector, by one
    backward pass through the mean loss (independent of the per-example route)."""
    _check_params(params)
    leaves = {n: params[n].detach().clone().requires_grad_(True) for n in NAMES}
    g = torch.autograd.grad(losses(leaves, x, y, weight_decay), [leaves[n] for n in NAMES])
    return torch.cat([t.reshape(-1) for t in g])


def gradient_gram(params: dict, x: torch.Tensor, y: torch.Tensor, centred: bool = True) -> torch.Tensor:
    r"""The :math:`N\times N` matrix :math:`K_{ij} = \frac1N\langle G_i - G_T, G_j - G_T\rangle` (``centred``)
    or :math:`\frac1N\langle G_i, G_j\rangle` (not centred; ridge term included), without forming the
    :math:`N\times d` gradients: a layer's per-example weight gradient is the outer product
    :math:`\delta a^\top`, so :math:`\langle G_i, G_j\rangle` sums :math:`(\delta_i\cdot\delta_j)(a_i\cdot a_j + 1)`
    over the two layers. :math:`K` has the non-zero eigenvalues of :math:`\Sigma` (centred) and
    :math:`\mathrm{tr}\,K = \mathrm{tr}\,\Sigma`; cost :math:`O(N^2(64+32+10))` instead of :math:`O(N^2 d)`.
    """
    _check_params(params)
    _check_data(x, y, like=params)
    if x.ndim != 2:
        raise ValueError(f"x must be (n, {FEATURES}), got shape {tuple(x.shape)}")
    if not isinstance(centred, bool):
        raise ValueError(f"centred must be True or False, got {centred!r}")
    n = x.shape[0]
    checks.allocation((4, n, n), x.dtype, "gradient_gram")
    h, d2, d1 = _backprop(params, x, y)
    k = (d1 @ d1.T) * (x @ x.T + 1) + (d2 @ d2.T) * (h @ h.T + 1)
    if centred:
        k = k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()
    else:                      # add the ridge term r = λθ shared by every G_i
        lam = WEIGHT_DECAY
        gr = lam * ((d1 * (x @ params["0.weight"].T + params["0.bias"])).sum(-1)
                    + (d2 * (h @ params["2.weight"].T + params["2.bias"])).sum(-1))
        k = k + gr[:, None] + gr[None, :] + lam**2 * (flatten(params) ** 2).sum()
    return k / n



def gradient_covariance(grads: torch.Tensor) -> torch.Tensor:
    r"""The exact covariance :math:`\Sigma = \frac1N\sum_i (G_i - G_T)(G_i - G_T)^\top` of the rows of
    ``grads`` ``(..., N, d)`` under uniform sampling (divisor :math:`N`, not :math:`N-1`), ``(..., d, d)``."""
    checks.matrix(grads, "grads", min_ndim=2)
    checks.allocation((*grads.shape[:-2], grads.shape[-1], grads.shape[-1]), grads.dtype, "grads (a d x d covariance)")
    c = grads - grads.mean(-2, keepdim=True)
    return c.transpose(-1, -2) @ c / grads.shape[-2]


def covariance_eigenvalues(grads: torch.Tensor) -> torch.Tensor:
    r"""The eigenvalues of :math:`\Sigma` (:func:`gradient_covariance`), descending, ``(..., d)``.

    When :math:`N < d` they come from the :math:`N\times N` Gram matrix :math:`\frac1N CC^\top` of the
    centred rows :math:`C` (same non-zero eigenvalues as :math:`\frac1N C^\top C`), padded with zeros.
    """
    checks.matrix(grads, "grads", min_ndim=2)
    n, d = grads.shape[-2:]
    checks.allocation((*grads.shape[:-2], min(n, d), min(n, d)), grads.dtype, "covariance_eigenvalues")
    c = grads - grads.mean(-2, keepdim=True)
    small = c @ c.transpose(-1, -2) / n if n < d else c.transpose(-1, -2) @ c / n
    ev = torch.linalg.eigvalsh(small).flip(-1).clamp_min(0)
    if n < d:
        ev = torch.cat([ev, ev.new_zeros(*ev.shape[:-1], d - n)], dim=-1)
    return ev


def simple_noise_scale(grads: torch.Tensor) -> torch.Tensor:
    r""":math:`B_\mathrm{simple} = \mathrm{tr}\,\Sigma/\|G_T\|^2` of the rows of ``grads`` ``(..., N, d)``
    (McCandlish et al. 2018), with :math:`G_T` the row mean and :math:`\Sigma` as in :func:`gradient_covariance`."""
    checks.matrix(grads, "grads", min_ndim=2)
    g_t = grads.mean(-2)
    tr = ((grads - g_t.unsqueeze(-2)) ** 2).sum((-1, -2)) / grads.shape[-2]
    return tr / (g_t**2).sum(-1)


def batch_indices(n: int, batch: int, shape, gen: torch.Generator, replacement: bool = True) -> torch.Tensor:
    """Indices of minibatches ``(*shape, batch)`` drawn uniformly from ``range(n)``, with or without
    replacement within each batch (batches independent of one another): :func:`gradnoise.minibatch.draw_indices`,
    except that a batch of all ``n`` examples without replacement is ``0, 1, ..., n-1`` in order. Every
    size is checked (and the allocation guarded) before anything is drawn."""
    from .minibatch import draw_indices

    n, batch = checks.count(n, "n"), checks.count(batch, "batch")
    checks.generator(gen, "gen")
    try:
        shape = tuple(checks.count(d, "shape entry") for d in shape)
    except TypeError:
        raise ValueError(f"shape must be a sequence of positive integers, got {shape!r}") from None
    if not replacement and batch > n:
        raise ValueError(f"batch = {batch} exceeds n = {n} without replacement")
    if not replacement and batch == n:
        checks.allocation((*shape, n), torch.int64, "batch_indices")
        return torch.arange(n, device=gen.device).expand(*shape, n)
    return draw_indices(n, batch, shape, gen, replacement)


def _multinomial_counts(n: int, k: int, trials: int, gen: torch.Generator, dtype) -> torch.Tensor:
    r"""``(trials, n)`` counts of ``k`` uniform draws with replacement from ``range(n)``, exactly multinomial:
    by conditional binomials, :math:`c_j \sim \mathrm{Bin}(k - \sum_{i<j} c_i,\ 1/(n - j))`. Cost ``O(n·trials)``
    whatever ``k`` (``n`` small kernel launches), instead of the ``O(k·trials)`` of drawing every index."""
    counts = torch.empty(trials, n, dtype=dtype, device=gen.device)
    left = torch.full((trials,), float(k), dtype=dtype, device=gen.device)
    p = torch.empty(trials, dtype=dtype, device=gen.device)
    for j in range(n - 1):
        c = torch.binomial(left, p.fill_(1.0 / (n - j)), generator=gen)
        counts[:, j] = c
        left = left - c
    counts[:, n - 1] = left
    return counts


def batch_means(grads: torch.Tensor, k: int, trials: int, gen: torch.Generator, replacement: bool = True,
                chunk: int | None = None) -> torch.Tensor:
    r"""``trials`` independent minibatch means :math:`g_k = \frac1k\sum_{i\in\mathcal B} G_i` of ``k`` rows of ``grads``.

    ``grads`` is ``(N, *shape)`` (per-example gradients, computed once); the result is ``(trials, *shape)``.
    Each batch is ``k`` indices drawn uniformly from ``range(N)`` with replacement (i.i.d.; any ``k >= 1``)
    or without (a uniform ``k``-subset, ``k <= N``), on ``gen``'s device. A mean is a count vector times
    the flattened rows, so no ``(trials, k, d)`` copy is made; with replacement and ``k > N`` the counts
    are drawn as one multinomial (:func:`_multinomial_counts`), so the cost does not grow with ``k``.
    Trials are processed in chunks of ``chunk`` (default: as many as fit in
    :data:`BATCH_MEANS_CHUNK_BYTES`); the result itself goes through the allocation guard. The same
    generator state gives the same means whatever the chunking only when ``chunk`` is the same.
    """
    checks.matrix(grads, "grads", min_ndim=1)
    n = grads.shape[0]
    k = checks.count(k, "k")
    trials = checks.count(trials, "trials")
    checks.generator(gen, "gen")
    if gen.device != grads.device:
        raise ValueError(f"gen is on {gen.device} but grads on {grads.device}: draw on the device of the gradients")
    if not isinstance(replacement, bool):
        raise ValueError(f"replacement must be True or False, got {replacement!r}")
    if not replacement and k > n:
        raise ValueError(f"k = {k} exceeds N = {n} without replacement")
    flat = grads.reshape(n, -1)
    d = flat.shape[1]
    checks.allocation((trials, d), grads.dtype, f"batch_means with trials = {trials}")
    per_trial = (2 * n + d + (k if k <= n else 0)) * grads.element_size()
    if chunk is None:
        chunk = max(1, min(trials, BATCH_MEANS_CHUNK_BYTES // per_trial))
    chunk = checks.count(chunk, "chunk")
    checks.allocation((chunk, per_trial // grads.element_size()), grads.dtype, "batch_means (one chunk)")
    out = torch.empty(trials, d, dtype=grads.dtype, device=grads.device)
    for start in range(0, trials, chunk):
        t = min(chunk, trials - start)
        if replacement and k > n:
            counts = _multinomial_counts(n, k, t, gen, grads.dtype)
        else:
            idx = batch_indices(n, k, (t,), gen, replacement)
            counts = torch.zeros(t, n, dtype=grads.dtype, device=grads.device)
            counts.scatter_add_(1, idx, torch.ones(idx.shape, dtype=grads.dtype, device=grads.device))
        out[start:start + t] = counts @ flat / k
    return out.reshape(trials, *grads.shape[1:])
