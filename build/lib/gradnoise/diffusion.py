r"""SGD and its diffusion approximation, for many chains at once.

Two simulators share one shape convention: the state is ``theta`` ``(chains, d)``.

- :func:`sgd_chains` runs :math:`\theta_{k+1} = \theta_k - \eta\,\hat g(\theta_k)` where
  ``stochastic_gradient(theta, gen)`` returns one stochastic gradient per chain (e.g. a minibatch mean).
- :func:`euler_maruyama` runs :math:`\theta_{k+1} = \theta_k + b(\theta_k)\,\delta t + S(\theta_k)\sqrt{\delta t}\,Z_k`
  for the Itô SDE :math:`d\theta = b\,dt + S\,dW`, with ``drift(theta)`` ``(chains, d)`` and
  ``noise_factor(theta)`` ``(chains, d, d)`` (any :math:`S` with :math:`SS^\top` the diffusion matrix).

On a quadratic :math:`L(\theta) = \frac12\theta^\top H\theta` with constant noise covariance
:math:`\Sigma/B` the stationary covariances are exact solutions of Lyapunov equations, solved as one
linear system in :math:`\mathrm{vec}\,C` (Kronecker form), batched over leading dimensions:
:func:`sgd_stationary_covariance` (discrete SGD) and :func:`ou_stationary_covariance` (the SDE).
"""
from __future__ import annotations

from typing import Callable

import torch

from . import checks


def _positive(x, name: str) -> float:
    return checks.real(x, name, low=0, low_open=True)


