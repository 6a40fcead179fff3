r"""The digits MLP of Part IV: its data, its parameters, its loss, and its training.

The finite data set :math:`\mathcal D` is the training split of scikit-learn's ``load_digits`` (8×8
images, 10 classes, standardised with the training statistics); the test split is only used to show
that the network learns. The network is :math:`f_\theta(x) = W_2\tanh(W_1x + b_1) + b_2` with
:math:`W_1\in\mathbb R^{32\times64}`, :math:`W_2\in\mathbb R^{10\times32}` (:math:`d = 2410`
parameters), in float64, and the per-example loss is

.. math:: \ell(x;\theta) = \mathrm{CE}(f_\theta(x), y) + \tfrac{\lambda}{2}\|\theta\|^2,
   \qquad \lambda = ``WEIGHT_DECAY``,

so that the training loss :math:`L(\theta) = \frac1N\sum_x\ell(x;\theta)` has a minimum (without the
ridge term the cross-entropy of a separable set has none). The ridge term adds the same
:math:`\lambda\theta` to every :math:`G(x) = \nabla_\theta\ell(x;\theta)`: it moves :math:`G_T` but not
:math:`\Sigma`.

Parameters are a dict ``{name: tensor}`` with the names of :func:`network`'s ``state_dict``
(``0.weight`` = :math:`W_1`, ``0.bias`` = :math:`b_1`, ``2.weight`` = :math:`W_2`, ``2.bias`` =
:math:`b_2`); :func:`flatten` and :func:`unflatten` convert to and from vectors in that order.
:func:`logits`, :func:`losses` and :func:`minibatch_gradient` accept parameters with leading (chain)
dimensions. Inputs are checked once per call: parameters finite and floating, ``x`` of the parameters'
dtype and device (a float32 ``x`` with float64 parameters is refused, not silently promoted), ``y``
int64 labels in ``[0, CLASSES)``. Nothing is cached on disk; :func:`checkpoints` retrains in well
under a second. The per-example-gradient machinery that works on this network lives in
:mod:`gradnoise.pergrad`, which re-exports every name of this module.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .. import checks
from . import Checkpoint as _Checkpoint
from ..device import DTYPE
from ..seeds import generator as _generator

FEATURES, HIDDEN, CLASSES = 64, 32, 10
NAMES = ("0.weight", "0.bias", "2.weight", "2.bias")
SHAPES = {"0.weight": (HIDDEN, FEATURES), "0.bias": (HIDDEN,), "2.weight": (CLASSES, HIDDEN), "2.bias": (CLASSES,)}
DIM = sum(torch.Size(s).numel() for s in SHAPES.values())
"""Number of parameters :math:`d` (2410)."""
WEIGHT_DECAY = 1e-3
"""The ridge coefficient :math:`\\lambda` inside every per-example loss."""
TEST_FRACTION = 0.2
LEARNING_RATE, MOMENTUM = 0.5, 0.9
"""Step size and momentum of the full-batch heavy-ball descent that :func:`checkpoints` runs."""
CHECKPOINT_STEPS = (0, 10, 50, 400)
"""Default checkpoints: initialisation, early, middle, near convergence (full-batch steps)."""


class Digits(NamedTuple):
    """The standardised digits, split once: ``x_*`` are ``(n, 64)`` float64, ``y_*`` are ``(n,)`` int64."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


Checkpoint = _Checkpoint
"""The networks' shared training record (:class:`gradnoise.networks.Checkpoint`)."""


