"""Argument checks shared by the package: each raises ``ValueError`` naming the argument."""
from __future__ import annotations

import math
import operator
import os

import torch


# The programmer's parameters of these checks (a name, a minimum, a flag ...) are checked too, cheaply:
# a check called wrongly must fail loudly, not pass everything.
def _p_name(name) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str (the argument's name), got {name!r}")


def _p_int(v, pname: str, minimum: int | None = None) -> None:
    try:
        v = operator.index(v) if not isinstance(v, bool) else None
    except TypeError:
        v = None
    if v is None or (minimum is not None and v < minimum):
        raise TypeError(f"{pname} must be an int" + (f" >= {minimum}" if minimum is not None else "") + f", got {v!r}")


def _p_flag(v, pname: str) -> None:
    if not isinstance(v, bool):
        raise TypeError(f"{pname} must be True or False, got {v!r}")


def _p_bound(v, pname: str) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
        raise TypeError(f"{pname} must be None or a finite real number, got {v!r}")


def _p_tensor(x, pname: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{pname} must be a torch.Tensor, got {type(x).__name__}")


def matrix(x: torch.Tensor, name: str, min_ndim: int = 2) -> torch.Tensor:
    """Check that ``x`` is a floating tensor with at least ``min_ndim`` dimensions and finite entries."""
    _p_name(name)
    _p_int(min_ndim, "min_ndim", 0)
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
    _p_name(name_a)
    _p_name(name_b)
    _p_tensor(a, name_a)
    _p_tensor(b, name_b)
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}")


def positive_int(n, name: str, minimum: int = 1) -> int:
    """Check that ``n`` is an integer at least ``minimum`` (``numpy.int64`` and 0-d integer tensors count)."""
    _p_int(minimum, "minimum")
    return count(n, name, minimum)


def decay(gamma, name: str = "gamma") -> float:
    """Check that ``gamma`` is a real number in [0, 1)."""
    _p_name(name)
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
    _p_name(name)
    _p_int(minimum, "minimum")
    if maximum is not None:
        _p_int(maximum, "maximum", minimum)
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
    _p_name(name)
    _p_flag(allow_zero, "allow_zero")
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
    _p_name(name)
    value = positive_real(x, name)
    if not value < 1:
        raise ValueError(f"{name} must lie in (0, 1), got {x!r}")
    return value


def generator(gen, name: str = "generator") -> torch.Generator:
    """A ``torch.Generator`` (not ``None``, not a seed): the package never draws from global state."""
    _p_name(name)
    if not isinstance(gen, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator (e.g. gradnoise.generator('label')), got {type(gen).__name__}")
    return gen


def exact_dtype(x: torch.Tensor, name: str) -> torch.Tensor:
    """The exact (SVD/eigh) routes need float32 or float64."""
    _p_name(name)
    _p_tensor(x, name)
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be float32 or float64 for this exact route, got {x.dtype} "
                         "(low precision is what newton_schulz(dtype=...) is for)")
    return x


def allocation(shape, dtype: torch.dtype, name: str, copies: float = 1) -> None:
    """Refuse to allocate a tensor of ``shape`` larger than :func:`allocation_limit` (a size typo, not a request).

    ``copies`` counts the intermediates of that size the computation holds at once (a function that needs
    the result and two temporaries of its size passes 3)."""
    _p_name(name)
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"shape must be a sequence of sizes, got {shape!r}")
    shape = tuple(shape)
    for d in shape:
        _p_int(d, "shape entries", 0)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
    if isinstance(copies, bool) or not isinstance(copies, (int, float)) or not (0 < copies < math.inf):
        raise TypeError(f"copies must be a positive finite number, got {copies!r}")
    numel = 1
    for d in shape:
        numel *= int(d)
    size = numel * torch.empty((), dtype=dtype).element_size() * copies
    limit = allocation_limit()
    if size > limit:
        raise ValueError(f"{name} would allocate {size / 2**30:.1f} GiB (shape {tuple(int(d) for d in shape)}); "
                         f"the limit is {limit / 2**30:.0f} GiB (4 GiB times GRADNOISE_SCALE, at most half the "
                         "machine's memory)")


