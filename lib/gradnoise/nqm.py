r"""The noisy quadratic model (NQM) of Zhang et al. (2019): exact moments, simulation, steps to a target.

**The model.** The loss is :math:`L(\theta) = \tfrac12\sum_i h_i\theta_i^2` with curvatures :math:`h_i > 0`;
a minibatch of size :math:`B` returns the gradient :math:`h_i\theta_i + \varepsilon_i`, with
:math:`\varepsilon_i` independent across coordinates and steps, mean 0 and variance :math:`c_i/B`
(Gaussian in :func:`simulate`; the moment recursions need only the variance).

**The methods**, per coordinate, each a linear-Gaussian state :math:`x = (x_0, x_1)`:

* ``"momentum"`` (heavy ball, the note's form; :math:`\beta = 0` is plain SGD), :math:`x = (\theta, m)`:
  :math:`m' = \beta m + h\theta + \varepsilon`, :math:`\theta' = \theta - \alpha m'`, started at :math:`m = 0`;
* ``"ema"`` (SGD with an EMA of the iterates), :math:`x = (\theta, \bar\theta)`:
  :math:`\theta' = (1-\alpha h)\theta - \alpha\varepsilon`, :math:`\bar\theta' = \beta\bar\theta + (1-\beta)\theta'`,
  started at :math:`\bar\theta = \theta`;
* preconditioning by :math:`H^{-p}` (either method) multiplies the gradient by :math:`h^{-p}`: the
  dynamics are those of curvature :math:`h^{1-p}` and noise variance :math:`c\,h^{-2p}/B`
  (:func:`preconditioned`), while the loss keeps the original :math:`h`.

So :math:`x_{t+1} = A x_t + b\,\varepsilon_t` (:func:`transition`). The mean obeys :math:`\mu_{t+1} = A\mu_t`
and the raw second moment :math:`S_t = \E[x_tx_t^\top]` obeys :math:`S_{t+1} = AS_tA^\top + (c/B)\,bb^\top`;
stored as :math:`(S_{00}, S_{01}, S_{11})` this is :math:`s_{t+1} = K s_t + (c/B)\,n`
(:func:`second_moment_operator`). Everything is exact: no expansion in :math:`\alpha`.

**Shapes.** Every argument broadcasts against every other; the coordinate axis is whatever the caller
makes it (usually the last). Per-coordinate results end in a state axis of size 2 (means) or 3
(second moments). All tensors are float64 on the device of ``h``.
"""
from __future__ import annotations

import math

import torch

from .device import DTYPE, device as _device

METHODS = ("momentum", "ema")


def _t(x, ref: torch.Tensor | None = None) -> torch.Tensor:
    dev = ref.device if ref is not None else (x.device if isinstance(x, torch.Tensor) else _device())
    return torch.as_tensor(x, dtype=DTYPE, device=dev)


def _method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return method


def _positive(x: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all()) or bool((x <= 0).any()):
        raise ValueError(f"{name} must be finite and positive")


def _nonneg(x: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all()) or bool((x < 0).any()):
        raise ValueError(f"{name} must be finite and non-negative")


def _unit_interval(x: torch.Tensor, name: str) -> None:
    if not bool(((x >= 0) & (x < 1)).all()):          # NaN fails both comparisons: refused too
        raise ValueError(f"{name} must lie in [0, 1), got {x.tolist() if x.numel() <= 8 else 'values outside it'}")


def preconditioned(h, c, p=0.0):
    r"""Curvature and per-sample noise variance seen by SGD preconditioned with :math:`H^{-p}`.

    :math:`\theta' = \theta - \alpha h^{-p}(h\theta + \varepsilon)` is SGD on curvature :math:`h^{1-p}` with
    noise :math:`h^{-p}\varepsilon`, of variance :math:`c\,h^{-2p}`. Returns ``(h**(1-p), c * h**(-2p))``.
    """
    h = _t(h)
    c, p = _t(c, h), _t(p, h)
    _positive(h, "h")
    _nonneg(c, "c")
    return h ** (1 - p), c * h ** (-2 * p)


