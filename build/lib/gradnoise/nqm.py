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

from . import checks
from .device import DTYPE, device as _device

METHODS = ("momentum", "ema")


def _t(x, ref: torch.Tensor | None = None, name: str = "value", **interval) -> torch.Tensor:
    """``x`` as a float64 tensor on ``ref``'s device (else its own, else the book's), every entry finite
    and in ``interval`` (the keywords of :func:`gradnoise.checks.real_tensor`): NaN is refused."""
    dev = ref.device if ref is not None else (x.device if isinstance(x, torch.Tensor) else _device())
    return checks.real_tensor(x, name, device=dev, dtype=DTYPE, **interval)


def _h(h) -> torch.Tensor:
    return _t(h, name="h", low=0, low_open=True)


def _method(method: str) -> str:
    return checks.choice(method, "method", METHODS)


def _component(component) -> int:
    return checks.choice(component, "component", (0, 1))


def _beta(beta, ref) -> torch.Tensor:
    return _t(beta, ref, "beta", low=0, high=1, high_open=True)


def _alpha(alpha, ref) -> torch.Tensor:
    return _t(alpha, ref, "alpha", low=0, low_open=True)


def _B(B, ref) -> torch.Tensor:
    return _t(B, ref, "B", low=0, low_open=True)


def _broadcast_shapes(**shapes) -> torch.Size:
    """The broadcast of named shapes, or one line naming the arguments that do not broadcast."""
    try:
        return torch.broadcast_shapes(*shapes.values())
    except RuntimeError:
        listed = ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items())
        raise ValueError(f"the shapes of {listed} do not broadcast") from None


def _broadcast(**tensors):
    """The named tensors broadcast against each other (:func:`_broadcast_shapes` names a mismatch)."""
    shape = _broadcast_shapes(**{k: v.shape for k, v in tensors.items()})
    return tuple(v.expand(shape) for v in tensors.values())


def _radius(A: torch.Tensor) -> torch.Tensor:
    """Largest eigenvalue modulus of a stack of (finite) 2 x 2 matrices."""
    return torch.linalg.eigvals(A).abs().amax(-1)


def preconditioned(h, c, p=0.0):
    r"""Curvature and per-sample noise variance seen by SGD preconditioned with :math:`H^{-p}`.

    :math:`\theta' = \theta - \alpha h^{-p}(h\theta + \varepsilon)` is SGD on curvature :math:`h^{1-p}` with
    noise :math:`h^{-p}\varepsilon`, of variance :math:`c\,h^{-2p}`. Returns ``(h**(1-p), c * h**(-2p))``.
    """
    h = _h(h)
    c, p = _t(c, h, "c", low=0), _t(p, h, "p")
    _broadcast_shapes(h=h.shape, c=c.shape, p=p.shape)
    return h ** (1 - p), c * h ** (-2 * p)


def transition(h, alpha, beta=0.0, method: str = "momentum"):
    r"""The per-coordinate linear system :math:`x' = Ax + b\varepsilon`: returns ``A`` (..., 2, 2), ``b`` (..., 2).

    ``"momentum"``, :math:`x = (\theta, m)`: :math:`A = \begin{pmatrix}1-\alpha h & -\alpha\beta\\ h & \beta\end{pmatrix}`,
    :math:`b = (-\alpha, 1)`. ``"ema"``, :math:`x = (\theta, \bar\theta)`, :math:`r = 1-\alpha h`:
    :math:`A = \begin{pmatrix}r & 0\\ (1-\beta)r & \beta\end{pmatrix}`, :math:`b = (-\alpha, -(1-\beta)\alpha)`.
    ``h`` is the curvature the dynamics see (after :func:`preconditioned`).
    """
    method = _method(method)
    h = _h(h)
    alpha, beta = _alpha(alpha, h), _beta(beta, h)
    h, alpha, beta = _broadcast(h=h, alpha=alpha, beta=beta)
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
    checks.tensor(A, "A", min_ndim=2)
    checks.tensor(b, "b", min_ndim=1)
    if A.shape[-2:] != (2, 2) or b.shape[-1:] != (2,):
        raise ValueError(f"A must end in (2, 2) and b in (2,), got shapes {tuple(A.shape)} and {tuple(b.shape)}")
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
    theta0 = _t(theta0, name="theta0")
    other = torch.zeros_like(theta0) if method == "momentum" else theta0
    mean = torch.stack([theta0, other], -1)
    second = torch.stack([theta0**2, theta0 * other, other**2], -1)
    return mean, second