def _start(theta0, gen, steps, record_every):
    """The shared argument checks of the two simulators; returns (steps, every)."""
    checks.tensor(theta0, "theta0", ndim=2)
    checks.generator(gen, "gen")
    if gen.device.type != theta0.device.type:
        raise ValueError(f"gen is on {gen.device} but theta0 on {theta0.device}: draw them on one device")
    steps = checks.steps(steps, minimum=1)
    every = _record_steps(steps, record_every)
    if record_every is not None:
        checks.allocation((steps // every, *theta0.shape), theta0.dtype, "steps / record_every x theta0 (the recorded states)")
    return steps, every


def _returned(x, name: str, shape) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or tuple(x.shape) != tuple(shape):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} returned {got}, expected a tensor of shape {tuple(shape)}")
    return x


def _record_steps(steps: int, record_every: int | None) -> int:
    steps = checks.positive_int(steps, "steps")
    if record_every is None:
        return steps
    record_every = checks.positive_int(record_every, "record_every")
    if steps % record_every:
        raise ValueError(f"record_every = {record_every} must divide steps = {steps}")
    return record_every


def sgd_chains(theta0: torch.Tensor, stochastic_gradient: Callable, eta: float, steps: int,
               gen: torch.Generator, record_every: int | None = None) -> torch.Tensor:
    r"""Run SGD :math:`\theta_{k+1} = \theta_k - \eta\,\hat g(\theta_k)` on every chain for ``steps`` steps.

    ``theta0`` is ``(chains, d)``; ``stochastic_gradient(theta, gen)`` must return ``(chains, d)``.
    Returns the final state ``(chains, d)``, or with ``record_every = r`` the states after steps
    ``r, 2r, ..., steps`` stacked as ``(steps // r, chains, d)``.
    """
    checks.function(stochastic_gradient, "stochastic_gradient")
    eta = _positive(eta, "eta")
    steps, every = _start(theta0, gen, steps, record_every)
    theta, out = theta0.clone(), []
    for k in range(1, steps + 1):
        grad = _returned(stochastic_gradient(theta, gen), "stochastic_gradient", theta.shape)
        theta = theta - eta * grad
        if record_every is not None and k % every == 0:
            out.append(theta)
    return theta if record_every is None else torch.stack(out)


def euler_maruyama(theta0: torch.Tensor, drift: Callable, noise_factor: Callable, dt: float, steps: int,
                   gen: torch.Generator, record_every: int | None = None) -> torch.Tensor:
    r"""Euler–Maruyama for the Itô SDE :math:`d\theta = b(\theta)\,dt + S(\theta)\,dW` on every chain.

    ``drift(theta)`` returns ``(chains, d)``, ``noise_factor(theta)`` returns ``(chains, d, d)``; the
    Brownian increments are drawn from ``gen``. Returns like :func:`sgd_chains`.
    """
    checks.function(drift, "drift")
    checks.function(noise_factor, "noise_factor")
    dt = _positive(dt, "dt")
    steps, every = _start(theta0, gen, steps, record_every)
    theta, out = theta0.clone(), []
    root = dt**0.5
    for k in range(1, steps + 1):
        z = torch.randn(theta.shape, generator=gen, device=theta.device, dtype=theta.dtype)
        S = _returned(noise_factor(theta), "noise_factor", theta.shape + theta.shape[-1:])
        theta = theta + _returned(drift(theta), "drift", theta.shape) * dt + root * (S * z.unsqueeze(-2)).sum(-1)      # S z, elementwise (fast for small d)
        if record_every is not None and k % every == 0:
            out.append(theta)
    return theta if record_every is None else torch.stack(out)


def _square(M: torch.Tensor, name: str) -> torch.Tensor:
    checks.matrix(M, name, min_ndim=2)
    checks.exact_dtype(M, name)
    if M.shape[-1] != M.shape[-2]:
        raise ValueError(f"{name} must be square, got shape {tuple(M.shape)}")
    return M


def _lyapunov_inputs(H, Sigma, eta, batch):
    """Checks shared by the two stationary covariances: square float H and Sigma of one dtype and device,
    Sigma symmetric positive semi-definite, and the Kronecker system within the allocation guard."""
    _square(H, "H")
    _square(Sigma, "Sigma")
    checks.same_kind(H, Sigma, "H", "Sigma")
    eta = _positive(eta, "eta")
    batch = checks.positive_int(batch, "batch")
    H, Sigma = _broadcast(H, Sigma)
    d = H.shape[-1]
    checks.allocation((*H.shape[:-2], d * d, d * d), H.dtype, "H and Sigma (a d^2 x d^2 Lyapunov system per matrix)", copies=3)
    scale = Sigma.abs().amax().clamp(min=torch.finfo(Sigma.dtype).tiny)
    if bool(((Sigma - Sigma.mT).abs() > 1e-8 * scale).any()):
        raise ValueError("Sigma must be symmetric (a covariance)")
    if bool((torch.linalg.eigvalsh(Sigma) < -1e-8 * scale).any()):
        raise ValueError("Sigma must be positive semi-definite (a covariance); it has a negative eigenvalue")
    return H, Sigma, eta, batch


def _broadcast(H: torch.Tensor, Sigma: torch.Tensor):
    if H.shape[-1] != Sigma.shape[-1]:
        raise ValueError(f"H {tuple(H.shape)} and Sigma {tuple(Sigma.shape)} must be the same size")
    try:
        lead = torch.broadcast_shapes(H.shape[:-2], Sigma.shape[:-2])
    except RuntimeError:
        raise ValueError(f"H {tuple(H.shape)} and Sigma {tuple(Sigma.shape)} must broadcast") from None
    d = H.shape[-1]
    return H.expand(*lead, d, d), Sigma.expand(*lead, d, d)


def _kron(A: torch.Tensor, Bm: torch.Tensor) -> torch.Tensor:
    """Batched Kronecker product of ``(..., p, p)`` and ``(..., q, q)``."""
    p, q = A.shape[-1], Bm.shape[-1]
    K = A[..., :, None, :, None] * Bm[..., None, :, None, :]
    return K.reshape(*K.shape[:-4], p * q, p * q)


def _solve_vec(M: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    d = Q.shape[-1]
    vec = Q.transpose(-1, -2).reshape(*Q.shape[:-2], d * d, 1)      # column-major vec
    C = torch.linalg.solve(M, vec).reshape(*Q.shape[:-2], d, d).transpose(-1, -2)
    return (C + C.transpose(-1, -2)) / 2


def sgd_stationary_covariance(H: torch.Tensor, Sigma: torch.Tensor, eta: float, batch: int) -> torch.Tensor:
    r"""Exact stationary covariance of SGD :math:`\theta_{k+1} = (I-\eta H)\theta_k + \eta\,\xi_k`, :math:`\Cov\xi_k = \Sigma/B`.

    Solves the discrete Lyapunov equation :math:`C = ACA^\top + \eta^2\Sigma/B`, :math:`A = I - \eta H`,
    as :math:`(I - A\otimes A)\,\mathrm{vec}\,C = \mathrm{vec}(\eta^2\Sigma/B)`. Needs every eigenvalue of
    :math:`A` inside the unit circle (``ValueError`` otherwise). Batched over leading dimensions.
    """
    H, Sigma, eta, batch = _lyapunov_inputs(H, Sigma, eta, batch)
    d = H.shape[-1]
    I = torch.eye(d, dtype=H.dtype, device=H.device)
    A = I - eta * H
    if bool((torch.linalg.eigvals(A).abs() >= 1).any()):
        raise ValueError("eta: SGD is not stable (an eigenvalue of I - eta H lies outside the unit circle)")
    M = torch.eye(d * d, dtype=H.dtype, device=H.device) - _kron(A, A)
    return _solve_vec(M, eta**2 * Sigma / batch)


def ou_stationary_covariance(H: torch.Tensor, Sigma: torch.Tensor, eta: float, batch: int) -> torch.Tensor:
    r"""Exact stationary covariance of the OU process :math:`d\theta = -H\theta\,dt + \sqrt{\eta\Sigma/B}\,dW`.

    Solves the continuous Lyapunov equation :math:`HC + CH^\top = \eta\Sigma/B` as
    :math:`(I\otimes H + H\otimes I)\,\mathrm{vec}\,C = \mathrm{vec}(\eta\Sigma/B)`. Needs every eigenvalue
    of :math:`H` to have a positive real part (``ValueError`` otherwise). Batched over leading dimensions.
    """
    H, Sigma, eta, batch = _lyapunov_inputs(H, Sigma, eta, batch)
    if bool((torch.linalg.eigvals(H).real <= 0).any()):
        raise ValueError("H must have eigenvalues with positive real parts (a stable drift)")
    d = H.shape[-1]
    I = torch.eye(d, dtype=H.dtype, device=H.device).expand_as(H)
    M = _kron(I, H) + _kron(H, I)
    return _solve_vec(M, eta * Sigma / batch)