def transition(h, alpha, beta=0.0, method: str = "momentum"):
    r"""The per-coordinate linear system :math:`x' = Ax + b\varepsilon`: returns ``A`` (..., 2, 2), ``b`` (..., 2).

    ``"momentum"``, :math:`x = (\theta, m)`: :math:`A = \begin{pmatrix}1-\alpha h & -\alpha\beta\\ h & \beta\end{pmatrix}`,
    :math:`b = (-\alpha, 1)`. ``"ema"``, :math:`x = (\theta, \bar\theta)`, :math:`r = 1-\alpha h`:
    :math:`A = \begin{pmatrix}r & 0\\ (1-\beta)r & \beta\end{pmatrix}`, :math:`b = (-\alpha, -(1-\beta)\alpha)`.
    ``h`` is the curvature the dynamics see (after :func:`preconditioned`).
    """
    method = _method(method)
    h = _t(h)
    alpha, beta = _t(alpha, h), _t(beta, h)
    _positive(h, "h")
    _positive(alpha, "alpha")
    _unit_interval(beta, "beta")
    h, alpha, beta = torch.broadcast_tensors(h, alpha, beta)
    one, zero = torch.ones_like(h), torch.zeros_like(h)
    r = 1 - alpha * h
    if method == "momentum":
        A = torch.stack([torch.stack([r, -alpha * beta], -1), torch.stack([h, beta], -1)], -2)
        b = torch.stack([-alpha, one], -1)
    else:
        A = torch.stack([torch.stack([r, zero], -1), torch.stack([(1 - beta) * r, beta], -1)], -2)
        b = torch.stack([-alpha, -(1 - beta) * alpha], -1)
    return A, b


def second_moment_operator(A: torch.Tensor, b: torch.Tensor):
    r"""``K`` (..., 3, 3) and ``n`` (..., 3) with :math:`\mathrm{vech}(ASA^\top + q\,bb^\top) = K\,\mathrm{vech}(S) + q\,n`.

    :math:`\mathrm{vech}(S) = (S_{00}, S_{01}, S_{11})`.
    """
    if A.shape[-2:] != (2, 2) or b.shape[-1:] != (2,):
        raise ValueError("A must end in (2, 2) and b in (2,)")
    a, bb, c, d = A[..., 0, 0], A[..., 0, 1], A[..., 1, 0], A[..., 1, 1]
    K = torch.stack([
        torch.stack([a * a, 2 * a * bb, bb * bb], -1),
        torch.stack([a * c, a * d + bb * c, bb * d], -1),
        torch.stack([c * c, 2 * c * d, d * d], -1),
    ], -2)
    n = torch.stack([b[..., 0] ** 2, b[..., 0] * b[..., 1], b[..., 1] ** 2], -1)
    return K, n


def initial_moments(theta0, method: str = "momentum"):
    r"""Mean (..., 2) and vech second moment (..., 3) of the deterministic start :math:`\theta_0`.

    ``"momentum"`` starts at :math:`(\theta_0, 0)`, ``"ema"`` at :math:`(\theta_0, \theta_0)`.
    """
    method = _method(method)
    theta0 = _t(theta0)
    other = torch.zeros_like(theta0) if method == "momentum" else theta0
    mean = torch.stack([theta0, other], -1)
    second = torch.stack([theta0**2, theta0 * other, other**2], -1)
    return mean, second


def _system(h, c, alpha, beta, B, p, method):
    """Transition, second-moment operator and noise variance q = c_eff / B, all broadcast."""
    B = _t(B, _t(h))
    _positive(B, "B")
    h_eff, c_eff = preconditioned(h, c, p)
    A, b = transition(h_eff, alpha, beta, method)
    K, n = second_moment_operator(A, b)
    q = c_eff / B
    shape = torch.broadcast_shapes(A.shape[:-2], q.shape)
    return A.expand(*shape, 2, 2), K.expand(*shape, 3, 3), n.expand(*shape, 3), q.expand(shape)