def _system(h, c, alpha, beta, B, p, method):
    """Transition, second-moment operator and noise variance q = c_eff / B, all broadcast."""
    B = _B(B, _h(h))
    h_eff, c_eff = preconditioned(h, c, p)
    A, b = transition(h_eff, alpha, beta, method)
    K, n = second_moment_operator(A, b)
    _broadcast(h=h_eff, B=B)
    q = c_eff / B
    shape = _broadcast_shapes(A=A.shape[:-2], B=q.shape)
    return A.expand(*shape, 2, 2), K.expand(*shape, 3, 3), n.expand(*shape, 3), q.expand(shape)


def moment_trajectory(h, c, alpha, beta=0.0, B=1, p=0.0, theta0=1.0, steps: int = 1, method: str = "momentum"):
    r"""Exact mean and second moment at every step :math:`t = 0, \dots,` ``steps``.

    Returns ``mean`` (steps+1, ..., 2) and ``second`` (steps+1, ..., 3) (vech of :math:`\E[x_tx_t^\top]`),
    by iterating :math:`\mu_{t+1} = A\mu_t`, :math:`s_{t+1} = Ks_t + (c_{\rm eff}/B)n`.
    """
    steps = checks.steps(steps)
    A, K, n, q = _system(h, c, alpha, beta, B, p, method)
    mean, second = initial_moments(_t(theta0, A, "theta0"), method)
    shape = _broadcast_shapes(theta0=mean.shape[:-1], alpha=A.shape[:-2], B=q.shape)
    checks.allocation((steps + 1, *shape, 5), DTYPE, "steps x the broadcast shape of h, c, alpha, beta, B, p, theta0", copies=2)
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
    t = checks.count(t, "t", minimum=0, maximum=2**62)
    A, K, n, q = _system(h, c, alpha, beta, B, p, method)
    mean0, second0 = initial_moments(_t(theta0, A, "theta0"), method)
    shape = _broadcast_shapes(theta0=mean0.shape[:-1], alpha=A.shape[:-2], B=q.shape)
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
    h_eff, _ = preconditioned(h, torch.zeros_like(_h(h)), p)
    A, _ = transition(h_eff, alpha, beta, method)
    return _radius(A)


def stationary_second_moment(h, c, alpha, beta=0.0, B=1, p=0.0, method: str = "momentum") -> torch.Tensor:
    r"""The steady state :math:`s_\infty = (I-K)^{-1} q\,n` (vech, (..., 3)) of the Lyapunov equation.

    :math:`S = ASA^\top + q\,bb^\top`; ``nan`` where the dynamics are unstable (spectral radius :math:`\ge 1`).
    """
    A, K, n, q = _system(h, c, alpha, beta, B, p, method)
    eye = torch.eye(3, dtype=DTYPE, device=A.device)
    s = torch.linalg.solve(eye - K, (q.unsqueeze(-1) * n).unsqueeze(-1).expand(*K.shape[:-1], 1)).squeeze(-1)
    stable = _radius(A) < 1
    return torch.where(stable.unsqueeze(-1), s, torch.full_like(s, math.nan))


def coordinate_loss(h, second: torch.Tensor, component: int = 0) -> torch.Tensor:
    r"""Expected loss :math:`\tfrac12 h\,\E[x_k^2]` per coordinate, read from the vech second moment.

    ``component`` 0 is :math:`\theta`; 1 is the EMA :math:`\bar\theta` (``"ema"``) — for ``"momentum"``
    component 1 is the buffer, not a point of parameter space. ``h`` is the true curvature.
    """
    component = _component(component)
    checks.tensor(second, "second", min_ndim=1, finite=False)   # NaN marks an unstable setting (stationary_second_moment)
    if second.shape[-1] != 3:
        raise ValueError(f"second must end in an axis of 3 (the vech of a 2 x 2 moment), got shape {tuple(second.shape)}")
    h = _h(h).to(second.device)
    _broadcast_shapes(h=h.shape, second=second.shape[:-1])
    return 0.5 * h * second[..., 0 if component == 0 else 2]


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
    h = _h(h)
    c, theta0 = _t(c, h, "c", low=0), _t(theta0, h, "theta0")
    method, component = _method(method), _component(component)
    if h.dim() != 1:
        raise ValueError(f"h must be 1-D (one entry per coordinate), got shape {tuple(h.shape)}")
    _broadcast_shapes(h=h.shape, c=c.shape, theta0=theta0.shape)
    B = _B(B, h)
    if B.dim() != 1:
        raise ValueError(f"B must be 1-D, got shape {tuple(B.shape)}")
    target = checks.real(target, "target", low=0, low_open=True)
    max_doublings = checks.count(max_doublings, "max_doublings", minimum=1, maximum=40)
    alpha, beta, p = _broadcast(alpha=_alpha(alpha, h), beta=_beta(beta, h), p=_t(p, h, "p"))
    checks.allocation((3, len(B), *alpha.shape, h.shape[0]), DTYPE, "B x alpha x beta x p x h (the grid)", copies=4)
    checks.allocation((3, 3, *alpha.shape, h.shape[0]), DTYPE, "max_doublings x alpha x beta x p x h (the tables)", copies=2 * max_doublings)
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
    h = _h(h)
    alphas = _t(alphas, h, "alphas", low=0, low_open=True)      # the grids follow h's device
    betas = _t(betas, h, "betas", low=0, high=1, high_open=True)
    if alphas.dim() != 1 or betas.dim() != 1:
        raise ValueError(f"alphas and betas must be 1-D, got shapes {tuple(alphas.shape)} and {tuple(betas.shape)}")
    a, b = torch.meshgrid(alphas, betas, indexing="ij")
    steps = steps_to_target(h, c, a, b, B, target, p, theta0, method, component, max_doublings)
    flat = steps.flatten(1)
    best, i = flat.min(1)
    return best, a.flatten()[i], b.flatten()[i]


