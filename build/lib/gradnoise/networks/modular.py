r"""A one-layer transformer on modular addition, trained with ``torch.optim.Muon``, and its per-example gradients.

**Data.** Every pair :math:`(a, b)` with :math:`0 \le a, b < p` (``P`` = 67 by default) is one example:
the sequence of two tokens :math:`(a, b)` and the label :math:`(a + b) \bmod p`. A permutation from ``generator("modular:split")`` (drawn on the CPU, the same on
every device for a given ``GRADNOISE_SEED``) puts the first ``round(train_fraction·p²)`` pairs in the
training set :math:`\mathcal D` (:math:`N` examples) and the rest in the test set. No file is read.

**Network.** Width :math:`d` (``WIDTH`` = 64), :math:`H` heads (``HEADS`` = 4) of width :math:`d/H`, an
MLP of width ``MLP`` = 128 with ReLU, no layer norm (as in the grokking studies of this task):

.. math::
    x_t = E[\mathrm{tok}_t] + P_t,\qquad
    x \leftarrow x + W_O\,\mathrm{Attn}(W_Qx, W_Kx, W_Vx),\qquad
    x \leftarrow x + W_{\rm out}\,\mathrm{ReLU}(W_{\rm in}x),\qquad
    f_\theta = U\,x_2,

causal softmax attention per head with scale :math:`(d/H)^{-1/2}`, and the logits :math:`f_\theta \in
\mathbb R^p` read at the last position (the token :math:`b`; with a separate ``=`` token the query
would be the same vector for every example and :math:`W_Q`'s gradients all of rank one). The per-example loss is the cross-entropy
:math:`\ell(x;\theta) = \mathrm{CE}(f_\theta(x), y)`; weight decay is decoupled (in the optimizers), so
it is not in :math:`\ell` and the per-example gradients are those of the data alone.

Parameters are a dict ``{name: tensor}`` (float64). The **hidden matrices** ``HIDDEN`` — ``attn.q``,
``attn.k``, ``attn.v``, ``attn.o`` (:math:`d\times d`), ``mlp.in`` (:math:`128\times d`) and ``mlp.out``
(:math:`d\times128`) — are trained by ``torch.optim.Muon``; the embeddings ``embed``, ``pos`` and the
unembedding ``unembed`` by ``torch.optim.AdamW`` (:func:`train`). All weights are stored as
``(out, in)``, so a layer applies :math:`x \mapsto xW^\top`.

Everything is written functionally (:func:`logits` of a parameter dict), so ``torch.func``'s
``vmap(grad(ℓ))`` gives the per-example gradients (:func:`per_example_gradients`); BackPACK has no
attention layer, so the unit tests check them against central finite differences. Batch means at a
checkpoint are drawn from per-example gradients computed once, by the exact with-replacement counts of
:func:`batch_counts` (any batch size, cost independent of it).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch.func import grad, vmap

from .. import checks
from . import Checkpoint as _Checkpoint
from ..device import DTYPE
from ..device import device as _device
from ..seeds import generator as _generator

P = 67
"""The modulus :math:`p` (a prime, at least the width so that the hidden gradients can have full rank);
the vocabulary is the :math:`p` residues."""
WIDTH, HEADS, MLP = 64, 4, 128
TRAIN_FRACTION = 0.3
HIDDEN = ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.in", "mlp.out")
"""The hidden matrices: the ones ``torch.optim.Muon`` trains and Part IV studies."""
OTHER = ("embed", "pos", "unembed")
NAMES = HIDDEN + OTHER
MAX_STEPS, MAX_EXAMPLES = 100_000, 1_000_000
"""Largest step :func:`train` and largest ``n`` :func:`batch_counts` accept (guards against typos that would hang)."""
LR_MUON, LR_ADAMW, MOMENTUM, WEIGHT_DECAY = 0.02, 3e-3, 0.95, 0.1
"""Defaults of :func:`train`: Muon's and AdamW's learning rates, Muon's momentum, the (decoupled) weight decay."""


def shapes(p: int = P, width: int = WIDTH, mlp: int = MLP) -> dict:
    """The shape of every parameter, ``{name: (rows, cols)}``, for modulus ``p``, width (a multiple of
    ``HEADS``) and MLP width."""
    p = checks.count(p, "p", minimum=2)
    width = checks.count(width, "width")
    mlp = checks.count(mlp, "mlp")
    if width % HEADS:
        raise ValueError(f"width must be a multiple of HEADS = {HEADS}, got {width!r}")
    return {"attn.q": (width, width), "attn.k": (width, width), "attn.v": (width, width),
            "attn.o": (width, width), "mlp.in": (mlp, width), "mlp.out": (width, mlp),
            "embed": (p, width), "pos": (2, width), "unembed": (p, width)}