def digits(test_fraction: float = TEST_FRACTION, device=None) -> Digits:
    r"""scikit-learn's ``load_digits`` (1,797 images), split and standardised.

    The split is a permutation from ``generator("pergrad:split")`` (drawn on the CPU, so it is the same
    on every device for a given ``GRADNOISE_SEED``); the first ``round(test_fraction·1797)`` examples of
    it form the test set. Features are standardised with the training mean and standard deviation
    (constant pixels, whose deviation is 0, are only centred).
    """
    if not (isinstance(test_fraction, (int, float)) and not isinstance(test_fraction, bool) and 0 <= test_fraction < 1):
        raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction!r}")
    dev = checks.torch_device(device)
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.as_tensor(raw.data, dtype=DTYPE)
    y = torch.as_tensor(raw.target, dtype=torch.int64)
    perm = torch.randperm(x.shape[0], generator=_generator("pergrad:split", device="cpu"))
    n_test = round(test_fraction * x.shape[0])
    test, train = perm[:n_test], perm[n_test:]
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / torch.where(std > 0, std, torch.ones_like(std))
    return Digits(x[train].to(dev), y[train].to(dev), x[test].to(dev), y[test].to(dev))


def network(device=None) -> torch.nn.Sequential:
    """An (un-extended) ``Linear(64, 32) → Tanh → Linear(32, 10)`` in float64; load parameters into it."""
    dev = checks.torch_device(device)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, HIDDEN), torch.nn.Tanh(),
                               torch.nn.Linear(HIDDEN, CLASSES)).to(dtype=DTYPE, device=dev)


def initial_parameters(gen: torch.Generator | None = None, device=None) -> dict:
    r"""PyTorch's default initialisation, drawn from ``gen``: every entry of layer :math:`l` uniform on
    :math:`\pm 1/\sqrt{\text{fan-in}}`. Default ``gen``: ``generator("pergrad:init")`` on the CPU (the
    same numbers on every device); the result lives on ``device`` (the book's by default)."""
    gen = checks.generator(gen, "gen") if gen is not None else _generator("pergrad:init", device="cpu")
    dev = checks.torch_device(device)
    params = {}
    for name in NAMES:
        fan_in = FEATURES if name.startswith("0.") else HIDDEN
        u = torch.rand(SHAPES[name], generator=gen, dtype=DTYPE, device=gen.device)
        params[name] = ((2 * u - 1) / fan_in**0.5).to(dev)
    return params


MAX_STEPS = 100_000
"""Most steps :func:`checkpoints` and :func:`sgd` run in one call. The book's runs take hundreds; a request
a thousand times longer than any chapter's is a typo, refused in one line instead of running for hours."""


def _check_params(params, name: str = "params") -> None:
    """A dict with the keys :data:`NAMES`, each a finite floating tensor ending in its :data:`SHAPES` entry."""
    if not isinstance(params, dict) or set(params) != set(NAMES):
        raise ValueError(f"{name} must be a dict with keys {NAMES}")
    for key in NAMES:
        t = params[key]
        checks.matrix(t, f"{name}[{key!r}]", min_ndim=len(SHAPES[key]))
        if tuple(t.shape[t.ndim - len(SHAPES[key]):]) != SHAPES[key]:
            raise ValueError(f"{name}[{key!r}] must end in shape {SHAPES[key]}, got {tuple(t.shape)}")


def _check_data(x, y, like=None) -> None:
    """``x`` ``(..., n, 64)`` finite floating (of the dtype and device of ``like``'s parameters, when given);
    ``y`` int64 ``(..., n)`` with every label in ``[0, CLASSES)``."""
    checks.matrix(x, "x", min_ndim=2)
    if x.shape[-1] != FEATURES:
        raise ValueError(f"x must have {FEATURES} features in its last dimension, got shape {tuple(x.shape)}")
    if like is not None:
        w = like[NAMES[0]]
        if x.dtype != w.dtype or x.device != w.device:
            raise ValueError(f"x ({x.dtype}, {x.device}) must have the dtype and device of the parameters "
                             f"({w.dtype}, {w.device}); convert it with x.to(params['0.weight'])")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != x.shape[:-1]:
        got = f"{y.dtype} tensor of shape {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must be an int64 tensor of shape {tuple(x.shape[:-1])}, got {got}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= CLASSES):
        raise ValueError(f"y must hold class labels in [0, {CLASSES}), got values from {int(y.min())} to {int(y.max())}")