def moment_trajectory(h, c, alpha, beta=0.0, B=1, p=0.0, theta0=1.0, steps: int = 1, method: str = "momentum"):
    r"""Exact mean and second moment at every step :math:`t = 0, \dots,` ``steps``.

    Returns ``mean`` (steps+1, ..., 2) and ``second`` (steps+1, ..., 3) (vech of :math:`\E[x_tx_t^\top]`),
    by iterating :math:`\mu_{t+1} = A\mu_t`, :math:`s_{t+1} = Ks_t + (c_{\rm eff}/B)n`.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError("steps must be a non-negative int")
    A, K, n, q = _system(h, c, alpha, beta, B, p, method)
    mean, second = initial_moments(_t(theta0, A), method)
    shape = torch.broadcast_shapes(A.shape[:-2], mean.shape[:-1], q.shape)
    mean, second = mean.expand(*shape, 2), second.expand(*shape, 3)
    noise = q.unsqueeze(-1) * n
    means, seconds = [mean], [second]
    for _ in range(steps):
        mean = (A @ mean.unsqueeze(-1)).squeeze(-1)
        second = (K @ second.unsqueeze(-1)).squeeze(-1) + noise
        means.append(mean)
        seconds.append(second)
    return torch.stack(means), torch.stack(seconds)


def moments_at(h, c, alpha, beta=0.0, B=1, p=0.0, theta0=1.0, t: int = 1, method: str = "momentum"):
    r"""Exact mean (..., 2) and vech second moment (..., 3) at step ``t`` by repeated squaring.

    The affine map :math:`s \mapsto Ks + qn` is the linear map :math:`\begin{pmatrix}K & qn\\0 & 1\end{pmatrix}`
    on :math:`(s, 1)`; its ``t``-th power costs :math:`O(\log t)` products.
    """
    if not isinstance(t, int) or t < 0:
        raise ValueError("t must be a non-negative int")
    A, K, n, q = _system(h, c, alpha, beta, B, p, method)
    mean0, second0 = initial_moments(_t(theta0, A), method)
    shape = torch.broadcast_shapes(A.shape[:-2], mean0.shape[:-1], q.shape)
    A, K = A.expand(*shape, 2, 2), K.expand(*shape, 3, 3)
    aff = torch.zeros(*shape, 4, 4, dtype=DTYPE, device=A.device)
    aff[..., :3, :3] = K
    aff[..., :3, 3] = q.expand(shape).unsqueeze(-1) * n.expand(*shape, 3)
    aff[..., 3, 3] = 1
    s = torch.cat([second0.expand(*shape, 3), torch.ones(*shape, 1, dtype=DTYPE, device=A.device)], -1)
    mean = (torch.linalg.matrix_power(A, t) @ mean0.expand(*shape, 2).unsqueeze(-1)).squeeze(-1)
    second = (torch.linalg.matrix_power(aff, t) @ s.unsqueeze(-1)).squeeze(-1)[..., :3]
    return mean, second


def spectral_radius(h, alpha, beta=0.0, p=0.0, method: str = "momentum") -> torch.Tensor:
    """Largest modulus of the eigenvalues of ``A`` (the mean's rate); the moments are stable iff it is < 1."""
    h_eff, _ = preconditioned(h, torch.zeros_like(_t(h)), p)
    A, _ = transition(h_eff, alpha, beta, method)
    return torch.linalg.eigvals(A).abs().amax(-1)


def stationary_second_moment(h, c, alpha, beta=0.0, B=1, p=0.0, method: str = "momentum") -> torch.Tensor:
    r"""The steady state :math:`s_\infty = (I-K)^{-1} q\,n` (vech, (..., 3)) of the Lyapunov equation.

    :math:`S = ASA^\top + q\,bb^\top`; ``nan`` where the dynamics are unstable (spectral radius :math:`\ge 1`).
    """
    A, K, n, q = _system(h, c, alpha, beta, B, p, method)
    eye = torch.eye(3, dtype=DTYPE, device=A.device)
    s = torch.linalg.solve(eye - K, (q.unsqueeze(-1) * n).unsqueeze(-1).expand(*K.shape[:-1], 1)).squeeze(-1)
    stable = torch.linalg.eigvals(A).abs().amax(-1) < 1
    return torch.where(stable.unsqueeze(-1), s, torch.full_like(s, math.nan))


def coordinate_loss(h, second: torch.Tensor, component: int = 0) -> torch.Tensor:
    r"""Expected loss :math:`\tfrac12 h\,\E[x_k^2]` per coordinate, read from the vech second moment.

    ``component`` 0 is :math:`\theta`; 1 is the EMA :math:`\bar\theta` (``"ema"``) — for ``"momentum"``
    component 1 is the buffer, not a point of parameter space. ``h`` is the true curvature.
    """
    if component not in (0, 1):
        raise ValueError("component must be 0 or 1")
    return 0.5 * _t(h, second) * second[..., 0 if component == 0 else 2]


def _front(x: torch.Tensor, k: int) -> torch.Tensor:
    """Move the last ``k`` (matrix/vector) axes to the front: batch axes last are contiguous and fast."""
    return x.permute(*range(x.dim() - k, x.dim()), *range(x.dim() - k)).contiguous()


def _matvec(M: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``M @ v`` for 3 x 3 matrices stored front-first: ``M`` (3, 3, ...), ``v`` (3, ...)."""
    return (M * v.unsqueeze(0)).sum(1)


def _matmul(M: torch.Tensor, N: torch.Tensor) -> torch.Tensor:
    """``M @ N`` for 3 x 3 matrices stored front-first, (3, 3, ...)."""
    return (M.unsqueeze(2) * N.unsqueeze(0)).sum(1)


def steps_to_target(h, c, alpha, beta, B, target, p=0.0, theta0=1.0, method: str = "momentum",
                    component: int = 0, max_doublings: int = 20) -> torch.Tensor:
    r"""The first step :math:`t` at which the expected loss :math:`\sum_i \tfrac12 h_i\E[x_{k,i}(t)^2]` is ``<= target``.

    ``h``, ``c``, ``theta0`` are per coordinate, shape ``(d,)``; ``alpha``, ``beta``, ``p`` broadcast to a
    hyperparameter grid ``G``; ``B`` is 1-D ``(nB,)``. Returns ``(nB, *G)`` float64 steps, ``inf`` where the
    target is not reached within :math:`2^{\text{max\_doublings}} - 1` steps (or the method is unstable).

    Binary lifting on the exact recursion: tables :math:`K^{2^k}` and :math:`N_k = \sum_{j<2^k}K^jn` (which
    do not depend on :math:`B`: :math:`s(t + 2^k) = K^{2^k}s(t) + (c_{\rm eff}/B)N_k`), then from the top level
    down a jump is taken while the loss after it stays above ``target``. Exact when the expected loss,
    once at or below ``target``, stays there (always for SGD started above its floor); otherwise the
    result is a step at which the target holds, an upper bound on the first one.
    """
    h, c, theta0 = _t(h), _t(c, _t(h)), _t(theta0, _t(h))
    if h.dim() != 1:
        raise ValueError("h must be 1-D (one entry per coordinate)")
    B = _t(B, h)
    if B.dim() != 1:
        raise ValueError("B must be 1-D")
    _positive(B, "B")
    target = float(target)
    if not target > 0:
        raise ValueError("target must be positive")
    if not isinstance(max_doublings, int) or not 1 <= max_doublings <= 40:
        raise ValueError("max_doublings must be an int in [1, 40]")
    alpha, beta, p = torch.broadcast_tensors(_t(alpha, h), _t(beta, h), _t(p, h))
    grid = alpha.shape
    h_eff, c_eff = preconditioned(h, c, p.unsqueeze(-1))                      # (*G, d)
    A, bvec = transition(h_eff, alpha.unsqueeze(-1), beta.unsqueeze(-1), method)
    K, n = second_moment_operator(A, bvec)
    K = _front(K, 2)                                                          # (3, 3, *G, d)
    noise = _front(c_eff.unsqueeze(-1) * n, 1)                                # (3, *G, d), per unit 1/B
    _, s0 = initial_moments(theta0.expand_as(h), method)
    idx = 0 if component == 0 else 2
    half_h = 0.5 * h
    Ks, Ns = [K], [noise]
    for _ in range(max_doublings - 1):
        Ns.append(_matvec(Ks[-1], Ns[-1]) + Ns[-1])
        Ks.append(_matmul(Ks[-1], Ks[-1]))
    nB = len(B)
    invB = (1 / B).reshape(nB, *([1] * (len(grid) + 1)))                      # (nB, 1.., 1)
    s = _front(s0, 1).reshape(3, 1, *([1] * len(grid)), -1).expand(3, nB, *grid, h.shape[0]).clone()

    def loss(state):
        return (half_h * state[idx]).sum(-1)

    def step(k, state):
        return _matvec(Ks[k].unsqueeze(2), state) + invB * Ns[k].unsqueeze(1)

    t = torch.zeros(nB, *grid, dtype=DTYPE, device=h.device)
    done0 = loss(s) <= target
    for k in range(max_doublings - 1, -1, -1):
        cand = step(k, s)
        lc = loss(cand)
        above = (lc > target) | ~torch.isfinite(lc)
        s = torch.where(above[None, ..., None], cand, s)
        t = t + above.to(DTYPE) * 2**k
    t = t + 1
    reached = loss(step(0, s)) <= target
    t = torch.where(reached, t, torch.full_like(t, math.inf))
    return torch.where(done0, torch.zeros_like(t), t)


def tuned_steps_to_target(h, c, alphas, betas, B, target, p=0.0, theta0=1.0, method: str = "momentum",
                          component: int = 0, max_doublings: int = 20):
    r"""Steps to ``target`` for each batch size with the hyperparameters tuned per batch size.

    Every pair of ``alphas`` (1-D) and ``betas`` (1-D; ``[0.]`` is plain SGD) is tried; returns
    ``(steps, alpha_best, beta_best)``, each ``(nB,)``. The minimum over a grid is within one grid step
    of the true optimum; the caller checks that the optimum is not on the edge of the grid.
    """
    h = _t(h)
    alphas, betas = _t(alphas, h), _t(betas, h)      # the grids follow h's device
    if alphas.dim() != 1 or betas.dim() != 1:
        raise ValueError("alphas and betas must be 1-D")
    a, b = torch.meshgrid(alphas, betas, indexing="ij")
    steps = steps_to_target(h, c, a, b, B, target, p, theta0, method, component, max_doublings)
    flat = steps.flatten(1)
    best, i = flat.min(1)
    return best, a.flatten()[i], b.flatten()[i]


def critical_batch_size(B, steps, factor: float = 2.0) -> float:
    r"""The batch size at which steps to target reach ``factor`` times the perfect-scaling line.

    Perfect scaling extrapolates the smallest batch: :math:`S_{\rm lin}(B) = S(B_0)B_0/B`. The critical
    batch size is where :math:`S(B)/S_{\rm lin}(B) = ` ``factor`` (log-linear interpolation between grid
    points); ``inf`` if the ratio stays below ``factor`` on the grid.
    """
    B, steps = _t(B).cpu(), _t(steps).cpu()
    if B.dim() != 1 or B.shape != steps.shape or len(B) < 2:
        raise ValueError("B and steps must be 1-D of equal length >= 2")
    if not bool((B[1:] > B[:-1]).all()):
        raise ValueError("B must be increasing")
    if not factor > 1:
        raise ValueError("factor must be > 1")
    ratio = steps * B / (steps[0] * B[0])
    over = torch.nonzero(ratio >= factor)
    if len(over) == 0:
        return math.inf
    j = int(over[0])
    if j == 0:
        return float(B[0])
    x0, x1 = math.log(B[j - 1]), math.log(B[j])
    y0, y1 = math.log(ratio[j - 1]), math.log(ratio[j])
    return math.exp(x0 + (math.log(factor) - y0) * (x1 - x0) / (y1 - y0))


def simulate(h, c, alpha, beta=0.0, B=1, p=0.0, theta0=1.0, steps: int = 1, trials: int = 2,
             generator: torch.Generator | None = None, method: str = "momentum", record=None):
    r"""Monte Carlo of the same method: states ``(trials, ..., 2)`` after ``steps`` steps (Gaussian noise).

    The noise :math:`\varepsilon \sim N(0, c_{\rm eff}/B)` is the mean of :math:`B` Gaussian per-sample
    noises, drawn directly. ``record`` (an iterable of steps) returns ``{t: state}`` instead. The trials run
    on ``generator``'s device; ``h``, ``c`` and ``theta0`` are moved there.
    """
    if generator is None:
        raise ValueError("generator must be a torch.Generator (draw it from gradnoise.generator)")
    if not isinstance(trials, int) or trials < 2:
        raise ValueError("trials must be an int >= 2")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError("steps must be a non-negative int")
    h = torch.as_tensor(h, dtype=DTYPE, device=generator.device)     # draws happen on the generator's device
    A, _, _, q = _system(h, c, alpha, beta, B, p, method)
    mean0, _ = initial_moments(_t(theta0, A), method)
    shape = torch.broadcast_shapes(A.shape[:-2], mean0.shape[:-1], q.shape)
    A = A.expand(*shape, 2, 2)
    _, bvec = transition(preconditioned(h, c, p)[0], alpha, beta, method)
    bvec = bvec.expand(*shape, 2)
    sd = q.expand(shape).sqrt()
    a00, a01, a10, a11 = A[..., 0, 0], A[..., 0, 1], A[..., 1, 0], A[..., 1, 1]
    b0, b1 = bvec[..., 0] * sd, bvec[..., 1] * sd
    x0 = mean0[..., 0].expand(shape).expand(trials, *shape).clone()
    x1 = mean0[..., 1].expand(shape).expand(trials, *shape).clone()
    wanted = set(record) if record is not None else set()
    out = {0: torch.stack([x0, x1], -1)} if 0 in wanted else {}
    for t in range(1, steps + 1):
        eps = torch.randn(trials, *shape, dtype=DTYPE, device=A.device, generator=generator)
        x0, x1 = a00 * x0 + a01 * x1 + b0 * eps, a10 * x0 + a11 * x1 + b1 * eps
        if t in wanted:
            out[t] = torch.stack([x0, x1], -1)
    x = torch.stack([x0, x1], -1)
    return out if record is not None else x


def first_crossing(h, c, alpha, beta=0.0, B=1, target=1.0, p=0.0, theta0=1.0, method: str = "momentum",
                   component: int = 0, max_steps: int = 10_000) -> torch.Tensor:
    r"""The first step at which :math:`\sum_i \tfrac12 h_i\E[x_{k,i}(t)^2] \le` ``target``, by plain iteration.

    The definition itself, with no monotonicity assumed (the reference for :func:`steps_to_target`).
    Arguments broadcast; the **last** axis is the coordinate and is summed. ``inf`` if not reached within
    ``max_steps``. Costs ``max_steps`` iterations: use it on small grids.
    """
    if not isinstance(max_steps, int) or max_steps < 0:
        raise ValueError("max_steps must be a non-negative int")
    target = float(target)
    if not target > 0:
        raise ValueError("target must be positive")
    _, K, n, q = _system(h, c, alpha, beta, B, p, method)
    _, s = initial_moments(_t(theta0, K), method)
    s = _front(s.expand(*K.shape[:-1]), 1)
    K = _front(K, 2)
    noise = _front(q.unsqueeze(-1) * n, 1)
    idx = 0 if component == 0 else 2
    half_h = 0.5 * _t(h, K)
    first = torch.full(s.shape[1:-1], math.inf, dtype=DTYPE, device=K.device)
    for t in range(max_steps + 1):
        hit = ((half_h * s[idx]).sum(-1) <= target) & torch.isinf(first)
        first = torch.where(hit, torch.full_like(first, t), first)
        if t == max_steps or (t % 64 == 0 and bool(torch.isfinite(first).all())):
            break
        s = _matvec(K, s) + noise
    return first
