r"""Training the digits MLP with ``torch.optim.Muon``: plain, Richardson-corrected and larger-batch arms,
over a grid of learning rates and many seeds at once.

The hidden matrix :math:`W_1` (``"0.weight"``, :math:`32\times64`) is trained by ``torch.optim.Muon``
itself (torch's defaults except ``weight_decay=0``: momentum :math:`\mu = 0.95`, Nesterov, five
Newton–Schulz steps in bfloat16, shape factor ``"original"``); the other parameters (biases and the output
layer :math:`W_2`) by ``torch.optim.SGD`` with learning rate ``lr_other``. torch's documentation asks
for "a standard method such as AdamW" for parameters that are not hidden matrices; plain SGD is the
simplest such method and keeps that part of every arm identical and linear in its gradient.

Every step draws, per seed (a *chain*), :math:`3k` example indices with replacement; the arms use
prefixes of the same indices, so all arms and all learning rates of one chain see the same data in the
same order (paired seeds). With :math:`g_k` the mean gradient of the first :math:`k` examples and
:math:`g_{2k}` that of the first :math:`2k`, the arms (``ARMS``) are

- ``"muon-k"``, ``"muon-2k"``, ``"muon-3k"``: plain Muon on :math:`g_k`, :math:`g_{2k}`, :math:`g_{3k}`;
- ``"richardson"``: :math:`W_1 \leftarrow W_1 - \eta\,\bigl(2\,\mathrm{NS}_5(\tilde B_{2k}) - \mathrm{NS}_5(\tilde B_k)\bigr)`,
  where :math:`\tilde B_{2k}` and :math:`\tilde B_k` are the Nesterov inputs of two torch buffers, fed
  :math:`g_{2k}` and :math:`g_k` (the nested design: :math:`2k` examples, and :math:`g_{2k}` is the mean of
  the two halves' gradients, so only :math:`2k` per-example gradients are computed). torch's class cannot
  take a difference of two Newton–Schulz outputs, so two ``torch.optim.Muon`` instances compute the two
  updates: one acts on :math:`W_1` with learning rate :math:`2\eta`, the other on a zeroed shadow copy with
  learning rate :math:`\eta`, whose displacement is then subtracted from :math:`W_1`;
- ``"richardson-gradient"``: torch's Muon fed the corrected *gradient* :math:`2g_{2k} - g_k` (Richardson
  before the non-linear map: a wrong implementation of the direction-level correction, kept to tell the
  two apart).

``engine="model"`` runs the same arms with :func:`gradnoise.muon.step` (the package's bit-for-bit model of
torch's update) instead of torch's class, to show the two equal.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import torch

from .. import checks
from .. import muon as _muon
from .. import pergrad

ARMS = ("muon-k", "muon-2k", "muon-3k", "richardson", "richardson-gradient")
"""The arms :func:`train` knows (see the module's docstring)."""
MOMENTUM = 0.95
"""torch's default Muon momentum :math:`\\mu`."""
LR_OTHER = 0.1
"""SGD's learning rate for the parameters that are not hidden matrices."""
HIDDEN = "0.weight"
"""The hidden matrix trained by Muon."""
OTHER = tuple(n for n in pergrad.NAMES if n != HIDDEN)


class Run(NamedTuple):
    """What :func:`train` returns for one arm; ``L`` learning rates by ``C`` chains.

    ``curve``: training loss (full training set) at the steps ``recorded``, ``(R, L, C)``; ``loss`` and
    ``test_accuracy``: after the last step, ``(L, C)``; ``direction_norm``: the mean over steps of the
    Frobenius norm of :math:`W_1`'s update divided by the learning rate times torch's shape factor (the norm of
    the direction, about :math:`\\sqrt{32}` for one Newton–Schulz output), ``(L, C)``; ``seconds``: wall-clock
    seconds of the arm's steps (gradients and optimizer, all chains and learning rates), summed over steps;
    ``params``: the final parameters, a dict of ``(L, C, *shape)`` tensors.
    """
    recorded: torch.Tensor
    curve: torch.Tensor
    loss: torch.Tensor
    test_accuracy: torch.Tensor
    direction_norm: torch.Tensor
    seconds: float
    params: dict


def _check_lrs(lrs) -> tuple:
    if isinstance(lrs, (str, bytes)) or not hasattr(lrs, "__iter__"):
        raise ValueError(f"lrs must be a sequence of positive numbers, got {checks._short(lrs)}")
    lrs = tuple(checks.real(v, "lrs", low=0, low_open=True) for v in lrs)
    if not lrs:
        raise ValueError("lrs must be a non-empty sequence of positive numbers")
    return lrs


def muon_views(W: torch.Tensor) -> list:
    """The 2-D matrices of ``W`` ``(L, C, m, n)`` as a list of lists of views (``[l][c]``), for torch's optimizers.

    ``W`` must not require grad, so that its views are leaf tensors that an optimizer may update in place
    (updating a view updates ``W``)."""
    checks.matrix(W, "W", min_ndim=4)
    if W.ndim != 4 or W.requires_grad:
        raise ValueError(f"W must be (L, C, m, n) and not require grad, got {tuple(W.shape)}")
    return [[W[l, c] for c in range(W.shape[1])] for l in range(W.shape[0])]


def torch_muon(W: torch.Tensor, lrs, momentum: float = MOMENTUM) -> tuple:
    """``torch.optim.Muon`` over the matrices of ``W`` ``(L, C, m, n)``, one parameter group per learning rate.

    ``weight_decay=0``, Nesterov, torch's other defaults. Returns ``(optimizer, flat list of parameters)``
    in the order of ``W.reshape(-1, m, n)``, for :func:`set_grads`."""
    lrs = _check_lrs(lrs)
    momentum = checks.decay(momentum, "momentum")
    views = muon_views(W)
    if len(views) != len(lrs):
        raise ValueError(f"W has {len(views)} learning-rate rows but lrs has {len(lrs)} values")
    opt = torch.optim.Muon([{"params": v, "lr": lr} for v, lr in zip(views, lrs)], weight_decay=0.0,
                           momentum=momentum, nesterov=True)
    return opt, [p for v in views for p in v]


def set_grads(params: list, grads: torch.Tensor) -> None:
    """Give each matrix of ``params`` (from :func:`torch_muon`) its gradient from ``grads`` ``(L, C, m, n)``."""
    if not isinstance(params, (list, tuple)) or not all(isinstance(p, torch.Tensor) for p in params):
        raise ValueError(f"params must be the list of parameters torch_muon returns, got {checks._short(params)}")
    checks.matrix(grads, "grads")
    flat = grads.reshape(-1, *grads.shape[-2:])
    if len(params) != flat.shape[0]:
        raise ValueError(f"params: {len(params)} parameters but grads holds {flat.shape[0]} gradients")
    for p, g in zip(params, flat):
        if g.shape != p.shape or g.dtype != p.dtype or g.device != p.device:
            raise ValueError(f"grads must hold one gradient of each parameter's shape {tuple(p.shape)}, dtype and "
                             f"device, got {tuple(g.shape)} {g.dtype} {g.device}")
    for p, g in zip(params, flat):
        p.grad = g


class _Arm:
    """One arm's state: parameters ``(L, C, ...)``, optimizers (torch's or the model's buffers)."""

    def __init__(self, name, init, lrs, k, lr_other, momentum, engine):
        self.name, self.k, self.lrs, self.momentum, self.engine = name, k, lrs, momentum, engine
        L = len(lrs)
        self.th = {n: init[n].detach().unsqueeze(0).expand(L, *init[n].shape).clone() for n in pergrad.NAMES}
        self.lr_col = torch.tensor(lrs, dtype=init[HIDDEN].dtype, device=init[HIDDEN].device)[:, None]
        self.factor = _muon.adjusted_lr(1.0, pergrad.SHAPES[HIDDEN])
        self.sgd = torch.optim.SGD([self.th[n] for n in OTHER], lr=lr_other)
        W = self.th[HIDDEN]
        if engine == "torch":
            scale = 2 if name == "richardson" else 1          # the 2 of 2 NS(B_2k) - NS(B_k)
            self.opt, self.params = torch_muon(W, [scale * v for v in lrs], momentum)
            if name == "richardson":
                self.shadow = torch.zeros_like(W)
                self.opt_k, self.params_k = torch_muon(self.shadow, lrs, momentum)
        else:
            self.buf, self.buf_k = torch.zeros_like(W), torch.zeros_like(W)
        self.norm_sum = torch.zeros(W.shape[:2], dtype=W.dtype, device=W.device)
        self.seconds, self.steps = 0.0, 0

    def _model(self, W, g, buf, scale):
        """The package's model of torch's step, one learning rate at a time (``scale`` multiplies each lr)."""
        out, bufs = [], []
        for l, lr in enumerate(self.lrs):
            w, b, _ = _muon.step(W[l], g[l], buf[l], lr=scale * lr, weight_decay=0.0, momentum=self.momentum)
            out.append(w)
            bufs.append(b)
        return torch.stack(out), torch.stack(bufs)

    def step(self, x, y, idx):
        start = time.perf_counter()
        k, th = self.k, self.th
        if self.name in ("muon-k", "muon-2k", "muon-3k"):
            b = {"muon-k": k, "muon-2k": 2 * k, "muon-3k": 3 * k}[self.name]
            g = pergrad.minibatch_gradient(th, x[idx[:, :b]], y[idx[:, :b]])
            g_hidden, g_k = g[HIDDEN], None
        else:
            g_a = pergrad.minibatch_gradient(th, x[idx[:, :k]], y[idx[:, :k]])
            g_b = pergrad.minibatch_gradient(th, x[idx[:, k:2 * k]], y[idx[:, k:2 * k]])
            g = {n: (g_a[n] + g_b[n]) / 2 for n in pergrad.NAMES}
            g_k = g_a[HIDDEN]
            g_hidden = g[HIDDEN]
            if self.name == "richardson-gradient":
                g_hidden, g_k = 2 * g[HIDDEN] - g_k, None
        W = th[HIDDEN]
        before = W.clone()
        if self.engine == "torch":
            set_grads(self.params, g_hidden)
            self.opt.step()
            if g_k is not None:
                self.shadow.zero_()
                set_grads(self.params_k, g_k)
                self.opt_k.step()
                W.sub_(self.shadow)
        else:
            new, self.buf = self._model(W, g_hidden, self.buf, 2.0 if g_k is not None else 1.0)
            if g_k is not None:
                shadow, self.buf_k = self._model(torch.zeros_like(W), g_k, self.buf_k, 1.0)
                new = new - shadow
            W.copy_(new)
        for n in OTHER:
            th[n].grad = g[n]
        self.sgd.step()
        self.seconds += time.perf_counter() - start
        self.steps += 1
        self.norm_sum += torch.linalg.vector_norm((W - before).flatten(-2), dim=-1) / (self.lr_col * self.factor)


def train(data: pergrad.Digits, init: dict, lrs, k: int, steps: int, draws: torch.Generator, arms=ARMS[1:4],
          lr_other: float = LR_OTHER, momentum: float = MOMENTUM, record_every: int = 10,
          engine: str = "torch") -> dict:
    r"""Train every arm of ``arms`` at every learning rate of ``lrs`` from the chains' initialisations ``init``.

    ``init``: parameters with one leading chain dimension ``C`` (e.g. stacked
    :func:`gradnoise.pergrad.initial_parameters`). ``lrs``: Muon's learning rates :math:`\eta` (torch's
    ``lr``; the step of :math:`W_1` is :math:`\eta\sqrt{\max(1, 32/64)} = \eta`). ``k``: the batch unit.
    ``draws``: the generator of the minibatch indices, ``(C, 3k)`` per step, shared by all arms and
    learning rates (paired). ``record_every``: the training loss is recorded at step 0 and every
    ``record_every`` steps (and after the last). ``engine``: ``"torch"`` (``torch.optim.Muon``) or
    ``"model"`` (:func:`gradnoise.muon.step`). Returns ``{arm: Run}``.
    """
    if not isinstance(data, pergrad.Digits):
        raise ValueError(f"data must be the digits data set (gradnoise.pergrad.digits()), got {type(data).__name__}")
    try:
        pergrad._check_params(init)
    except ValueError as err:
        raise ValueError(f"init: {err}") from None
    if init[HIDDEN].dtype != data.x_train.dtype or init[HIDDEN].device != data.x_train.device:
        raise ValueError(f"init must have data's dtype and device ({data.x_train.dtype}, {data.x_train.device})")
    if init[HIDDEN].ndim != 3:
        raise ValueError(f"init must carry one leading chain dimension, got {tuple(init[HIDDEN].shape)}")
    lrs = _check_lrs(lrs)
    k = checks.positive_int(k, "k")
    steps = checks.steps(steps, minimum=1)
    record_every = checks.positive_int(record_every, "record_every")
    checks.generator(draws, "draws")
    lr_other = checks.real(lr_other, "lr_other", low=0)
    momentum = checks.decay(momentum, "momentum")
    checks.allocation((init[HIDDEN].shape[0], 3 * k), torch.float64, "k (3k indices per chain and step)", copies=2)
    if engine not in ("torch", "model"):
        raise ValueError(f"engine must be 'torch' or 'model', got {engine!r}")
    if isinstance(arms, (str, bytes)) or not hasattr(arms, "__iter__"):
        raise ValueError(f"arms must be a selection of {ARMS}, got {checks._short(arms)}")
    arms = tuple(arms)
    if not arms or any(a not in ARMS for a in arms):
        raise ValueError(f"arms must be a non-empty selection of {ARMS}, got {arms!r}")
    x, y, n = data.x_train, data.y_train, data.x_train.shape[0]
    chains = init[HIDDEN].shape[0]
    state = {a: _Arm(a, init, lrs, k, lr_other, momentum, engine) for a in arms}
    checks.allocation((steps // record_every + 2, len(lrs), chains), torch.float64, "steps / record_every (the curves)")
    rec_steps = sorted(set(range(0, steps, record_every)) | {steps})
    curves = {a: [] for a in arms}
    for t in range(steps + 1):
        if t in rec_steps:
            for a in arms:
                curves[a].append(pergrad.losses(state[a].th, x, y))
        if t == steps:
            break
        idx = pergrad.batch_indices(n, 3 * k, (chains,), draws)
        for a in arms:
            state[a].step(x, y, idx)
    out = {}
    for a in arms:
        s = state[a]
        th = {m: v.detach() for m, v in s.th.items()}
        acc = (pergrad.logits(th, data.x_test).argmax(-1) == data.y_test).to(x.dtype).mean(-1)
        out[a] = Run(torch.tensor(rec_steps), torch.stack(curves[a]), curves[a][-1], acc,
                     s.norm_sum / s.steps, s.seconds, th)
    return out