def flatten(tensors: dict, lead: int = 0) -> torch.Tensor:
    """Concatenate a parameter-shaped dict into vectors ``(*leading, d)`` in the order of ``NAMES``.

    ``lead`` is the number of leading dimensions (e.g. 1 for per-example gradients ``(N, ...)``).
    """
    _check_params(tensors, "tensors")
    lead = checks.count(lead, "lead", minimum=0)
    first = tensors[NAMES[0]]
    if first.ndim != lead + 2:
        raise ValueError(f"lead = {lead} does not match {NAMES[0]} of shape {tuple(first.shape)}")
    return torch.cat([tensors[n].reshape(*first.shape[:lead], -1) for n in NAMES], dim=-1)


def unflatten(vector: torch.Tensor) -> dict:
    """Inverse of :func:`flatten`: vectors ``(..., d)`` to a dict of ``(..., *shape)`` tensors."""
    checks.matrix(vector, "vector", min_ndim=1)
    if vector.shape[-1] != DIM:
        raise ValueError(f"vector must have last dimension {DIM}, got {tuple(vector.shape)}")
    out, start = {}, 0
    for name in NAMES:
        size = torch.Size(SHAPES[name]).numel()
        out[name] = vector[..., start:start + size].reshape(*vector.shape[:-1], *SHAPES[name])
        start += size
    return out


def logits(params: dict, x: torch.Tensor) -> torch.Tensor:
    r""":math:`f_\theta(x) = W_2\tanh(W_1x+b_1)+b_2` for ``x`` ``(..., n, 64)`` → ``(..., n, 10)``.

    Parameters may carry leading dimensions that broadcast against those of ``x`` (chains of SGD).
    """
    _check_params(params)
    checks.matrix(x, "x", min_ndim=2)
    if x.shape[-1] != FEATURES:
        raise ValueError(f"x must have {FEATURES} features in its last dimension, got shape {tuple(x.shape)}")
    w = params[NAMES[0]]
    if x.dtype != w.dtype or x.device != w.device:
        raise ValueError(f"x ({x.dtype}, {x.device}) must have the dtype and device of the parameters "
                         f"({w.dtype}, {w.device}); convert it with x.to(params['0.weight'])")
    h = torch.tanh(x @ params["0.weight"].transpose(-1, -2) + params["0.bias"].unsqueeze(-2))
    return h @ params["2.weight"].transpose(-1, -2) + params["2.bias"].unsqueeze(-2)


def _ridge(params: dict, weight_decay: float) -> torch.Tensor:
    return 0.5 * weight_decay * sum((params[n] ** 2).flatten(-len(SHAPES[n])).sum(-1) for n in NAMES)


