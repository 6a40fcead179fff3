r"""Muon's update as ``torch.optim.Muon`` computes it, batched, and the noise factor of its buffer.

``torch.optim.Muon`` (source ``torch/optim/_muon.py``, torch 2.13) updates a 2-D parameter
:math:`\theta` with gradient :math:`g_t` and momentum :math:`\mu` as

.. math::
    B_t = \mu B_{t-1} + (1-\mu)\,g_t \quad(\texttt{buf.lerp\_(grad, 1-mu)}),\qquad
    \tilde B_t = \begin{cases}(1-\mu)\,g_t + \mu B_t & \text{Nesterov}\ (\texttt{grad.lerp(buf, mu)})\\
    B_t & \text{otherwise}\end{cases}

    \theta_t = (1 - \eta\lambda)\,\theta_{t-1} - \eta\,r(m, n)\,\mathrm{NS}_5(\tilde B_t),

with :math:`B_0 = 0`, learning rate :math:`\eta`, decoupled weight decay :math:`\lambda` (applied with the
*unadjusted* :math:`\eta`) and the shape factor :math:`r(m, n) = \sqrt{\max(1, m/n)}` (``"original"``) or
:math:`0.2\sqrt{\max(m, n)}` (``"match_rms_adamw"``). The buffer is an exponential moving average: its
weights on :math:`g_{t-j}` are :math:`(1-\mu)\mu^j`, not the :math:`\mu^j` of a momentum *sum*
(torch's documentation writes :math:`B_t = \mu B_{t-1} + g_t`; the two differ by the scale
:math:`1-\mu`, which :math:`\mathrm{NS}_5`'s normalisation removes up to rounding).

:func:`newton_schulz` reproduces torch's helper ``_zeropower_via_newtonschulz`` bit for bit: the same
bfloat16 cast, the same normalisation, and the same fused ``addmm`` calls. Functions here keep torch's
precision (they are a model of torch's arithmetic), unlike the rest of the package, which is float64.
"""
from __future__ import annotations

import math

import torch

from . import checks

COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""Muon's quintic Newton–Schulz coefficients ``(a, b, c)`` (torch's defaults)."""

EPS = 1e-7
"""Floor of the Frobenius norm in the normalisation (torch's default ``eps``)."""


def _check_coefficients(coefficients) -> tuple[float, float, float]:
    if isinstance(coefficients, (str, bytes)) or not hasattr(coefficients, "__len__") or len(coefficients) != 3:
        raise ValueError(f"coefficients must be three finite numbers (a, b, c), got {checks._short(coefficients)}")
    a, b, c = (checks.real(x, "coefficients") for x in coefficients)
    return a, b, c


def _eps(eps) -> float:
    return checks.real(eps, "eps", low=0, low_open=True)


def _ns_steps(steps, name: str = "steps") -> int:
    return checks.count(steps, name, minimum=1, maximum=100)


def _pair(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Two finite floating tensors of the same shape, dtype and device (as torch's optimizer keeps them)."""
    checks.tensor(a, name_a)
    checks.tensor(b, name_b)
    checks.same_shape(a, b, name_a, name_b)
    checks.same_kind(a, b, name_a, name_b)


def _iterate_one(X: torch.Tensor, steps: int, a: float, b: float, c: float) -> torch.Tensor:
    for _ in range(steps):
        gram = X @ X.T
        gram_update = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        X = torch.addmm(X, gram_update, X, beta=a)
    return X


def _iterate_batched(X: torch.Tensor, steps: int, a: float, b: float, c: float) -> torch.Tensor:
    for _ in range(steps):
        gram = X @ X.mT
        gram_update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        X = torch.baddbmm(X, gram_update, X, beta=a)
    return X


def newton_schulz(G: torch.Tensor, steps: int = 5, coefficients=COEFFICIENTS, eps: float = EPS,
                  dtype: torch.dtype = torch.bfloat16, exact: bool = True) -> torch.Tensor:
    r""":math:`\mathrm{NS}_{\rm steps}(G)`, Muon's approximation of :math:`\mathrm{Ortho}(G)`, exactly as torch fuses it.

    ``X = G.to(dtype)``, transposed if tall, divided by ``max(||X||_F, eps)``; then ``steps`` times
    :math:`A = XX^\top`, :math:`B = bA + cA^2` (one ``addmm``), :math:`X \leftarrow aX + BX` (one
    ``addmm``). On singular values this is the odd polynomial :math:`p(x) = ax + bx^3 + cx^5` applied
    ``steps`` times to :math:`\sigma_i/\|G\|_F`. The result is returned in ``dtype`` (torch returns
    bfloat16). ``dtype=torch.bfloat16`` (torch's only choice) with ``exact=True`` equals torch's
    ``_zeropower_via_newtonschulz`` bit for bit on every matrix of the batch: each matrix goes through the
    same 2-D ``addmm`` kernel. ``exact=False`` runs one batched ``baddbmm`` instead, about 30 times faster on
    small matrices; its bfloat16 result differs from torch's by one rounding in roughly one entry in
    :math:`10^5`. Batched over leading dimensions.
    """
    checks.matrix(G, "G")
    steps = _ns_steps(steps)
    a, b, c = _check_coefficients(coefficients)
    eps = _eps(eps)
    checks.floating_dtype(dtype)
    checks.flag(exact, "exact")
    X = G.to(dtype)
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = X.mT
    lead, shape = X.shape[:-2], X.shape[-2:]
    X = X.reshape(-1, *shape)
    norms = torch.linalg.vector_norm(X.flatten(-2), dim=-1).clamp(min=eps)   # rounded to dtype, as X.norm()
    X = X / norms[:, None, None]
    if exact:
        X = torch.stack([_iterate_one(x, steps, a, b, c) for x in X])
    else:
        X = _iterate_batched(X, steps, a, b, c)
    X = X.reshape(*lead, *shape)
    return X.mT if tall else X


def singular_value_map(x: torch.Tensor, steps: int = 5, coefficients=COEFFICIENTS) -> torch.Tensor:
    r"""The scalar map :math:`p^{\circ\,\rm steps}(x)`, :math:`p(x) = ax + bx^3 + cx^5`, elementwise.

    In exact arithmetic :math:`\mathrm{NS}(G) = U\,p^{\circ\,\rm steps}(S/\|G\|_F)\,V^\top` for
    :math:`G = USV^\top`; this is that map on the normalised singular values ``x``.
    """
    checks.tensor(x, "x", allow_empty=True)
    steps = _ns_steps(steps)
    a, b, c = _check_coefficients(coefficients)
    for _ in range(steps):
        x2 = x * x
        x = x * (a + x2 * (b + c * x2))
    return x


def adjusted_lr(lr: float, shape, adjust_lr_fn: str | None = None) -> float:
    r"""torch's learning rate for a parameter of ``shape = (m, n)``: :math:`\eta\,r(m, n)`.

    ``None`` or ``"original"``: :math:`r = \sqrt{\max(1, m/n)}`; ``"match_rms_adamw"``:
    :math:`r = 0.2\sqrt{\max(m, n)}`.
    """
    lr = checks.real(lr, "lr", low=0)
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) < 2:
        raise ValueError(f"shape must have at least two dimensions, got {checks._short(shape)}")
    m, n = checks.count(shape[-2], "shape"), checks.count(shape[-1], "shape")
    checks.choice(adjust_lr_fn, "adjust_lr_fn", (None, "original", "match_rms_adamw"))
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, m / n))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * (0.2 * math.sqrt(max(m, n)))          # torch's rounding: lr * ratio
    raise ValueError(f"adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got {adjust_lr_fn!r}")


def buffer_update(buf: torch.Tensor, grad: torch.Tensor, momentum: float) -> torch.Tensor:
    r"""torch's momentum buffer after one step: :math:`B_t = \mu B_{t-1} + (1-\mu) g_t` (``lerp``, not a sum)."""
    _pair(buf, grad, "buf", "grad")
    momentum = checks.decay(momentum, "momentum")
    return torch.lerp(buf, grad, 1 - momentum)


def nesterov_mix(grad: torch.Tensor, buf: torch.Tensor, momentum: float) -> torch.Tensor:
    r"""torch's Nesterov input to Newton–Schulz: :math:`(1-\mu)g_t + \mu B_t` (``grad.lerp(buf, mu)``)."""
    _pair(grad, buf, "grad", "buf")
    momentum = checks.decay(momentum, "momentum")
    return torch.lerp(grad, buf, momentum)


def step(param: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor, lr: float = 1e-3, weight_decay: float = 0.1,
         momentum: float = 0.95, nesterov: bool = True, coefficients=COEFFICIENTS, eps: float = EPS,
         ns_steps: int = 5, adjust_lr_fn: str | None = None, exact: bool = True):
    r"""One ``torch.optim.Muon`` step, functionally: returns ``(new_param, new_buf, direction)``.

    Bit for bit what ``torch.optim.Muon.step()`` does, including its aliasing of a bfloat16 buffer without
    Nesterov (see :func:`normalized_in_place_by_torch`).

    ``direction`` is :math:`\mathrm{NS}(\tilde B_t)` in bfloat16; ``new_param`` is
    :math:`(1-\eta\lambda)\theta - \eta\,r(m, n)\,\mathrm{direction}` in ``param``'s dtype. The defaults
    are torch's. Batched over leading dimensions (torch itself takes 2-D parameters only; the shape
    factor uses the last two dimensions).
    """
    checks.matrix(param, "param")
    _pair(param, grad, "param", "grad")
    _pair(grad, buf, "grad", "buf")
    momentum = checks.decay(momentum, "momentum")
    lr = checks.real(lr, "lr", low=0)
    weight_decay = checks.real(weight_decay, "weight_decay", low=0)
    checks.flag(nesterov, "nesterov")
    checks.flag(exact, "exact")
    ns_steps = _ns_steps(ns_steps, "ns_steps")
    _check_coefficients(coefficients)
    _eps(eps)
    checks.choice(adjust_lr_fn, "adjust_lr_fn", (None, "original", "match_rms_adamw"))
    new_buf = buffer_update(buf, grad, momentum)
    mixed = nesterov_mix(grad, new_buf, momentum) if nesterov else new_buf
    direction = newton_schulz(mixed, ns_steps, coefficients, eps, torch.bfloat16, exact)
    if not nesterov and buf.dtype == torch.bfloat16:
        new_buf = normalized_in_place_by_torch(new_buf, eps)
    new_param = param * (1 - lr * weight_decay)
    new_param = torch.add(new_param, direction, alpha=-adjusted_lr(lr, param.shape, adjust_lr_fn))
    return new_param, new_buf, direction


