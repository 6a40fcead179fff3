"""Argument checks shared by the package: each raises ``ValueError`` naming the argument."""
from __future__ import annotations

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
    """Check that ``n`` is an integer at least ``minimum``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n!r}")
    return n


def decay(gamma, name: str = "gamma") -> float:
    """Check that ``gamma`` is a real number in [0, 1)."""
    try:
        g = float(gamma)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1), got {gamma!r}") from None
    if not (0.0 <= g < 1.0):
        raise ValueError(f"{name} must lie in [0, 1), got {gamma!r}")
    return g