def losses(params: dict, x: torch.Tensor, y: torch.Tensor, weight_decay: float = WEIGHT_DECAY) -> torch.Tensor:
    r"""The training loss :math:`L(\theta) = \frac1n\sum_i \ell(x_i;\theta)` on ``(x, y)``, batched over
    the leading dimensions of ``params`` (shape: those dimensions; a 0-d tensor for plain parameters)."""
    _check_params(params)
    _check_data(x, y, like=params)
    checks.positive_real(weight_decay, "weight_decay", allow_zero=True)
    z = logits(params, x)
    ce = -torch.log_softmax(z, -1).gather(-1, y.expand(z.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return ce.mean(-1) + _ridge(params, weight_decay)



def _backprop(params: dict, x: torch.Tensor, y: torch.Tensor):
    """Hidden activations ``h`` and the per-example output and hidden deltas ``(d2, d1)`` of the cross-entropy."""
    h = torch.tanh(x @ params["0.weight"].transpose(-1, -2) + params["0.bias"].unsqueeze(-2))
    z = h @ params["2.weight"].transpose(-1, -2) + params["2.bias"].unsqueeze(-2)
    d2 = torch.softmax(z, dim=-1) - torch.nn.functional.one_hot(y, CLASSES).to(z.dtype)
    d1 = (d2 @ params["2.weight"]) * (1 - h * h)
    return h, d2, d1


def minibatch_gradient(params: dict, x: torch.Tensor, y: torch.Tensor,
                       weight_decay: float = WEIGHT_DECAY) -> dict:
    r"""The gradient of the mean loss over the examples of ``x`` ``(..., B, 64)``, by hand
    (back-propagation written out), batched over leading dimensions shared by ``params`` and ``x``.

    With :math:`h = \tanh(W_1x+b_1)`, :math:`p = \mathrm{softmax}(W_2h+b_2)`, :math:`\delta_2 = p - e_y`
    and :math:`\delta_1 = (W_2^\top\delta_2)\odot(1-h^2)`: :math:`\nabla W_2 = \frac1B\sum\delta_2h^\top`,
    :math:`\nabla W_1 = \frac1B\sum\delta_1x^\top`, the biases average the :math:`\delta`, plus
    :math:`\lambda\theta`. Used by :func:`sgd` and :func:`checkpoints` (no autograd in the loop).
    """
    _check_params(params)
    _check_data(x, y, like=params)
    checks.positive_real(weight_decay, "weight_decay", allow_zero=True)
    return _minibatch_gradient(params, x, y, weight_decay)


def _minibatch_gradient(params: dict, x: torch.Tensor, y: torch.Tensor, weight_decay: float) -> dict:
    h, d2, d1 = _backprop(params, x, y)
    b = x.shape[-2]
    return {"0.weight": d1.transpose(-1, -2) @ x / b + weight_decay * params["0.weight"],
            "0.bias": d1.mean(-2) + weight_decay * params["0.bias"],
            "2.weight": d2.transpose(-1, -2) @ h / b + weight_decay * params["2.weight"],
            "2.bias": d2.mean(-2) + weight_decay * params["2.bias"]}



def accuracy(params: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``(x, y)`` classified correctly (argmax of the logits)."""
    _check_params(params)
    _check_data(x, y, like=params)
    return (logits(params, x).argmax(-1) == y).to(DTYPE).mean().item()


def checkpoints(steps=CHECKPOINT_STEPS, data: Digits | None = None, lr: float = LEARNING_RATE,
                momentum: float = MOMENTUM) -> list:
    r"""Train by full-batch heavy-ball descent, :math:`v \leftarrow \mu v + G_T(\theta)`,
    :math:`\theta \leftarrow \theta - \mathrm{lr}\,v` (``momentum`` :math:`\mu`; 0 gives plain GD), from
    :func:`initial_parameters`, and return a :class:`Checkpoint` at each of ``steps`` (non-negative
    integers, returned sorted; step 0 is the initialisation). Deterministic given ``GRADNOISE_SEED``;
    the defaults reach :math:`\|G_T\|\approx 10^{-3}` and ~98% test accuracy at step 400. At most
    :data:`MAX_STEPS` steps."""
    try:
        steps = list(steps)
    except TypeError:
        raise ValueError(f"steps must be non-empty non-negative integers, got {steps!r}") from None
    if not steps:
        raise ValueError(f"steps must be non-empty non-negative integers, got {steps!r}")
    steps = [checks.count(s, "steps", minimum=0, maximum=MAX_STEPS) for s in steps]
    lr = checks.positive_real(lr, "lr")
    momentum = checks.decay(momentum, "momentum")
    if data is None:
        data = digits()
    elif not isinstance(data, Digits):
        raise ValueError(f"data must be a Digits tuple (from digits()), got {type(data).__name__}")
    _check_data(data.x_train, data.y_train)
    params = initial_parameters(device=data.x_train.device)
    velocity = {n: torch.zeros_like(params[n]) for n in NAMES}
    out, step = [], 0
    for target in sorted(set(steps)):
        while step < target:
            g = _minibatch_gradient(params, data.x_train, data.y_train, WEIGHT_DECAY)
            for n in NAMES:
                velocity[n] = momentum * velocity[n] + g[n]
                params[n] = params[n] - lr * velocity[n]
            step += 1
        out.append(Checkpoint(step, {n: params[n].clone() for n in NAMES},
                              losses(params, data.x_train, data.y_train).item(),
                              accuracy(params, data.x_train, data.y_train),
                              accuracy(params, data.x_test, data.y_test)))
    return out


def sgd(params: dict, x: torch.Tensor, y: torch.Tensor, lr: float, batch: int, steps: int,
        gen: torch.Generator, chains: int = 1, replacement: bool = True, record_every: int = 0,
        weight_decay: float = WEIGHT_DECAY, observe=None):
    r"""Run ``chains`` independent SGD chains :math:`\theta \leftarrow \theta - \mathrm{lr}\,g_B(\theta)` for
    ``steps`` steps from ``params``, each step's minibatch of size ``batch`` drawn by :func:`gradnoise.pergrad.batch_indices`.

    Returns ``(final, recorded)``: ``final`` is a parameter dict with a leading ``chains`` dimension;
    ``recorded`` stacks the flattened parameters every ``record_every`` steps (after steps
    ``record_every, 2·record_every, …``), shape ``(records, chains, d)``, or ``None`` when ``record_every`` is 0.
    ``observe``, a function of the flattened parameters ``(chains, d)``, records ``observe(θ)`` instead
    (e.g. projections on a few directions, to keep long runs small in memory).

    ``x`` is ``(n, 64)`` with ``y`` ``(n,)``; ``steps`` is at most :data:`MAX_STEPS`; the chains' memory
    (parameters, one step's minibatch and its activations, the records) goes through the allocation guard.
    """
    from ..pergrad import batch_indices

    _check_params(params)
    _check_data(x, y, like=params)
    if x.ndim != 2:
        raise ValueError(f"x must be (n, {FEATURES}), got shape {tuple(x.shape)}")
    steps = checks.count(steps, "steps", maximum=MAX_STEPS)
    chains = checks.count(chains, "chains")
    batch = checks.count(batch, "batch")
    record_every = checks.count(record_every, "record_every", minimum=0)
    lr = checks.positive_real(lr, "lr")
    weight_decay = checks.positive_real(weight_decay, "weight_decay", allow_zero=True)
    checks.generator(gen, "gen")
    if observe is not None and not callable(observe):
        raise ValueError(f"observe must be a function of the flattened parameters, got {type(observe).__name__}")
    n = x.shape[0]
    if not replacement and batch > n:
        raise ValueError(f"batch = {batch} exceeds n = {n} without replacement")
    width = 2 * DIM + batch * (FEATURES + 2 * HIDDEN + 3 * CLASSES)        # θ, its gradient, one step's activations
    checks.allocation((chains, width), x.dtype, f"sgd with chains = {chains} and batch = {batch}")
    if record_every and observe is None:
        checks.allocation((steps // record_every, chains, DIM), x.dtype,
                          f"sgd's records (steps = {steps}, chains = {chains}, record_every = {record_every})")
    theta = {k: params[k].detach().expand(chains, *SHAPES[k]).clone() for k in NAMES}
    recorded = []
    for t in range(1, steps + 1):
        idx = batch_indices(n, batch, (chains,), gen, replacement)
        g = _minibatch_gradient(theta, x[idx], y[idx], weight_decay)
        for k in NAMES:
            theta[k].sub_(lr * g[k])
        if record_every and t % record_every == 0:
            flat = flatten(theta, lead=1)
            recorded.append(observe(flat) if observe is not None else flat.clone())
    return theta, (torch.stack(recorded) if recorded else None)