def _steps_vector(steps) -> torch.Tensor:
    """Steps to a target per batch size: positive, ``inf`` allowed (not reached), NaN refused."""
    bad = f"steps must be positive numbers (inf where the target is not reached), got {checks._short(steps)}"
    if checks._not_a_number(steps) or (isinstance(steps, torch.Tensor) and (steps.is_complex() or steps.dtype == torch.bool)):
        raise ValueError(bad)
    try:
        t = torch.as_tensor(steps, dtype=DTYPE).cpu()
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise ValueError(bad) from None
    if t.numel() == 0 or bool(torch.isnan(t).any()) or bool((t <= 0).any()) or not math.isfinite(float(t.flatten()[0])):
        raise ValueError(bad + " (the first must be finite)")
    return t


def critical_batch_size(B, steps, factor: float = 2.0) -> float:
    r"""The batch size at which steps to target reach ``factor`` times the perfect-scaling line.

    Perfect scaling extrapolates the smallest batch: :math:`S_{\rm lin}(B) = S(B_0)B_0/B`. The critical
    batch size is where :math:`S(B)/S_{\rm lin}(B) = ` ``factor`` (log-linear interpolation between grid
    points); ``inf`` if the ratio stays below ``factor`` on the grid.
    """
    B = _t(B, name="B", low=0, low_open=True).cpu()
    steps = _steps_vector(steps)
    if B.dim() != 1 or B.shape != steps.shape or len(B) < 2:
        raise ValueError(f"B and steps must be 1-D of equal length >= 2, got shapes {tuple(B.shape)} and {tuple(steps.shape)}")
    if not bool((B[1:] > B[:-1]).all()):
        raise ValueError("B must be increasing")
    factor = checks.real(factor, "factor", low=1, low_open=True)
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
    generator = checks.generator(generator)
    trials = checks.count(trials, "trials", minimum=2)
    steps = checks.steps(steps)
    h = _t(h, torch.empty(0, device=generator.device), "h", low=0, low_open=True)   # draws on the generator's device
    A, _, _, q = _system(h, c, alpha, beta, B, p, method)
    mean0, _ = initial_moments(_t(theta0, A, "theta0"), method)
    shape = _broadcast_shapes(theta0=mean0.shape[:-1], alpha=A.shape[:-2], B=q.shape)
    checks.allocation((trials, *shape), DTYPE, "trials x the broadcast shape of h, c, alpha, beta, B, p, theta0", copies=6)
    if record is not None:
        try:
            record = [checks.count(t, "record", minimum=0, maximum=steps) for t in record]
        except TypeError:
            raise ValueError(f"record must be an iterable of steps in [0, {steps}], got {checks._short(record)}") from None
        checks.allocation((len(set(record)), trials, *shape, 2), DTYPE, "record x trials (the recorded states)")
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
    max_steps = checks.steps(max_steps, "max_steps")
    target = checks.real(target, "target", low=0, low_open=True)
    component = _component(component)
    _, K, n, q = _system(h, c, alpha, beta, B, p, method)
    _, s = initial_moments(_t(theta0, K, "theta0"), method)
    _broadcast_shapes(theta0=s.shape[:-1], alpha=K.shape[:-2])
    s = _front(s.expand(*K.shape[:-1]), 1)
    K = _front(K, 2)
    noise = _front(q.unsqueeze(-1) * n, 1)
    idx = 0 if component == 0 else 2
    half_h = 0.5 * _t(h, K, "h")
    first = torch.full(s.shape[1:-1], math.inf, dtype=DTYPE, device=K.device)
    for t in range(max_steps + 1):
        hit = ((half_h * s[idx]).sum(-1) <= target) & torch.isinf(first)
        first = torch.where(hit, torch.full_like(first, t), first)
        if t == max_steps or (t % 64 == 0 and bool(torch.isfinite(first).all())):
            break
        s = _matvec(K, s) + noise
    return first