class Modular(NamedTuple):
    """The split data: ``tokens_*`` are ``(n, 2)`` int64 sequences ``(a, b)``, ``y_*`` the ``(n,)`` labels."""
    p: int
    tokens_train: torch.Tensor
    y_train: torch.Tensor
    tokens_test: torch.Tensor
    y_test: torch.Tensor


Checkpoint = _Checkpoint
"""The networks' shared training record (:class:`gradnoise.networks.Checkpoint`)."""


def data(p: int = P, train_fraction: float = TRAIN_FRACTION, device=None) -> Modular:
    r"""All :math:`p^2` pairs :math:`(a, b)` as sequences :math:`(a, b)` with labels :math:`(a+b) \bmod p`,
    split by a permutation from ``generator("modular:split")`` (on the CPU); the first
    ``round(train_fraction·p²)`` pairs of it are the training set."""
    p = checks.count(p, "p", minimum=2)
    device = checks.torch_device(device)
    checks.allocation((p * p, 4), torch.int64, "p (p^2 pairs)")
    if not (isinstance(train_fraction, (int, float)) and not isinstance(train_fraction, bool)
            and 0 < train_fraction < 1):
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction!r}")
    n_train = round(train_fraction * p * p)
    if not 2 <= n_train <= p * p - 1:
        raise ValueError(f"train_fraction = {train_fraction!r} leaves {n_train} of {p * p} pairs for training")
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    tokens = torch.stack([a, b], dim=-1)
    y = (a + b) % p
    perm = torch.randperm(p * p, generator=_generator("modular:split", device="cpu"))
    tr, te = perm[:n_train], perm[n_train:]
    dev = device
    return Modular(p, tokens[tr].to(dev), y[tr].to(dev), tokens[te].to(dev), y[te].to(dev))


def initial_parameters(p: int = P, gen: torch.Generator | None = None, device=None) -> dict:
    r"""Gaussian initialisation from ``gen`` (default ``generator("modular:init")`` on the CPU): every
    matrix :math:`(\text{out}, \text{in})` has entries :math:`N(0, 1/\text{in})`, the embeddings
    ``embed`` and ``pos`` :math:`N(0, 1)`; the result is float64 on ``device`` (the book's by default)."""
    p = checks.count(p, "p", minimum=2)
    device = checks.torch_device(device)
    checks.allocation((p, WIDTH), DTYPE, "p (the p x width embedding)")
    gen = checks.generator(gen if gen is not None else _generator("modular:init", device="cpu"), "gen")
    dev = device
    out = {}
    for name, shape in shapes(p).items():
        std = 1.0 if name in ("embed", "pos") else shape[1] ** -0.5
        out[name] = (std * torch.randn(shape, generator=gen, dtype=DTYPE, device=gen.device)).to(dev)
    return out


def _check_params(params) -> int:
    """Check a parameter dict (leading dimensions not allowed) and return its modulus ``p``."""
    if not isinstance(params, dict) or set(params) != set(NAMES):
        raise ValueError(f"params must be a dict with keys {NAMES}")
    p = params["unembed"].shape[0] if isinstance(params["unembed"], torch.Tensor) else 0
    for name, shape in shapes(max(p, 2)).items():
        t = params[name]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
            raise ValueError(f"params[{name!r}] must have shape {shape}")
        checks.matrix(t, f"params[{name!r}]")
        if t.dtype != DTYPE:
            raise ValueError(f"params[{name!r}] must be float64 (the package's precision), got {t.dtype}")
    return p


def _check_tokens(tokens: torch.Tensor, p: int, name: str = "tokens") -> None:
    if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.int64 or tokens.shape[-1:] != (2,):
        raise ValueError(f"{name} must be an int64 tensor of shape (..., 2)")
    if tokens.numel() == 0:
        raise ValueError(f"{name} is empty")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= p):
        raise ValueError(f"{name} must lie in [0, {p}) (p = {p})")


