"""Argument checks shared by the package: each raises ``ValueError`` naming the argument."""
from __future__ import annotations

import math
import operator
import os

import torch


def matrix(x: torch.Tensor, name: str, min_ndim: int = 2) -> torch.Tensor:
    """Check that ``x`` is a floating tensor with at least ``min_ndim`` dimensions and finite entries."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Check that two tensors have the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}")


def positive_int(n, name: str, minimum: int = 1) -> int:
    """Check that ``n`` is an integer at least ``minimum`` (``numpy.int64`` and 0-d integer tensors count)."""
    return count(n, name, minimum)


def decay(gamma, name: str = "gamma") -> float:
    """Check that ``gamma`` is a real number in [0, 1)."""
    if isinstance(gamma, (bool, str, bytes)) or gamma is None:
        raise ValueError(f"{name} must be a number in [0, 1), got {gamma!r}")
    try:
        g = float(gamma)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a number in [0, 1), got {gamma!r}") from None
    if not (0.0 <= g < 1.0):
        raise ValueError(f"{name} must lie in [0, 1), got {gamma!r}")
    return g


MAX_BYTES = 4 * 2**30
"""Largest tensor (in bytes) a function of the package allocates on a caller's request (4 GiB), at
``GRADNOISE_SCALE=1``; the limit grows with the size knob (:func:`allocation_limit`)."""


def allocation_limit() -> float:
    """:data:`MAX_BYTES` times the size knob ``GRADNOISE_SCALE`` (when above 1): a run made 100 times larger
    on purpose allocates 100 times more, and the guard is against typos, not against that. Whatever the
    knob, the limit never exceeds half the memory of the machine (:func:`machine_memory`)."""
    from .device import scale

    return min(MAX_BYTES * max(1.0, scale()), machine_memory() / 2)


def machine_memory() -> float:
    """Bytes of memory the package computes in: the GPU's when the device is CUDA, else the machine's RAM."""
    from . import device

    dev = device.device()
    if dev.type == "cuda":
        return float(torch.cuda.get_device_properties(dev).total_memory)
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 64.0 * 2**30


def count(n, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer count (``int``, ``numpy.int64``, a 0-d integer tensor ...) at least ``minimum``; returned as ``int``."""
    if isinstance(n, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    if isinstance(n, torch.Tensor):
        if n.ndim != 0 or n.is_floating_point() or n.is_complex() or n.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer >= {minimum}, got a tensor of shape {tuple(n.shape)} and {n.dtype}")
        n = int(n.item())
    try:
        value = operator.index(n)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {n!r}")
    return value


def positive_real(x, name: str, allow_zero: bool = False) -> float:
    """A finite real number, positive (or non-negative with ``allow_zero``); returned as ``float``."""
    if isinstance(x, (bool, str, bytes)) or x is None:
        raise ValueError(f"{name} must be a finite {'non-negative' if allow_zero else 'positive'} number, got {x!r}")
    try:
        value = float(x)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a finite {'non-negative' if allow_zero else 'positive'} number, got {x!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite {'non-negative' if allow_zero else 'positive'} number, got {x!r}")
    return value


def open_unit(x, name: str) -> float:
    """A real number strictly between 0 and 1 (a relative tolerance, say)."""
    value = positive_real(x, name)
    if not value < 1:
        raise ValueError(f"{name} must lie in (0, 1), got {x!r}")
    return value


def generator(gen, name: str = "generator") -> torch.Generator:
    """A ``torch.Generator`` (not ``None``, not a seed): the package never draws from global state."""
    if not isinstance(gen, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator (e.g. gradnoise.generator('label')), got {type(gen).__name__}")
    return gen


def exact_dtype(x: torch.Tensor, name: str) -> torch.Tensor:
    """The exact (SVD/eigh) routes need float32 or float64."""
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be float32 or float64 for this exact route, got {x.dtype} "
                         "(low precision is what newton_schulz(dtype=...) is for)")
    return x


def allocation(shape, dtype: torch.dtype, name: str) -> None:
    """Refuse to allocate a tensor of ``shape`` larger than :func:`allocation_limit` (a size typo, not a request)."""
    numel = 1
    for d in shape:
        numel *= int(d)
    size = numel * torch.empty((), dtype=dtype).element_size()
    limit = allocation_limit()
    if size > limit:
        raise ValueError(f"{name} would allocate {size / 2**30:.1f} GiB (shape {tuple(int(d) for d in shape)}); "
                         f"the limit is {limit / 2**30:.0f} GiB (4 GiB times GRADNOISE_SCALE, at most half the "
                         "machine's memory)")


def same_kind(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Same dtype and device."""
    if a.dtype != b.dtype or a.device != b.device:
        raise ValueError(f"{name_b} ({b.dtype}, {b.device}) must match {name_a} ({a.dtype}, {a.device})")


def batch_broadcast(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """The leading (batch) dimensions of two stacks of matrices must broadcast."""
    try:
        torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the batch dimensions of {name_a} {tuple(a.shape[:-2])} and {name_b} "
                         f"{tuple(b.shape[:-2])} do not broadcast") from None


def dim(d, ndim: int, name: str = "dim") -> int:
    """A dimension index valid for a tensor of ``ndim`` dimensions."""
    value = count(d, name, minimum=-ndim) if not isinstance(d, int) or isinstance(d, bool) else d
    if isinstance(d, bool) or not -ndim <= value < ndim:
        raise ValueError(f"{name} must lie in [{-ndim}, {ndim - 1}] for a tensor of {ndim} dimensions, got {d!r}")
    return value