def normalized_in_place_by_torch(buf: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    r"""What torch (2.13, checked) leaves in a **bfloat16** buffer without Nesterov: :math:`B_t/\max(\|B_t\|_F, \varepsilon)`.

    torch's helper starts with ``ortho_grad = grad.bfloat16()``, which for a bfloat16 input is the input
    itself, and then divides it in place by its norm. Without Nesterov that input *is* the momentum
    buffer, so every step rescales the stored buffer to unit Frobenius norm, and the next step mixes
    :math:`\mu\,B_{t-1}/\|B_{t-1}\|_F` with :math:`(1-\mu)g_t`: the buffer is no longer an EMA of the
    gradients. (float32 and float64 buffers are copied by the cast and keep the EMA.)
    """
    checks.matrix(buf, "buf")
    eps = _eps(eps)
    X = buf.mT if buf.shape[-2] > buf.shape[-1] else buf
    norms = torch.linalg.vector_norm(X.flatten(-2), dim=-1).clamp(min=eps)
    return buf / norms[..., None, None]


def buffer_weights(momentum: float, steps: int, nesterov: bool = True, dtype=torch.float64, device=None) -> torch.Tensor:
    r"""Weights :math:`w_j` of :math:`\tilde B_t = \sum_{j<t} w_j\,g_{t-j}`, newest first, after ``steps`` steps from zero.

    Plain: :math:`w_j = (1-\mu)\mu^j`. Nesterov: :math:`w_0 = 1-\mu^2` and :math:`w_j = (1-\mu)\mu^{j+1}`
    for :math:`j \ge 1`. Over an infinite horizon both sum to 1.
    """
    mu = checks.decay(momentum, "momentum")
    steps = checks.positive_int(steps, "steps")
    checks.flag(nesterov, "nesterov")
    checks.floating_dtype(dtype)
    device = checks.torch_device(device) if device is not None else None
    checks.allocation((steps,), dtype, "steps (one weight per step)", copies=3)
    j = torch.arange(steps, dtype=dtype, device=device)
    w = (1 - mu) * mu**j
    if nesterov:
        w = w * mu
        w[0] = 1 - mu**2
    return w


def noise_factor(momentum: float, steps: int | None = None, nesterov: bool = True) -> float:
    r"""Noise factor :math:`\sum_j w_j^2` of torch's (Nesterov) buffer: :math:`\mathrm{tr}\,\mathrm{Cov}\,\tilde B_t / \mathrm{tr}(\Sigma/k)`.

    For step noises that are independent with covariance :math:`\Sigma/k`. ``steps=None`` is the
    stationary value: :math:`(1-\mu)/(1+\mu)` for the plain EMA and
    :math:`\frac{1-\mu}{1+\mu}\,(1 + 2\mu - 2\mu^3)` with Nesterov (derived in the chapter *Muon in
    torch*). After ``steps`` steps from zero it is :math:`\sum_{j<\rm steps} w_j^2` of :func:`buffer_weights`.
    """
    mu = checks.decay(momentum, "momentum")
    checks.flag(nesterov, "nesterov")
    if steps is not None:
        steps = checks.positive_int(steps, "steps")
        if steps > 10**6:         # the geometric sums in closed form (no weight vector of that length)
            tail = (1 - mu) ** 2 * (1 - mu ** (2 * steps)) / (1 - mu**2)
            if not nesterov:
                return tail
            return (1 - mu**2) ** 2 + (1 - mu) ** 2 * mu**4 * (1 - mu ** (2 * (steps - 1))) / (1 - mu**2)
    if steps is None:
        plain = (1 - mu) / (1 + mu)
        return plain * (1 + 2 * mu - 2 * mu**3) if nesterov else plain
    return float((buffer_weights(mu, steps, nesterov) ** 2).sum())