def _check_labels(y: torch.Tensor, tokens: torch.Tensor, p: int) -> None:
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != tokens.shape[:-1]:
        raise ValueError(f"y must be an int64 tensor of shape {tuple(tokens.shape[:-1])}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= p):
        raise ValueError(f"y must lie in [0, {p})")


def _forward(params: dict, tokens: torch.Tensor) -> torch.Tensor:
    """The logits at the last position for ``tokens`` ``(..., 2)`` (no checks: used under ``vmap``).

    Only the last position's residual stream reaches the logits, so only its query, its attention
    output and its MLP are computed (the causal mask lets it see both positions): the same function of
    the parameters as the full causal layer's last position, at about half the cost.
    """
    x = params["embed"][tokens] + params["pos"]                       # (..., 2, d)
    d = x.shape[-1]
    dh = d // HEADS
    last = x[..., -1, :]                                               # (..., d)
    q = (last @ params["attn.q"].T).unflatten(-1, (HEADS, 1, dh))      # (..., H, 1, dh)
    k, v = ((x @ params[f"attn.{c}"].T).unflatten(-1, (HEADS, dh)).transpose(-2, -3) for c in "kv")
    att = torch.softmax(q @ k.transpose(-1, -2) / dh**0.5, dim=-1)     # (..., H, 1, 2)
    z = (att @ v).flatten(-3)                                          # (..., d)
    h = last + z @ params["attn.o"].T
    h = h + torch.relu(h @ params["mlp.in"].T) @ params["mlp.out"].T
    return h @ params["unembed"].T


def logits(params: dict, tokens: torch.Tensor) -> torch.Tensor:
    r""":math:`f_\theta` for ``tokens`` ``(..., 2)`` → ``(..., p)``: the transformer of the module docstring."""
    p = _check_params(params)
    _check_tokens(tokens, p)
    return _forward(params, tokens)


def losses(params: dict, tokens: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""The training loss :math:`L(\theta) = \frac1n\sum_i\ell(x_i;\theta)` (mean cross-entropy), a 0-d tensor."""
    p = _check_params(params)
    _check_tokens(tokens, p)
    _check_labels(y, tokens, p)
    return torch.nn.functional.cross_entropy(_forward(params, tokens), y)


def accuracy(params: dict, tokens: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``(tokens, y)`` classified correctly (argmax of the logits)."""
    p = _check_params(params)
    _check_tokens(tokens, p)
    _check_labels(y, tokens, p)
    with torch.no_grad():
        return (_forward(params, tokens).argmax(-1) == y).to(DTYPE).mean().item()


def _example_loss(params: dict, tokens: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    z = _forward(params, tokens.unsqueeze(0))
    return torch.nn.functional.cross_entropy(z, y.unsqueeze(0))


def per_example_gradients(params: dict, tokens: torch.Tensor, y: torch.Tensor, names=HIDDEN,
                          chunk: int = 1024) -> dict:
    r"""Per-example gradients :math:`G(x_i) = \nabla_\theta\ell(x_i;\theta)` of the parameters ``names``
    (default: the hidden matrices), a dict of ``(n, *shape)``: ``vmap(grad(ℓ))`` over the examples, in
    chunks of ``chunk`` examples. Parameters not in ``names`` are held fixed."""
    p = _check_params(params)
    _check_tokens(tokens, p)
    _check_labels(y, tokens, p)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (n, 2), got shape {tuple(tokens.shape)}")
    try:
        names = tuple(names)
    except TypeError:
        raise ValueError(f"names must be a non-empty subset of {NAMES}, got {names!r}") from None
    if not names or any(n not in NAMES for n in names):
        raise ValueError(f"names must be a non-empty subset of {NAMES}, got {names!r}")
    chunk = checks.count(chunk, "chunk")
    fixed = {n: params[n].detach() for n in NAMES if n not in names}

    def loss(free, t, label):
        return _example_loss({**fixed, **free}, t, label)

    g = vmap(grad(loss), in_dims=(None, 0, 0))
    free = {n: params[n].detach() for n in names}
    parts = [g(free, tokens[i:i + chunk], y[i:i + chunk]) for i in range(0, tokens.shape[0], chunk)]
    return {n: torch.cat([part[n] for part in parts]) for n in names}


def full_gradient(params: dict, tokens: torch.Tensor, y: torch.Tensor) -> dict:
    r"""The full-batch gradient :math:`\nabla_\theta L(\theta)` of every parameter, a dict, by one
    backward pass through the mean loss (independent of the per-example route)."""
    _check_params(params)
    leaves = {n: params[n].detach().clone().requires_grad_(True) for n in NAMES}
    g = torch.autograd.grad(losses(leaves, tokens, y), [leaves[n] for n in NAMES])
    return dict(zip(NAMES, g))


def train(steps=(0, 10, 50, 200), dataset: Modular | None = None, lr_muon: float = LR_MUON,
          lr_adamw: float = LR_ADAMW, momentum: float = MOMENTUM, weight_decay: float = WEIGHT_DECAY) -> list:
    r"""Full-batch training from :func:`initial_parameters`: ``torch.optim.Muon`` (learning rate
    ``lr_muon``, ``momentum``, Nesterov, ``weight_decay``, torch's Newton–Schulz) on the hidden matrices
    ``HIDDEN``, ``torch.optim.AdamW`` (``lr_adamw``, ``weight_decay``) on ``embed``, ``pos`` and
    ``unembed``. Returns a :class:`Checkpoint` after each of ``steps`` (non-negative integers, returned
    sorted; step 0 is the initialisation). Deterministic given ``GRADNOISE_SEED`` (full batch: no sampling).
    """
    try:
        steps = tuple(steps)
    except TypeError:
        raise ValueError(f"steps must be a sequence of non-negative integers, got {steps!r}") from None
    if not steps or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_STEPS for s in steps):
        raise ValueError(f"steps must be non-empty integers in [0, {MAX_STEPS}], got {steps!r}")
    lr_muon = checks.positive_real(lr_muon, "lr_muon")
    lr_adamw = checks.positive_real(lr_adamw, "lr_adamw")
    momentum = checks.decay(momentum, "momentum")
    weight_decay = checks.positive_real(weight_decay, "weight_decay", allow_zero=True)
    if dataset is not None and not isinstance(dataset, Modular):
        raise ValueError(f"dataset must be a Modular (from data()) or None, got {type(dataset).__name__}")
    d = dataset if dataset is not None else data()
    params = {n: t.requires_grad_(True) for n, t in
              initial_parameters(d.p, device=d.tokens_train.device).items()}
    muon = torch.optim.Muon([params[n] for n in HIDDEN], lr=lr_muon, momentum=momentum,
                            weight_decay=weight_decay)
    adamw = torch.optim.AdamW([params[n] for n in OTHER], lr=lr_adamw, weight_decay=weight_decay)
    out, step = [], 0
    for target in sorted(set(steps)):
        while step < target:
            muon.zero_grad()
            adamw.zero_grad()
            losses(params, d.tokens_train, d.y_train).backward()
            muon.step()
            adamw.step()
            step += 1
        snap = {n: params[n].detach().clone() for n in NAMES}
        with torch.no_grad():
            loss = losses(snap, d.tokens_train, d.y_train).item()
        out.append(Checkpoint(step, snap, loss, accuracy(snap, d.tokens_train, d.y_train),
                              accuracy(snap, d.tokens_test, d.y_test)))
    return out


def batch_counts(n: int, batch: int, shape, gen: torch.Generator, dtype=DTYPE) -> torch.Tensor:
    r"""How often each of ``n`` examples is drawn in minibatches of ``batch`` draws **with replacement**,
    ``(*shape, n)``: exact multinomial counts :math:`\mathrm{Mult}(\text{batch}; 1/n, \dots, 1/n)`, by
    the chain of conditional binomials :math:`c_i \sim \mathrm{Bin}(\text{batch} - \sum_{j<i}c_j,\ 1/(n-i))`.

    The cost is :math:`n` binomial draws per batch whatever ``batch`` is, so batch sizes far beyond
    :math:`n` (:math:`10^5` and more) cost what small ones do; the batch mean of per-example rows
    ``g`` ``(n, d)`` is ``counts @ g / batch``. Draws from ``gen`` (on its device).
    """
    n = checks.count(n, "n", maximum=MAX_EXAMPLES)
    batch = checks.count(batch, "batch")
    gen = checks.generator(gen, "gen")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    try:
        shape = tuple(checks.count(s, "shape entry") for s in shape)
    except TypeError:
        raise ValueError(f"shape must be a sequence of positive integers, got {shape!r}") from None
    checks.allocation((*shape, n), dtype, "batch_counts")
    left = torch.full(shape, float(batch), dtype=torch.float64, device=gen.device)
    counts = torch.empty((*shape, n), dtype=torch.float64, device=gen.device)
    for i in range(n - 1):
        c = torch.binomial(left, torch.full_like(left, 1.0 / (n - i)), generator=gen)
        counts[..., i] = c
        left = left - c
    counts[..., n - 1] = left
    return counts.to(dtype)
