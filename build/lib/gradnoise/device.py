"""Where the book's tensors live, and in which precision.

The device is CUDA when ``torch.cuda.is_available()`` and the CPU otherwise. The environment variable
``GRADNOISE_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ...) overrides the choice. Every number in the book
is computed in ``float64`` unless a chapter asks for a lower precision on purpose.
"""
from __future__ import annotations

import os

import torch

DTYPE = torch.float64
"""The default floating-point type of every tensor the package makes."""

ENV_VAR = "GRADNOISE_DEVICE"


class DeviceUnavailable(ValueError, RuntimeError):
    """Raised when ``GRADNOISE_DEVICE`` names a device this machine does not have (a ``ValueError``: the
    setting is wrong; also a ``RuntimeError``, as it was first)."""


def device() -> torch.device:
    """Return the device the book computes on.

    ``GRADNOISE_DEVICE`` wins when set; otherwise CUDA if available, else CPU. Asking for CUDA on a
    machine without it raises :class:`DeviceUnavailable` with a one-line explanation.
    """
    wanted = os.environ.get(ENV_VAR, "").strip()
    if not wanted:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(wanted)
    except RuntimeError:
        raise DeviceUnavailable(f"{ENV_VAR}={wanted!r} is not a torch device name (try 'cpu' or 'cuda')") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                f"{ENV_VAR}={wanted!r} asks for CUDA, but torch sees no GPU here; unset it or use 'cpu'"
            ) from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceUnavailable(
                f"{ENV_VAR}={wanted!r}: only {torch.cuda.device_count()} CUDA device(s) visible"
            ) from None
    elif dev.type != "cpu":
        raise DeviceUnavailable(f"{ENV_VAR}={wanted!r}: only 'cpu' and 'cuda[:i]' are supported") from None
    return dev


def describe() -> str:
    """One line naming the device, its hardware when it is a GPU, the precision and torch's version."""
    dev = device()
    where = str(dev)
    if dev.type == "cuda":
        where += f" ({torch.cuda.get_device_name(dev)})"
    return f"device: {where}; dtype: {str(DTYPE).replace('torch.', '')}; torch {torch.__version__}"


def as_tensor(x, dtype: torch.dtype = DTYPE) -> torch.Tensor:
    """``x`` as a tensor on the book's device, in ``dtype`` (float64 unless told otherwise)."""
    from . import checks

    checks.floating_dtype(dtype)
    if x is None or isinstance(x, (str, bytes)):
        raise ValueError(f"x must be numbers or a tensor, got {x!r}")
    try:
        return torch.as_tensor(x, dtype=dtype, device=device())
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise ValueError(f"x must be numbers or a tensor, got {checks._short(x)}") from None


SCALE_VAR = "GRADNOISE_SCALE"
MAX_SCALE = 1e6
"""Largest size knob: a million times the default size is already days of GPU time; larger is a typo."""


def scale() -> float:
    """The Monte-Carlo size knob: ``GRADNOISE_SCALE`` (a positive number; default 1).

    A GPU run can set ``GRADNOISE_SCALE=100`` to make every chapter's trial counts 100 times larger
    through the same code; every check's standard error then shrinks tenfold. The chapters' bounds are
    calibrated at scale 1: a check that compares a Monte-Carlo mean with a leading-order prediction
    (whose next-order term the chapter calls unresolved) fails once the scale makes that term visible.
    The page "The book on a GPU" lists which checks do, and at what scale.
    """
    raw = os.environ.get(SCALE_VAR, "1").strip() or "1"
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{SCALE_VAR} must be a positive number, got {raw!r}") from None
    if not (0 < value <= MAX_SCALE):
        raise ValueError(f"{SCALE_VAR} must be a positive number at most {MAX_SCALE:g}, got {raw!r}")
    return value


def trials(n: int) -> int:
    """``n`` Monte-Carlo trials times the size knob :func:`scale`, rounded, and at least 2."""
    from . import checks

    n = checks.count(n, "n", minimum=2)
    return max(2, round(n * scale()))


def main() -> int:
    """``python -m gradnoise.device``: print the device line, or one line saying why it is unavailable."""
    import sys

    try:
        print(describe())
    except (DeviceUnavailable, ValueError) as err:
        print(f"gradnoise: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