def same_kind(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Same dtype and device."""
    _p_name(name_a)
    _p_name(name_b)
    _p_tensor(a, name_a)
    _p_tensor(b, name_b)
    if a.dtype != b.dtype or a.device != b.device:
        raise ValueError(f"{name_b} ({b.dtype}, {b.device}) must match {name_a} ({a.dtype}, {a.device})")


def batch_broadcast(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """The leading (batch) dimensions of two stacks of matrices must broadcast."""
    _p_name(name_a)
    _p_name(name_b)
    for x, n in ((a, name_a), (b, name_b)):
        _p_tensor(x, n)
        if x.ndim < 2:
            raise ValueError(f"{n} must be a (stack of) matrices, got shape {tuple(x.shape)}")
    try:
        torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except RuntimeError:
        raise ValueError(f"the batch dimensions of {name_a} {tuple(a.shape[:-2])} and {name_b} "
                         f"{tuple(b.shape[:-2])} do not broadcast") from None


def dim(d, ndim: int, name: str = "dim") -> int:
    """A dimension index valid for a tensor of ``ndim`` dimensions."""
    _p_name(name)
    _p_int(ndim, "ndim", 1)
    value = count(d, name, minimum=-ndim) if not isinstance(d, int) or isinstance(d, bool) else d
    if isinstance(d, bool) or not -ndim <= value < ndim:
        raise ValueError(f"{name} must lie in [{-ndim}, {ndim - 1}] for a tensor of {ndim} dimensions, got {d!r}")
    return value


def _not_a_number(x) -> bool:
    return x is None or isinstance(x, (bool, str, bytes, complex))


def real(x, name: str, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number (not a bool, a string or a complex number; NaN refused) in the interval from
    ``low`` to ``high`` (closed ends unless ``low_open``/``high_open``); returned as ``float``."""
    _p_name(name)
    _p_bound(low, "low")
    _p_bound(high, "high")
    _p_flag(low_open, "low_open")
    _p_flag(high_open, "high_open")
    interval = _interval(low, high, low_open, high_open)
    if _not_a_number(x) or (isinstance(x, torch.Tensor) and (x.numel() != 1 or x.is_complex() or x.dtype == torch.bool)):
        raise ValueError(f"{name} must be a finite real number in {interval}, got {_short(x)}")
    try:
        value = float(x)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise ValueError(f"{name} must be a finite real number in {interval}, got {_short(x)}") from None
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ValueError(f"{name} must be a finite real number in {interval}, got {_short(x)}")
    return value


def real_tensor(x, name: str, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False, device=None,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``x`` (a number, a sequence or a real tensor) as a ``dtype`` tensor whose entries are finite and lie
    in the interval from ``low`` to ``high`` (as :func:`real`); NaN, bools, strings and complex refused."""
    _p_name(name)
    _p_bound(low, "low")
    _p_bound(high, "high")
    _p_flag(low_open, "low_open")
    _p_flag(high_open, "high_open")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    interval = _interval(low, high, low_open, high_open)
    if device is not None:
        device = torch_device(device, "device")
    if _not_a_number(x) or (isinstance(x, torch.Tensor) and (x.is_complex() or x.dtype == torch.bool)):
        raise ValueError(f"{name} must be real numbers in {interval}, got {_short(x)}")
    if isinstance(x, (list, tuple)) and any(_not_a_number(v) for v in _flat(x)):
        raise ValueError(f"{name} must be real numbers in {interval}, got {_short(x)}")
    try:
        t = torch.as_tensor(x, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise ValueError(f"{name} must be real numbers in {interval}, got {_short(x)}") from None
    if t.numel() == 0:
        raise ValueError(f"{name} is empty")
    bad = ~torch.isfinite(t)
    if low is not None:
        bad |= (t <= low) if low_open else (t < low)
    if high is not None:
        bad |= (t >= high) if high_open else (t > high)
    if bool(bad.any()):
        raise ValueError(f"{name} must be finite real numbers in {interval}, got {_short(x)}")
    return t


def _interval(low, high, low_open, high_open) -> str:
    return (("(" if low_open or low is None else "[") + ("-inf" if low is None else f"{low:g}") + ", "
            + ("inf" if high is None else f"{high:g}") + (")" if high_open or high is None else "]"))


def _flat(x):
    for v in x:
        if isinstance(v, (list, tuple)):
            yield from _flat(v)
        else:
            yield v


def _short(x) -> str:
    """A one-line, short description of a value for an error message."""
    if isinstance(x, torch.Tensor):
        if x.numel() <= 4:
            return f"{x.tolist()!r}"
        return f"a tensor of shape {tuple(x.shape)} ({x.dtype})"
    text = repr(x).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def choice(x, name: str, options) -> object:
    """``x`` must be one of ``options`` (compared with ``==`` after a type check, so ``True`` is not ``1``)."""
    _p_name(name)
    if isinstance(options, (str, bytes)) or not isinstance(options, (tuple, list, set, frozenset)) or not options:
        raise TypeError(f"options must be a non-empty tuple, list or set, got {options!r}")
    for o in options:
        if type(x) is type(o) and x == o:
            return x
    raise ValueError(f"{name} must be one of {tuple(options)!r}, got {_short(x)}")


def flag(x, name: str) -> bool:
    """A ``bool`` (not a number standing in for one)."""
    _p_name(name)
    if not isinstance(x, bool):
        raise ValueError(f"{name} must be True or False, got {_short(x)}")
    return x


def argv(args, name: str = "argv"):
    """A command line: ``None`` (take ``sys.argv``) or a list or tuple of strings; returned unchanged."""
    _p_name(name)
    if args is not None and (isinstance(args, (str, bytes)) or not isinstance(args, (list, tuple))
                             or not all(isinstance(a, str) for a in args)):
        raise ValueError(f"{name} must be a list of strings, got {_short(args)}")
    return args


def function(f, name: str):
    """A callable."""
    _p_name(name)
    if not callable(f):
        raise ValueError(f"{name} must be callable, got {type(f).__name__}")
    return f


MAX_STEPS = 10**6
"""Most iterations of a Python-level loop over steps a function runs at ``GRADNOISE_SCALE=1`` (grows with the
knob, to at most 10**8): a chapter-scale run takes thousands of steps and seconds; a million times more is
a typo, refused in one line rather than run for days."""


def steps(n, name: str = "steps", minimum: int = 0) -> int:
    """A number of iterations: an integer from ``minimum`` to :data:`MAX_STEPS` times the size knob."""
    _p_int(minimum, "minimum", 0)
    from .device import scale

    return count(n, name, minimum=minimum, maximum=int(min(MAX_STEPS * max(1.0, scale()), 10**8)))


def tensor(x, name: str, ndim: int | None = None, min_ndim: int = 0, floating: bool = True,
           allow_empty: bool = False, finite: bool = True) -> torch.Tensor:
    """A tensor (``ndim`` dimensions exactly, or at least ``min_ndim``), floating-point unless told otherwise,
    non-empty and with finite entries unless told otherwise."""
    _p_name(name)
    if ndim is not None:
        _p_int(ndim, "ndim", 0)
    _p_int(min_ndim, "min_ndim", 0)
    for v, pname in ((floating, "floating"), (allow_empty, "allow_empty"), (finite, "finite")):
        _p_flag(v, pname)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if not allow_empty and x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if finite and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def floating_dtype(dtype, name: str = "dtype") -> torch.dtype:
    """A floating-point ``torch.dtype``."""
    _p_name(name)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point torch.dtype, got {_short(dtype)}")
    return dtype


def inside(path, root, name: str = "path"):
    """``path`` resolved (``..`` and symlinks followed) must lie inside ``root`` resolved; returns it."""
    _p_name(name)
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path, got {type(root).__name__}")
    import pathlib

    try:
        resolved = pathlib.Path(path).resolve()
        base = pathlib.Path(root).resolve()
    except (TypeError, ValueError, OSError):
        raise ValueError(f"{name} must be a path, got {_short(path)}") from None
    if resolved != base and base not in resolved.parents:
        raise ValueError(f"{name} {str(path)!r} resolves outside {str(base)!r}; refused")
    return resolved


def torch_device(d, name: str = "device") -> torch.device:
    """A device this machine has: ``None`` (the book's device), a ``torch.device`` or its name."""
    _p_name(name)
    from . import device as _device

    if d is None:
        return _device.device()
    if isinstance(d, torch.device):
        dev = d
    elif isinstance(d, str):
        try:
            dev = torch.device(d)
        except RuntimeError:
            raise ValueError(f"{name} {d!r} is not a torch device name (try 'cpu' or 'cuda')") from None
    else:
        raise ValueError(f"{name} must be None, a torch.device or a device name, got {type(d).__name__}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {str(d)!r} asks for CUDA, but torch sees no GPU here (use 'cpu')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name} {str(d)!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type != "cpu":
        raise ValueError(f"{name} {str(d)!r}: only 'cpu' and 'cuda[:i]' are supported")
    return dev


def long_tensor(x, name: str, min_ndim: int = 1) -> torch.Tensor:
    """A tensor of integer indices (``torch.long``) with at least ``min_ndim`` dimensions."""
    _p_name(name)
    _p_int(min_ndim, "min_ndim", 0)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of indices, got {type(x).__name__}")
    if x.dtype != torch.long:
        raise ValueError(f"{name} must be a long tensor, got {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    return x


def path(p, name: str, kind: str = "any", exists: bool = True):
    """A filesystem path (``str`` or ``os.PathLike``) as a ``pathlib.Path``; with ``exists`` it must exist and be
    a ``kind`` (``"file"``, ``"dir"`` or ``"any"``)."""
    import pathlib

    _p_name(name)
    choice(kind, "kind", ("file", "dir", "any"))
    _p_flag(exists, "exists")
    if isinstance(p, bool) or not isinstance(p, (str, os.PathLike)) or (isinstance(p, str) and not p):
        raise ValueError(f"{name} must be a path, got {_short(p)}")
    out = pathlib.Path(p)
    if exists:
        if not out.exists():
            raise ValueError(f"{name} {str(p)!r} does not exist")
        if kind == "file" and not out.is_file():
            raise ValueError(f"{name} {str(p)!r} is not a file")
        if kind == "dir" and not out.is_dir():
            raise ValueError(f"{name} {str(p)!r} is not a folder")
    return out


_PLAIN_NAME = __import__("re").compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def plain_name(x, name: str) -> str:
    """A plain file-name stem (a chapter's name): letters, digits, ``-``, ``_`` or ``.``, no ``/`` and no ``..``."""
    _p_name(name)
    if not isinstance(x, str) or not _PLAIN_NAME.match(x) or ".." in x:
        raise ValueError(f"{name} must be a plain name (letters, digits, '-', '_', '.'), got {_short(x)}")
    return x
