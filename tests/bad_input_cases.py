"""The case table of the bad-input property test (``tests/test_bad_input.py``), and its worker.

One entry per public function of ``gradnoise``: ``case(QUALNAME, valid, **kinds)``, where ``valid(W)``
returns the keyword arguments of one call inside the function's documented domain (``W`` is the
scratch workspace: ``W.root``, the root a site function is given, ``W.victim``, a folder beside it that
must survive every call, and ``W.tmp``) and every parameter of the function gets a *kind*, which says
which values are outside its domain:

=================  ==========================================================================================
``Count``          an integer count: ``0``/below the minimum, ``-1``, ``2.5``, ``True``, ``"3"``, ``None``, ``10**12``
                   (a size that would allocate terabytes or loop for ever; ``huge=False`` where it is harmless)
``Real``           a real number in a range: NaN, inf, -1 / out of range, the excluded ends, complex, a string
``Tensor``         wrong dtype (int64, float16, complex), wrong ndim, empty, NaN/inf entries, a non-tensor,
                   a shape that mismatches its ``partner`` (another argument)
``Arr``            an array-like (tensor, list or number: the nqm / stats style): NaN, inf, values outside the
                   domain, strings, ``None``, complex, empty
``Gen``            a generator: ``None``, an int seed, a string
``Choice``         one of a few words: a wrong word, ``None``, an int
``Path``/``Build`` paths: a missing folder, a file, ``None``, an int; ``Build``: ``..``, absolute and symlinked
                   escapes from the root (the contract: nothing outside the root is deleted)
``Free``           no value is outside the domain (a label used only in messages, a map called on anything,
                   an object that only Sphinx passes); the reason is the kind's argument
=================  ==========================================================================================

``extra=`` adds values a kind does not know (a singular ``H``, labels 10 and -1, a 200 x 200 Lyapunov
system): a value, or ``Replace(...)`` which changes several arguments at once.
Environment variables (``GRADNOISE_SCALE``, ``_DEVICE``, ``_SEED``, ``_EVIDENCE``, ``_EDITION``) have their
own table, ``ENV_CASES``.

Run as a script (``python tests/bad_input_cases.py --zygote``) this module is the test's worker factory: it
imports ``gradnoise`` once and forks a worker on request; a worker reads one JSON job per line, makes the
call and writes one JSON line with what happened (returned, or the exception's type, message and where it
was raised).
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
HUGE = 10**12


# --- the kinds ------------------------------------------------------------------------------------------

class Replace(dict):
    """A bad value that replaces several arguments at once (``Replace(shape=..., law=...)``)."""


class Kind:
    """An argument's kind: ``bad()`` lists ``(label, maker)``, ``maker(valid_value, kwargs, W)`` the bad value."""

    optional = False
    strategy_key = None          # a hashable description of the out-of-domain scalars Hypothesis draws

    sample = None                # a valid value to derive bad ones from, where the valid call passes None
    with_ = None                 # other arguments set along with every bad value of this one

    def __init__(self, extra=None, names=(), optional=False):
        self.extra = dict(extra or {})
        self.names = tuple(names)        # other words that name the argument in a message
        if optional:
            self.optional = True         # None is in the domain

    def own(self):
        return []

    def bad(self):
        out = list(self.own())
        if not self.optional and not any(label == "None" for label, _ in out) and self.none_is_bad():
            out.append(("None", lambda v, kw, W: None))
        for label, value in self.extra.items():
            out.append((label, value if callable(value) and not isinstance(value, Replace) else (lambda v, kw, W, x=value: x)))
        return out

    def none_is_bad(self):
        return True


def const(x):
    return lambda v, kw, W: x


class Free(Kind):
    """No value is outside the domain; ``why`` says why (it is printed in the table of kinds)."""

    def __init__(self, why: str, extra=None):
        super().__init__(extra)
        self.why = why

    def none_is_bad(self):
        return False


class Count(Kind):
    def __init__(self, minimum=1, maximum=None, huge=True, optional=False, extra=None, names=()):
        super().__init__(extra, names)
        self.minimum, self.maximum, self.huge, self.optional = minimum, maximum, huge, optional
        self.strategy_key = ("count", minimum, maximum)

    def own(self):
        out = [(f"{self.minimum - 1} (below the minimum)", const(self.minimum - 1))]
        if self.minimum - 1 != -1:
            out.append(("-1", const(-1)))
        if self.maximum is not None:
            out.append((f"{self.maximum + 1} (above the maximum)", const(self.maximum + 1)))
        out += [("2.5", const(2.5)), ("True", const(True)), ('"3"', const("3"))]
        if self.huge:
            out.append(("10**12", const(HUGE)))
        return out


class Real(Kind):
    """A real number in ``[lo, hi]`` (``lo_open``/``hi_open`` exclude the ends; ``None``: unbounded)."""

    def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False, inf_ok=False, optional=False,
                 extra=None, names=()):
        super().__init__(extra, names)
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        self.inf_ok, self.optional = inf_ok, optional
        self.strategy_key = ("real", lo, hi, lo_open, hi_open, inf_ok)

    def inside(self, x: float) -> bool:
        if math.isnan(x) or (math.isinf(x) and not self.inf_ok):
            return False
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            return False
        if self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)):
            return False
        return True

    def own(self):
        out = [("nan", const(math.nan))]
        if not self.inside(math.inf):
            out.append(("inf", const(math.inf)))
        if not self.inside(-math.inf):
            out.append(("-inf", const(-math.inf)))
        if not self.inside(-1.0):
            out.append(("-1", const(-1.0)))
        if self.lo is not None and self.lo_open and self.lo != -1:
            out.append((f"{self.lo} (excluded end)", const(float(self.lo))))
        if self.hi is not None and self.hi != math.inf:
            out.append((f"{self.hi} (excluded end)" if self.hi_open else f"{self.hi + 1} (above the range)",
                        const(float(self.hi) if self.hi_open else float(self.hi + 1))))
        out += [("1+1j", const(1 + 1j)), ('"0.5"', const("0.5")), ("True", const(True))]
        return out


class Choice(Kind):
    def __init__(self, *options, optional=False, extra=None, names=()):
        super().__init__(extra, names)
        self.options, self.optional = options, optional

    def own(self):
        return [('"bogus"', const("bogus")), ("7", const(7))]


class Gen(Kind):
    def __init__(self, optional=False, extra=None, names=()):
        super().__init__(extra, names)
        self.optional = optional

    def own(self):
        return [("0 (an int seed)", const(0)), ('"gen"', const("gen"))]


class Device(Kind):
    """A ``device=`` argument (``None``: the book's device): wrong device strings and non-devices."""

    optional = True

    def own(self):
        return [('"cuda:7"', const("cuda:7")), ('"bogus"', const("bogus")), ("5", const(5))]


class Dtype(Kind):
    def __init__(self, optional=False, extra=None, names=()):
        super().__init__(extra, names)
        self.optional = optional

    def own(self):
        import torch
        return [("torch.int64", const(torch.int64)), ('"float64"', const("float64")),
                ("torch.complex128", const(torch.complex128))]


class Flag(Kind):
    """A boolean switch: a string (whose truth value is not what it says) and ``None``."""

    def own(self):
        return [('"no"', const("no"))]


class Text(Kind):
    def __init__(self, empty_bad=True, bytes_bad=True, extra=None, names=()):
        super().__init__(extra, names)
        self.empty_bad, self.bytes_bad = empty_bad, bytes_bad

    def own(self):
        out = [("5", const(5))] + ([("b'bytes'", const(b"bytes"))] if self.bytes_bad else [])
        if self.empty_bad:
            out.append(('""', const("")))
        return out


class Name(Kind):
    """A chapter (file) name: empty, with a path separator, ``..``, non-strings."""

    def __init__(self, optional=False, extra=None, names=()):
        super().__init__(extra, names)
        self.optional = optional

    def own(self):
        return [('""', const("")), ('"../escape"', const("../escape")), ('"a/b"', const("a/b")), ("5", const(5))]


class Claim(Kind):
    optional = True

    def own(self):
        return [('"C7"', const("C7")), ("5", const(5)), ('""', const(""))]


class Shape(Kind):
    """A shape (sequence of sizes)."""

    def __init__(self, huge=True, extra=None, names=()):
        super().__init__(extra, names)
        self.huge = huge

    def own(self):
        out = [("(-1, 2)", const((-1, 2))), ("(2.5,)", const((2.5,))), ('"ab"', const("ab"))]
        if self.huge:
            out.append(("(10**6, 10**6)", const((10**6, 10**6))))
        return out


class Call(Kind):
    """A function argument."""

    def __init__(self, optional=False, extra=None, names=()):
        super().__init__(extra, names)
        self.optional = optional

    def own(self):
        return [("3 (not callable)", const(3))]


class Path(Kind):
    """An existing folder (``file=True``: an existing file)."""

    def __init__(self, file=False, must_exist=True, extra=None, names=()):
        super().__init__(extra, names)
        self.file, self.must_exist = file, must_exist

    def own(self):
        out = [("5", const(5))]
        if self.must_exist:
            out.append(("missing", lambda v, kw, W: str(W.tmp / f"no-such-{os.urandom(4).hex()}")))
            out.append(("a folder" if self.file else "a file",
                        (lambda v, kw, W: str(W.tmp)) if self.file else (lambda v, kw, W: str(W.tmp / "a-file.txt"))))
        return out


class Build(Kind):
    """A folder inside the root that the call may delete things in: escapes must be refused."""

    def own(self):
        return [('"../victim"', const("../victim")),
                ("absolute path of victim", lambda v, kw, W: str(W.victim)),
                ('"link" (a symlink to victim)', const("link")),
                ('"link/.."', const("link/..")),
                ('"." (the root itself)', const(".")),
                ('""', const("")), ("5", const(5))]


class Tensor(Kind):
    """A tensor argument.

    ``dtypes``: the floating dtypes in the domain (default, or ``"float"``: any floating dtype; ``EXACT``:
    float32 and float64, what the SVD/eigh routes take; ``"any"``: any dtype); ``min_ndim``/``ndim``; ``finite``: NaN/inf entries are outside the domain;
    ``partner``: the argument whose shape this one must match (a mismatch is a bad value); ``kind_of``:
    the argument whose dtype it must share.
    """

    def __init__(self, min_ndim=0, ndim=None, dtypes=None, finite=True, empty_ok=False, partner=None,
                 kind_of=None, optional=False, list_ok=False, extra=None, names=()):
        super().__init__(extra, names)
        self.min_ndim, self.ndim, self.dtypes, self.finite = min_ndim, ndim, dtypes, finite
        self.empty_ok, self.partner, self.kind_of, self.optional, self.list_ok = empty_ok, partner, kind_of, optional, list_ok

    def own(self):
        import torch
        allowed = self.dtypes
        out = []
        if allowed != "any":
            ok = allowed
            if allowed not in (None, "float"):
                if torch.float16 not in ok:
                    out.append(("float16 entries", lambda v, kw, W: v.to(torch.float16)))
                if torch.float32 not in ok:
                    out.append(("float32 entries", lambda v, kw, W: v.to(torch.float32)))
            out.append(("int64 entries", lambda v, kw, W: v.round().to(torch.int64)))
            out.append(("complex entries", lambda v, kw, W: v.to(torch.complex128)))
        low = max(self.min_ndim, self.ndim or 0)
        if low >= 1:
            out.append((f"{low - 1}-d (too few dimensions)",
                        lambda v, kw, W, k=low - 1: v.reshape(-1)[: 1].reshape((1,) * k) if k else v.reshape(-1)[0]))
        if self.ndim is not None:
            out.append((f"{self.ndim + 1}-d (too many dimensions)", lambda v, kw, W: v.unsqueeze(0).expand(2, *v.shape).clone()))
        if not self.empty_ok:
            out.append(("empty", lambda v, kw, W: v[..., :0] if v.ndim else v.reshape(0)))
        if self.finite and allowed != "any":
            out.append(("a NaN entry", lambda v, kw, W: _poke(v, math.nan)))
            out.append(("an inf entry", lambda v, kw, W: _poke(v, math.inf)))
        out.append(('"tensor" (a string)', const("tensor")))
        if not self.list_ok:
            out.append(("a nested list", lambda v, kw, W: v.tolist()))
        if self.partner is not None:
            out.append((f"shape mismatching {self.partner}",
                        lambda v, kw, W: torch.cat([v, v[..., :1]], dim=-1)))
        if self.kind_of is not None:
            out.append((f"dtype other than {self.kind_of}'s",
                        lambda v, kw, W: v.to(torch.float32 if v.dtype == torch.float64 else torch.float64)))
        return out


def with_sample(kind, sample, **with_):
    """``kind`` whose bad values derive from ``sample(kwargs)`` when the valid call passes None, set along
    with the arguments ``with_``."""
    kind.sample, kind.with_ = sample, (with_ or None)
    return kind


def _poke(v, value):
    out = v.clone()
    out.view(-1)[0] = value
    return out


class Arr(Kind):
    """An array-like (tensor, list, number) with entries in ``Real``'s range."""

    def __init__(self, lo=None, hi=None, lo_open=False, hi_open=False, empty_bad=True, extra=None, names=()):
        super().__init__(extra, names)
        self.lo, self.hi, self.lo_open, self.hi_open, self.empty_bad = lo, hi, lo_open, hi_open, empty_bad

    def own(self):
        out = [("NaN entry", lambda v, kw, W: _arr_poke(v, math.nan)), ("inf entry", lambda v, kw, W: _arr_poke(v, math.inf))]
        if self.lo is not None:
            bad = self.lo if self.lo_open else self.lo - 1
            out.append((f"entry {bad} (below the range)", lambda v, kw, W, b=bad: _arr_poke(v, b)))
        if self.hi is not None:
            bad = self.hi if self.hi_open else self.hi + 1
            out.append((f"entry {bad} (above the range)", lambda v, kw, W, b=bad: _arr_poke(v, b)))
        out += [('"abc"', const("abc")), ("1+1j", const(1 + 1j))]
        if self.empty_bad:
            out.append(("[] (empty)", const([])))
        return out


def _arr_poke(v, value):
    import torch
    t = torch.as_tensor(v, dtype=torch.float64).clone()
    if t.ndim == 0:
        return torch.tensor(value, dtype=torch.float64)
    t.view(-1)[0] = value
    return t


# --- the table ------------------------------------------------------------------------------------------

class Case:
    def __init__(self, qualname, valid, kinds, limit=None, cli=False, names=None):
        self.qualname, self.valid, self.kinds, self.limit, self.cli = qualname, valid, kinds, limit, cli
        self.names = names or {}


CASES: dict[str, Case] = {}


def case(qualname, valid, _limit=None, _cli=False, **kinds):
    """Add a function's entry: ``valid(W)`` -> keyword arguments of a call in the domain; a kind per parameter.

    ``_limit``: seconds a call may take (default: the test's); ``_cli``: a command-line ``main`` (a non-zero
    exit status is its clean refusal)."""
    if qualname in CASES:
        raise ValueError(f"two entries for {qualname}")
    CASES[qualname] = Case(qualname, valid, kinds, _limit, _cli)


def f64(*shape, seed=0):
    import torch
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def gen(label="bad-input"):
    import torch
    return torch.Generator().manual_seed(12345)


def well(m=3, n=4, seed=1):
    """A well-conditioned m x n matrix."""
    import torch
    G = f64(m, n, seed=seed)
    k = min(m, n)
    G[:k, :k] += 3 * torch.eye(k, dtype=torch.float64)
    return G


def spd(d=3, seed=2):
    import torch
    A = f64(d, d, seed=seed)
    return A @ A.T / d + torch.eye(d, dtype=torch.float64)


def params():
    from gradnoise import pergrad
    import torch
    return pergrad.initial_parameters(torch.Generator().manual_seed(3), device="cpu")


_DIGITS = []


def digits_data():
    """The digits data set, loaded once per worker (it is deterministic)."""
    if not _DIGITS:
        from gradnoise.networks import digits
        _DIGITS.append(digits.digits(device="cpu"))
    return _DIGITS[0]


def xy(n=12):
    import torch
    x = f64(n, 64, seed=4)
    y = torch.arange(n, dtype=torch.int64) % 10
    return x, y


def Params(f32=True, partial_ok=False):
    """The pergrad parameter dict: missing key, wrong shape, NaN entries, float32 entries (where the data are
    float64), non-dicts."""
    import torch

    def drop(v, kw, W):
        return {k: t for k, t in v.items() if k != "2.bias"}

    def reshape(v, kw, W):
        out = dict(v)
        out["0.weight"] = out["0.weight"][:, :10]
        return out

    def nan(v, kw, W):
        out = {k: t.clone() for k, t in v.items()}
        out["0.weight"].view(-1)[0] = math.nan
        return out

    def to32(v, kw, W):
        return {k: t.to(torch.float32) for k, t in v.items()}

    def ints(v, kw, W):
        return {k: t.round().to(torch.int64) for k, t in v.items()}

    extra = {"a key missing": drop, "0.weight of wrong shape": reshape, "a NaN entry": nan,
             "float32 entries": to32, "int64 entries": ints, "5": 5}
    if not f32:
        del extra["float32 entries"]
    if partial_ok:
        del extra["a key missing"]
    return Kind(extra=extra)


def Labels():
    import torch

    def lab(value):
        def make(v, kw, W):
            out = v.clone()
            out[0] = value
            return out
        return make

    return Kind(extra={"label 10": lab(10), "label -1": lab(-1),
                       "float labels": lambda v, kw, W: v.to(torch.float64),
                       "one label short": lambda v, kw, W: v[:-1],
                       "a list": lambda v, kw, W: v.tolist()})


import gradnoise  # noqa: E402  (the table below names the package's functions)
import torch  # noqa: E402

EXACT = (torch.float32, torch.float64)

# gradnoise (package) ----------------------------------------------------------------------------------
case("gradnoise.chapter", lambda W: dict(name="bad-input-probe", claim=None), name=Name(), claim=Claim())

# checks -----------------------------------------------------------------------------------------------
NAME_ONLY = "only used to name the argument in a message"
case("gradnoise.checks.matrix", lambda W: dict(x=f64(3, 2), name="thing", min_ndim=2),
     x=Tensor(min_ndim=2, names=("thing",)), name=Free(NAME_ONLY), min_ndim=Count(minimum=0, huge=False))
case("gradnoise.checks.same_shape", lambda W: dict(a=f64(2, 3), b=f64(2, 3), name_a="left", name_b="right"),
     a=Tensor(dtypes="any", empty_ok=True, finite=False, names=("left", "right")),
     b=Tensor(dtypes="any", empty_ok=True, finite=False, names=("left", "right")),
     name_a=Free(NAME_ONLY), name_b=Free(NAME_ONLY))
case("gradnoise.checks.positive_int", lambda W: dict(n=3, name="thing", minimum=1),
     n=Count(huge=False, names=("thing",)), name=Free(NAME_ONLY),
     minimum=Kind(extra={"2.5": 2.5, '"1"': "1", "True": True, "nan": math.nan}))
case("gradnoise.checks.decay", lambda W: dict(gamma=0.5, name="momentum"),
     gamma=Real(0, 1, hi_open=True, names=("momentum",)), name=Free(NAME_ONLY))
case("gradnoise.checks.allocation_limit", lambda W: dict())
case("gradnoise.checks.machine_memory", lambda W: dict())
case("gradnoise.checks.count", lambda W: dict(n=3, name="thing", minimum=1, maximum=None),
     n=Count(huge=False, names=("thing",)), name=Free(NAME_ONLY),
     minimum=Kind(extra={"2.5": 2.5, '"1"': "1", "True": True}),
     maximum=Kind(optional=True, extra={"2.5": 2.5, '"9"': "9", "True": True, "0 (below minimum: nothing passes)": 0},
                  names=("minimum",)))
case("gradnoise.checks.positive_real", lambda W: dict(x=0.5, name="thing", allow_zero=False),
     x=Real(0, None, lo_open=True, names=("thing",)), name=Free(NAME_ONLY), allow_zero=Flag())
case("gradnoise.checks.open_unit", lambda W: dict(x=0.5, name="thing"),
     x=Real(0, 1, lo_open=True, hi_open=True, names=("thing",)), name=Free(NAME_ONLY))
case("gradnoise.checks.generator", lambda W: dict(gen=gen(), name="gen"), gen=Gen(), name=Free(NAME_ONLY))
case("gradnoise.checks.exact_dtype", lambda W: dict(x=f64(2, 2), name="thing"),
     x=Kind(names=("thing",), extra={"float16": lambda v, kw, W: v.half(), "int64": lambda v, kw, W: v.long(),
                                     "complex": lambda v, kw, W: v.to(__import__("torch").complex128),
                                     '"tensor"': "tensor"}), name=Free(NAME_ONLY))
case("gradnoise.checks.allocation", lambda W: dict(shape=(3, 4), dtype=__import__("torch").float64, name="thing", copies=1),
     shape=Shape(names=("thing",)), dtype=Kind(extra={'"float64"': "float64", "5": 5}), name=Free(NAME_ONLY),
     copies=Real(0, None, lo_open=True))
case("gradnoise.checks.same_kind", lambda W: dict(a=f64(2), b=f64(2), name_a="left", name_b="right"),
     a=Kind(names=("left", "right"), extra={"float32": lambda v, kw, W: v.float(), '"tensor"': "tensor"}),
     b=Kind(names=("left", "right"), extra={"float32": lambda v, kw, W: v.float(), '"tensor"': "tensor"}),
     name_a=Free(NAME_ONLY), name_b=Free(NAME_ONLY))
case("gradnoise.checks.batch_broadcast", lambda W: dict(a=f64(2, 3, 3), b=f64(1, 3, 3), name_a="left", name_b="right"),
     a=Tensor(min_ndim=2, dtypes="any", empty_ok=True, finite=False, names=("left", "right"),
              extra={"batch (3,) against (2,)": Replace(a=f64(3, 3, 3), b=f64(2, 3, 3))}),
     b=Tensor(min_ndim=2, dtypes="any", empty_ok=True, finite=False, names=("left", "right"),
              extra={"batch (3,) against (2,)": lambda v, kw, W: f64(3, 3, 3)}),
     name_a=Free(NAME_ONLY), name_b=Free(NAME_ONLY))
case("gradnoise.checks.dim", lambda W: dict(d=-1, ndim=3, name="dim"),
     d=Kind(names=("dim",), extra={"3 (out of range)": 3, "-4 (out of range)": -4, "2.5": 2.5, '"0"': "0", "True": True}),
     ndim=Count(minimum=1, huge=False), name=Free(NAME_ONLY))

# device, seeds ----------------------------------------------------------------------------------------
case("gradnoise.device.device", lambda W: dict())
case("gradnoise.device.describe", lambda W: dict())
case("gradnoise.device.as_tensor", lambda W: dict(x=[1.0, 2.0], dtype=__import__("torch").float64),
     x=Kind(extra={'"abc"': "abc", "{1: 2}": {1: 2}, "object()": lambda v, kw, W: object()}),
     dtype=Kind(extra={'"float64"': "float64", "5": 5}))
case("gradnoise.device.scale", lambda W: dict())
case("gradnoise.device.trials", lambda W: dict(n=100), n=Count(minimum=2, huge=False))
case("gradnoise.device.main", lambda W: dict(), _cli=True)
case("gradnoise.seeds.base_seed", lambda W: dict())
case("gradnoise.seeds.seed_for", lambda W: dict(label="x"), label=Text())
case("gradnoise.seeds.generator", lambda W: dict(label="x", device=None), label=Text(), device=Device())

# diffusion --------------------------------------------------------------------------------------------
def _sg(theta, g):
    import torch
    return theta + torch.randn(theta.shape, generator=g, dtype=theta.dtype)


def _drift(theta):
    return -theta


def _noise(theta):
    import torch
    return torch.eye(theta.shape[-1], dtype=theta.dtype).expand(*theta.shape, theta.shape[-1])


case("gradnoise.diffusion.sgd_chains",
     lambda W: dict(theta0=f64(4, 2), stochastic_gradient=_sg, eta=0.1, steps=4, gen=gen(), record_every=None),
     theta0=Tensor(ndim=2), stochastic_gradient=Call(), eta=Real(0, None, lo_open=True), steps=Count(),
     gen=Gen(), record_every=Count(optional=True, extra={"3 (does not divide steps)": 3}))
case("gradnoise.diffusion.euler_maruyama",
     lambda W: dict(theta0=f64(4, 2), drift=_drift, noise_factor=_noise, dt=0.1, steps=4, gen=gen(), record_every=None),
     theta0=Tensor(ndim=2), drift=Call(), noise_factor=Call(), dt=Real(0, None, lo_open=True), steps=Count(),
     gen=Gen(), record_every=Count(optional=True, extra={"3 (does not divide steps)": 3}))


def _lyap_bad():
    import torch
    return {"float32 H": lambda v, kw, W: v.float(),
            "200 x 200 (a 12.8 GB system)": lambda v, kw, W: Replace(H=torch.eye(200, dtype=torch.float64),
                                                                     Sigma=torch.eye(200, dtype=torch.float64))}


for _f in ("sgd", "ou"):
    case(f"gradnoise.diffusion.{_f}_stationary_covariance",
         lambda W: dict(H=spd(3), Sigma=spd(3, seed=5), eta=0.1, batch=4),
         H=Tensor(min_ndim=2, dtypes=(__import__("torch").float64,), partner="Sigma", extra=_lyap_bad()),
         Sigma=Tensor(min_ndim=2, dtypes=(__import__("torch").float64,), partner="H",
                      extra={"negative definite": lambda v, kw, W: -v}),
         eta=Real(0, None, lo_open=True), batch=Count(huge=False))

# estimators -------------------------------------------------------------------------------------------
case("gradnoise.estimators.identity", lambda W: dict(x=f64(2, 2)), x=Free("the identity map takes anything"))
case("gradnoise.estimators.minibatch_mean", lambda W: dict(tokens=f64(5, 2, 3)), tokens=Tensor(min_ndim=3))
case("gradnoise.estimators.microbatch_means", lambda W: dict(tokens=f64(4, 2, 3), m=2),
     tokens=Tensor(min_ndim=3), m=Count(extra={"3 (does not divide 4 tokens)": 3}))
case("gradnoise.estimators.ema_weights",
     lambda W: dict(gamma=0.5, horizon=None, tol=1e-12, dtype=__import__("torch").float64, device=None),
     gamma=Real(0, 1, hi_open=True), horizon=Count(optional=True), tol=Real(0, 1, lo_open=True, hi_open=True),
     dtype=Dtype(), device=Device())
case("gradnoise.estimators.stationary_horizon", lambda W: dict(gamma=0.5, tol=1e-12),
     gamma=Real(0, 1, hi_open=True), tol=Real(0, 1, lo_open=True, hi_open=True))
case("gradnoise.estimators.ema", lambda W: dict(steps=f64(4, 2, 3), gamma=0.5),
     steps=Tensor(min_ndim=3), gamma=Real(0, 1, hi_open=True))
case("gradnoise.estimators.ema_by_horizon", lambda W: dict(steps=f64(4, 2, 3), gamma=0.5, horizons=3),
     steps=Tensor(min_ndim=3), gamma=Real(0, 1, hi_open=True), horizons=Count())
case("gradnoise.estimators.ema_noise_factor", lambda W: dict(gamma=0.5, horizon=5, rho=0.2),
     gamma=Real(0, 1, hi_open=True), horizon=Count(), rho=Real(-1, 1, lo_open=True, hi_open=True))
case("gradnoise.estimators.richardson", lambda W: dict(g_2k=f64(2, 3), g_k=f64(2, 3, seed=1)),
     g_2k=Tensor(min_ndim=2, partner="g_k"), g_k=Tensor(min_ndim=2, partner="g_2k"))
case("gradnoise.estimators.richardson_estimates",
     lambda W: dict(halves=f64(4, 2, 2, 3), f=__import__("gradnoise").estimators.identity, independent=None),
     halves=Tensor(min_ndim=3, extra={"3 halves": lambda v, kw, W: f64(4, 3, 2, 3)}), f=Call(),
     independent=with_sample(Tensor(min_ndim=2, optional=True, partner="halves", kind_of="halves"),
                             lambda kw: f64(4, 2, 3)))
case("gradnoise.estimators.jackknife_bias",
     lambda W: dict(micro=f64(4, 3, 2, 3), f=__import__("gradnoise").estimators.identity),
     micro=Tensor(min_ndim=3, extra={"one micro-batch": lambda v, kw, W: f64(4, 1, 2, 3)}), f=Call())

# evidence ---------------------------------------------------------------------------------------------
case("gradnoise.evidence.begin", lambda W: dict(name="bad-input-probe", claim=None), name=Name(), claim=Claim())
case("gradnoise.evidence.end", lambda W: dict())
case("gradnoise.evidence.current", lambda W: dict())
case("gradnoise.evidence.record",
     lambda W: dict(kind="agrees", what="probe", entries=3, worst=1.5, bound=5.0, resolution=0.1, claim=None),
     kind=Choice("agrees", "rejects", "exact", "differs"), what=Text(), entries=Count(huge=False),
     worst=Real(0, None), bound=Real(0, None, lo_open=True), resolution=Real(0, None, lo_open=True, inf_ok=True, optional=True),
     claim=Claim())
case("gradnoise.evidence.records", lambda W: dict(chapter=None), chapter=Kind(optional=True, extra={"5": 5}))
case("gradnoise.evidence.load", lambda W: dict(directory=str(W.evidence)), directory=Path())
case("gradnoise.evidence.distinct_predictions",
     lambda W: dict(records=[__import__("gradnoise").evidence.Record("c", None, "w", "agrees", 1, 0.5, 5.0)]),
     records=Kind(extra={"5": 5, '["x"]': ["x"], "[{}] (a dict, not a Record)": [{}]}))

# exact ------------------------------------------------------------------------------------------------
case("gradnoise.exact.mean_law", lambda W: dict(values=[-1.0, 1.0], probs=[0.5, 0.5], k=3),
     values=Arr(extra={"2-d": [[-1.0, 1.0]]}),
     probs=Arr(0, 1, extra={"sum 1.1": [0.5, 0.6], "[-0.5, 1.5]": [-0.5, 1.5], "three entries": [0.2, 0.3, 0.5]}),
     k=Count())
_GD = lambda W: dict(G=well(2, 3), D=f64(2, 3, seed=7))  # noqa: E731
case("gradnoise.exact.polar_along", lambda W: dict(**_GD(W), x=[0.0, 0.1], rtol=None),
     G=Tensor(ndim=2, dtypes=EXACT, partner="D"), D=Tensor(ndim=2, dtypes=EXACT, partner="G", kind_of="G"),
     x=Arr(extra={"2-d": [[0.0, 0.1]]}), rtol=Real(0, 1, lo_open=True, hi_open=True, optional=True))
case("gradnoise.exact.expected_polar_along",
     lambda W: dict(**_GD(W), values=[-0.1, 0.1], probs=[0.5, 0.5], k=2, centered=False, chunk=65536),
     G=Tensor(ndim=2, dtypes=EXACT, partner="D"), D=Tensor(ndim=2, dtypes=EXACT, partner="G", kind_of="G"), values=Arr(),
     probs=Arr(0, 1, extra={"sum 1.1": [0.5, 0.6]}), k=Count(), centered=Flag(), chunk=Count(huge=False))
case("gradnoise.exact.hermite_rule", lambda W: dict(nodes=8), nodes=Count())
case("gradnoise.exact.expected_polar_gaussian_along",
     lambda W: dict(**_GD(W), var=0.01, k=4, nodes=8, centered=False),
     G=Tensor(ndim=2, dtypes=EXACT, partner="D"), D=Tensor(ndim=2, dtypes=EXACT, partner="G", kind_of="G"), var=Real(0, None, lo_open=True),
     k=Count(huge=False), nodes=Count(), centered=Flag())
case("gradnoise.exact.polar_taylor_along", lambda W: dict(**_GD(W), order=2, h=None, points=4),
     G=Tensor(ndim=2, dtypes=EXACT, partner="D"), D=Tensor(ndim=2, dtypes=EXACT, partner="G", kind_of="G"), order=Count(),
     h=Real(0, None, lo_open=True, optional=True), points=Count())

# minibatch --------------------------------------------------------------------------------------------
_SCHEME = lambda: Choice("with", "without", "epoch")  # noqa: E731
case("gradnoise.minibatch.enumeration_size", lambda W: dict(n=4, batch=2, batches=1, scheme="with"),
     n=Count(huge=False), batch=Count(), batches=Count(), scheme=_SCHEME())
case("gradnoise.minibatch.log_enumeration_size", lambda W: dict(n=4, batch=2, batches=1, scheme="with"),
     n=Count(huge=False), batch=Count(huge=False), batches=Count(huge=False), scheme=_SCHEME())
case("gradnoise.minibatch.batch_indices",
     lambda W: dict(n=4, batch=2, batches=1, scheme="with", limit=2_000_000, device=None),
     n=Count(), batch=Count(), batches=Count(), scheme=_SCHEME(), limit=Count(huge=False), device=Device())
case("gradnoise.minibatch.draw_indices", lambda W: dict(n=10, batch=3, shape=(4,), gen=gen(), replacement=True),
     n=Count(huge=False, extra={"10**12 without replacement": Replace(n=HUGE, replacement=False)}),
     batch=Count(), shape=Shape(), gen=Gen(), replacement=Flag())
case("gradnoise.minibatch.sample_indices",
     lambda W: dict(n=10, batch=3, batches=2, trials=5, gen=gen(), scheme="with"),
     n=Count(huge=False), batch=Count(), batches=Count(),
     trials=Count(extra={"10**9 (epoch)": Replace(trials=10**9, scheme="epoch")}), gen=Gen(),
     scheme=_SCHEME())
case("gradnoise.minibatch.batch_means",
     lambda W: dict(g=f64(6, 2), indices=__import__("torch").tensor([[0, 1], [2, 5]])),
     g=Tensor(min_ndim=2),
     indices=Kind(extra={"index 6 (= n)": lambda v, kw, W: v.clone().fill_(6), "index -1": lambda v, kw, W: v.clone().fill_(-1),
                         "float indices": lambda v, kw, W: v.double(), '"tensor"': "tensor", "a list": lambda v, kw, W: v.tolist()}))
case("gradnoise.minibatch.empirical_covariance", lambda W: dict(g=f64(6, 2)),
     g=Tensor(min_ndim=2, extra={"d = 10**5 (an 80 GB covariance)": lambda v, kw, W: f64(2, 100_000)}))
case("gradnoise.minibatch.exact_moments", lambda W: dict(g=f64(4, 2), batch=2, scheme="with"),
     g=Tensor(min_ndim=2), batch=Count(), scheme=Choice("with", "without", extra={'"epoch"': "epoch"}))
case("gradnoise.minibatch.covariance_estimate", lambda W: dict(means=f64(5, 2), batch=3),
     means=Tensor(min_ndim=2, extra={"one batch": lambda v, kw, W: f64(1, 2)}), batch=Count(huge=False))
case("gradnoise.minibatch.estimate_correction", lambda W: dict(n=10, batch=3, scheme="without"),
     n=Count(minimum=2, huge=False), batch=Count(), scheme=_SCHEME())

# muon -------------------------------------------------------------------------------------------------
def _coef():
    return Kind(extra={"two numbers": (1.0, 2.0), '"abc"': "abc", "a NaN": (math.nan, 1.0, 1.0), "5": 5})


case("gradnoise.muon.newton_schulz",
     lambda W: dict(G=well(3, 4), steps=5, coefficients=(3.4445, -4.775, 2.0315), eps=1e-7,
                    dtype=__import__("torch").bfloat16, exact=True),
     G=Tensor(min_ndim=2, dtypes="float"), steps=Count(), coefficients=_coef(), eps=Real(0, None, lo_open=True),
     dtype=Dtype(), exact=Flag())
case("gradnoise.muon.singular_value_map", lambda W: dict(x=f64(5).abs(), steps=5, coefficients=(3.4445, -4.775, 2.0315)),
     x=Tensor(dtypes="float", empty_ok=True), steps=Count(), coefficients=_coef())
case("gradnoise.muon.adjusted_lr", lambda W: dict(lr=0.01, shape=(3, 4), adjust_lr_fn=None),
     lr=Real(0, None),
     shape=Kind(extra={"(3,)": (3,), "(0, 4)": (0, 4), "(-3, 4)": (-3, 4), '("a", "b")': ("a", "b"), "5": 5}),
     adjust_lr_fn=Choice("original", "match_rms_adamw", optional=True))
_BG = lambda W: dict(buf=f64(3, 4), grad=f64(3, 4, seed=8))  # noqa: E731
case("gradnoise.muon.buffer_update", lambda W: dict(**_BG(W), momentum=0.9),
     buf=Tensor(min_ndim=2, dtypes="float", partner="grad"),
     grad=Tensor(min_ndim=2, dtypes="float", partner="buf", kind_of="buf"), momentum=Real(0, 1, hi_open=True))
case("gradnoise.muon.nesterov_mix", lambda W: dict(**_BG(W), momentum=0.9),
     grad=Tensor(min_ndim=2, dtypes="float", partner="buf"),
     buf=Tensor(min_ndim=2, dtypes="float", partner="grad", kind_of="grad"), momentum=Real(0, 1, hi_open=True))
case("gradnoise.muon.step",
     lambda W: dict(param=f64(3, 4, seed=9), **_BG(W), lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                    coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None, exact=True),
     param=Tensor(min_ndim=2, dtypes="float", partner="grad"),
     grad=Tensor(min_ndim=2, dtypes="float", partner="param", kind_of="buf"),
     buf=Tensor(min_ndim=2, dtypes="float", partner="grad", kind_of="grad"),
     lr=Real(0, None), weight_decay=Real(0, None), momentum=Real(0, 1, hi_open=True), nesterov=Flag(),
     coefficients=_coef(), eps=Real(0, None, lo_open=True), ns_steps=Count(),
     adjust_lr_fn=Choice("original", "match_rms_adamw", optional=True), exact=Flag())
case("gradnoise.muon.normalized_in_place_by_torch", lambda W: dict(buf=f64(3, 4), eps=1e-7),
     buf=Tensor(min_ndim=2, dtypes="float"), eps=Real(0, None, lo_open=True))
case("gradnoise.muon.buffer_weights",
     lambda W: dict(momentum=0.9, steps=5, nesterov=True, dtype=__import__("torch").float64, device=None),
     momentum=Real(0, 1, hi_open=True), steps=Count(), nesterov=Flag(), dtype=Dtype(), device=Device())
case("gradnoise.muon.noise_factor", lambda W: dict(momentum=0.9, steps=None, nesterov=True),
     momentum=Real(0, 1, hi_open=True), steps=Count(optional=True, huge=False), nesterov=Flag())

# nqm --------------------------------------------------------------------------------------------------
_H = lambda: Arr(0, None, lo_open=True)           # noqa: E731  curvatures > 0
_C = lambda: Arr(0, None)                         # noqa: E731  noise variances >= 0
_ALPHA = lambda: Arr(0, None, lo_open=True)       # noqa: E731
_BETA = lambda: Arr(0, 1, hi_open=True)           # noqa: E731
_B = lambda: Arr(0, None, lo_open=True)           # noqa: E731
_P = lambda: Arr()                                # noqa: E731  any finite exponent
_THETA0 = lambda: Arr()                           # noqa: E731
_METHOD = lambda: Choice("momentum", "ema")       # noqa: E731
_COMPONENT = lambda: Kind(extra={"2": 2, '"x"': "x", "0.5": 0.5, "True": True, "None": None})  # noqa: E731
_NQM = dict(h=[1.0, 0.5], c=[1.0, 2.0], alpha=0.1, beta=0.5, B=4, p=0.0)
_NQM_K = dict(h=_H(), c=_C(), alpha=_ALPHA(), beta=_BETA(), B=_B(), p=_P())
case("gradnoise.nqm.preconditioned", lambda W: dict(h=[1.0, 0.5], c=[1.0, 2.0], p=0.5), h=_H(), c=_C(), p=_P())
case("gradnoise.nqm.transition", lambda W: dict(h=[1.0, 0.5], alpha=0.1, beta=0.5, method="momentum"),
     h=_H(), alpha=_ALPHA(), beta=_BETA(), method=_METHOD())
case("gradnoise.nqm.second_moment_operator",
     lambda W: dict(A=f64(2, 2, 2), b=f64(2, 2, seed=3)),
     A=Tensor(min_ndim=2, extra={"(3, 3)": lambda v, kw, W: f64(3, 3)}),
     b=Tensor(min_ndim=1, extra={"(3,)": lambda v, kw, W: f64(3)}))
case("gradnoise.nqm.initial_moments", lambda W: dict(theta0=[1.0, 2.0], method="ema"), theta0=_THETA0(), method=_METHOD())
case("gradnoise.nqm.moment_trajectory", lambda W: dict(**_NQM, theta0=1.0, steps=3, method="momentum"),
     **_NQM_K, theta0=_THETA0(), steps=Count(minimum=0), method=_METHOD())
case("gradnoise.nqm.moments_at", lambda W: dict(**_NQM, theta0=1.0, t=5, method="momentum"),
     **_NQM_K, theta0=_THETA0(), t=Count(minimum=0, huge=False), method=_METHOD())
case("gradnoise.nqm.spectral_radius", lambda W: dict(h=[1.0, 0.5], alpha=0.1, beta=0.5, p=0.0, method="momentum"),
     h=_H(), alpha=_ALPHA(), beta=_BETA(), p=_P(), method=_METHOD())
case("gradnoise.nqm.stationary_second_moment", lambda W: dict(**_NQM, method="momentum"), **_NQM_K, method=_METHOD())
case("gradnoise.nqm.coordinate_loss",
     lambda W: dict(h=[1.0, 0.5], second=f64(2, 3).abs(), component=0),
     # NaN and inf are in second's domain: stationary_second_moment marks an unstable setting with NaN
     h=_H(), second=Tensor(min_ndim=1, finite=False, extra={"last axis 2": lambda v, kw, W: v[..., :2]}), component=_COMPONENT())
_TARGET = dict(h=[1.0, 0.5], c=[1.0, 2.0], B=[1.0, 4.0], target=0.05)
case("gradnoise.nqm.steps_to_target",
     lambda W: dict(**_TARGET, alpha=0.1, beta=0.5, p=0.0, theta0=1.0, method="momentum", component=0, max_doublings=12),
     h=_H(), c=_C(), alpha=_ALPHA(), beta=_BETA(), B=_B(), target=Real(0, None, lo_open=True), p=_P(), theta0=_THETA0(),
     method=_METHOD(), component=_COMPONENT(), max_doublings=Count(maximum=40, huge=False))
case("gradnoise.nqm.tuned_steps_to_target",
     lambda W: dict(**_TARGET, alphas=[0.05, 0.1], betas=[0.0, 0.5], p=0.0, theta0=1.0, method="momentum",
                    component=0, max_doublings=12),
     h=_H(), c=_C(), alphas=_ALPHA(), betas=_BETA(), B=_B(), target=Real(0, None, lo_open=True), p=_P(),
     theta0=_THETA0(), method=_METHOD(), component=_COMPONENT(), max_doublings=Count(maximum=40, huge=False))
case("gradnoise.nqm.critical_batch_size", lambda W: dict(B=[1.0, 2.0, 4.0, 8.0], steps=[100.0, 55.0, 40.0, 35.0], factor=2.0),
     B=Arr(0, None, lo_open=True, extra={"decreasing": [8.0, 4.0, 2.0, 1.0], "one entry": [1.0]}),
     steps=Arr(0, None, lo_open=True, extra={"length 3": [100.0, 55.0, 40.0]}), factor=Real(1, None, lo_open=True))
case("gradnoise.nqm.simulate",
     lambda W: dict(**_NQM, theta0=1.0, steps=3, trials=4, generator=gen(), method="momentum", record=None),
     **_NQM_K, theta0=_THETA0(), steps=Count(minimum=0), trials=Count(minimum=2), generator=Gen(), method=_METHOD(),
     record=Kind(optional=True, extra={"5": 5, "[-1]": [-1], "[2.5]": [2.5], "[99] (beyond steps)": [99]}))
case("gradnoise.nqm.first_crossing",
     lambda W: dict(**_NQM, target=0.2, theta0=1.0, method="momentum", component=0, max_steps=50),
     **_NQM_K, target=Real(0, None, lo_open=True), theta0=_THETA0(), method=_METHOD(), component=_COMPONENT(),
     max_steps=Count(minimum=0))

# ortho ------------------------------------------------------------------------------------------------
_RTOL = lambda: Real(0, 1, lo_open=True, hi_open=True, optional=True)  # noqa: E731
case("gradnoise.ortho.gram_max_condition", lambda W: dict(dtype=__import__("torch").float64), dtype=Dtype())
case("gradnoise.ortho.batched_decomposition",
     lambda W: dict(fn=__import__("torch").linalg.eigvalsh, A=spd(3), chunk=None),
     fn=Call(), A=Tensor(min_ndim=2, dtypes=EXACT), chunk=Count(optional=True, huge=False))
_SQ_BAD = {"not symmetric": lambda v, kw, W: v + __import__("torch").triu(v, 1), "indefinite": lambda v, kw, W: -v,
           "not square": lambda v, kw, W: f64(3, 4)}
case("gradnoise.ortho.inv_sqrt_psd", lambda W: dict(H=spd(3), pinv=False, rtol=None),
     H=Tensor(min_ndim=2, dtypes=EXACT, extra=dict(_SQ_BAD, singular=lambda v, kw, W: __import__("torch").zeros(3, 3, dtype=v.dtype))),
     pinv=Flag(), rtol=_RTOL())
case("gradnoise.ortho.preconditioned", lambda W: dict(G=well(2, 3), pinv=False, rtol=None),
     G=Tensor(min_ndim=2, dtypes=EXACT), pinv=Flag(), rtol=_RTOL())
case("gradnoise.ortho.polar_factor", lambda W: dict(G=well(2, 3), method="auto", pinv=False, rtol=None),
     G=Tensor(min_ndim=2, dtypes=EXACT, extra={"rank-deficient": lambda v, kw, W: __import__("torch").zeros_like(v)}),
     method=Choice("auto", "gram", "svd"), pinv=Flag(), rtol=_RTOL())
case("gradnoise.ortho.newton_schulz", lambda W: dict(G=well(2, 3), steps=5, dtype=None),
     G=Tensor(min_ndim=2, dtypes="float"), steps=Count(), dtype=Dtype(optional=True))
case("gradnoise.ortho.polar_derivative", lambda W: dict(G=well(2, 3), E=f64(2, 3, seed=6)),
     G=Tensor(min_ndim=2, dtypes=EXACT, partner="E"), E=Tensor(min_ndim=2, dtypes=EXACT, partner="G", kind_of="G"))
case("gradnoise.ortho.polar_second_order", lambda W: dict(G=well(2, 2), h=1e-4),
     G=Tensor(ndim=2, dtypes=EXACT, extra={"40 x 40 (a 2.6 TB tensor)": lambda v, kw, W: well(40, 40)}), h=Real(0, None, lo_open=True))
case("gradnoise.ortho.second_order_terms", lambda W: dict(G=well(2, 2), h=1e-4),
     G=Tensor(ndim=2, dtypes=EXACT, extra={"40 x 40 (a 20 GB table)": lambda v, kw, W: well(40, 40)}), h=Real(0, None, lo_open=True))
case("gradnoise.ortho.laplacian_along", lambda W: dict(f=lambda X: X.sum((-2, -1)), X=f64(2, 2), factors=f64(3, 2, 2), h=1e-3),
     f=Call(), X=Tensor(min_ndim=2, dtypes=EXACT), factors=Tensor(ndim=3), h=Real(0, None, lo_open=True))
case("gradnoise.ortho.laplacian", lambda W: dict(f=lambda X: X.sum((-2, -1)), X=f64(2, 2), h=1e-3),
     f=Call(), X=Tensor(min_ndim=2), h=Real(0, None, lo_open=True))
case("gradnoise.ortho.polar_bias_isotropic", lambda W: dict(G=well(2, 3), var=0.1),
     G=Tensor(min_ndim=2, dtypes=EXACT), var=Real(0, None, lo_open=True))
case("gradnoise.ortho.polar_linear_variance_isotropic", lambda W: dict(G=well(2, 3), var=0.1),
     G=Tensor(min_ndim=2, dtypes=EXACT), var=Real(0, None, lo_open=True))
case("gradnoise.ortho.polar_expansion", lambda W: dict(G=well(2, 3), E=f64(4, 2, 3, seed=6)),
     G=Tensor(ndim=2, dtypes=EXACT, partner="E"), E=Tensor(min_ndim=2, dtypes=EXACT, partner="G", kind_of="G"))
for _f in ("polar_bias", "polar_linear_variance"):
    case(f"gradnoise.ortho.{_f}", lambda W: dict(G=well(2, 3), cov=spd(6), factors=None, chunk=2048),
         G=Tensor(ndim=2, dtypes=EXACT), cov=Tensor(ndim=2, dtypes=EXACT, optional=True, extra=dict(_SQ_BAD, **{"None (and factors None)": Replace(cov=None)})),
         factors=with_sample(Tensor(ndim=3, optional=True, dtypes=EXACT, kind_of="G",
                                    extra={"given with cov": Replace(factors=f64(6, 2, 3), cov=spd(6))}),
                             lambda kw: f64(6, 2, 3), cov=None),
         chunk=Count(huge=False))

# pergrad ----------------------------------------------------------------------------------------------
case("gradnoise.networks.digits.digits", lambda W: dict(test_fraction=0.2, device=None),
     test_fraction=Real(0, 1, hi_open=True), device=Device())
case("gradnoise.networks.digits.network", lambda W: dict(device=None), device=Device())
case("gradnoise.networks.digits.initial_parameters", lambda W: dict(gen=gen(), device=None), gen=Gen(optional=True), device=Device())
case("gradnoise.networks.digits.flatten", lambda W: dict(tensors=params(), lead=0), tensors=Params(f32=False),
     lead=Count(minimum=0, huge=False, extra={"1 (no leading dimension)": 1}))
case("gradnoise.networks.digits.unflatten", lambda W: dict(vector=f64(2410)),
     vector=Tensor(min_ndim=1, extra={"2409 entries": lambda v, kw, W: v[:-1]}))
_PXY = lambda W: dict(params=params(), x=xy()[0], y=xy()[1])  # noqa: E731
_X = lambda: Tensor(min_ndim=2, dtypes=(__import__("torch").float64,), extra={"63 features": lambda v, kw, W: v[:, :63]})  # noqa: E731
case("gradnoise.networks.digits.logits", lambda W: dict(params=params(), x=xy()[0]), params=Params(), x=_X())
for _f in ("networks.digits.losses", "pergrad.per_example_gradients", "pergrad.per_example_gradient_matrix",
           "pergrad.full_gradient", "networks.digits.minibatch_gradient"):
    case(f"gradnoise.{_f}", lambda W: dict(**_PXY(W), weight_decay=1e-3),
         params=Params(), x=_X(), y=Labels(), weight_decay=Real(0, None))
case("gradnoise.pergrad.gradient_gram", lambda W: dict(**_PXY(W), centred=True),
     params=Params(), x=_X(), y=Labels(), centred=Flag())
case("gradnoise.networks.digits.accuracy", lambda W: _PXY(W), params=Params(), x=_X(), y=Labels())
case("gradnoise.networks.digits.checkpoints", lambda W: dict(steps=(0, 2), data=digits_data(), lr=0.5, momentum=0.9),
     steps=Kind(extra={"()": (), "(-1,)": (-1,), "(2.5,)": (2.5,), "5": 5, "(10**12,)": (HUGE,), "(True,)": (True,)}),
     data=Kind(optional=True, extra={"5": 5, '"digits"': "digits"}), lr=Real(0, None, lo_open=True), momentum=Real(0, 1, hi_open=True))
case("gradnoise.pergrad.gradient_covariance", lambda W: dict(grads=f64(6, 3)),
     grads=Tensor(min_ndim=2, extra={"d = 10**5 (an 80 GB covariance)": lambda v, kw, W: f64(2, 100_000)}))
for _f in ("covariance_eigenvalues", "simple_noise_scale"):       # N x N Gram route: a large d is no blow-up
    case(f"gradnoise.pergrad.{_f}", lambda W: dict(grads=f64(6, 3)), grads=Tensor(min_ndim=2))
case("gradnoise.pergrad.batch_indices", lambda W: dict(n=10, batch=3, shape=(4,), gen=gen(), replacement=True),
     n=Count(huge=False), batch=Count(), shape=Shape(), gen=Gen(), replacement=Flag())
case("gradnoise.networks.digits.sgd",
     lambda W: dict(**_PXY(W), lr=0.1, batch=4, steps=3, gen=gen(), chains=2, replacement=True, record_every=1,
                    weight_decay=1e-3, observe=None),
     params=Params(), x=_X(), y=Labels(), lr=Real(0, None, lo_open=True), batch=Count(), steps=Count(), gen=Gen(),
     chains=Count(), replacement=Flag(), record_every=Count(minimum=0, huge=False), weight_decay=Real(0, None),
     observe=Call(optional=True))

# sampling ---------------------------------------------------------------------------------------------
case("gradnoise.sampling.random_orthogonal",
     lambda W: dict(n=3, generator=gen(), dtype=__import__("torch").float64, batch=(2,)),
     n=Count(), generator=Gen(), dtype=Dtype(), batch=Shape())
case("gradnoise.sampling.with_singular_values",
     lambda W: dict(s=[3.0, 1.0], m=2, n=3, generator=gen(), dtype=__import__("torch").float64),
     s=Arr(0, None, extra={"three values": [3.0, 2.0, 1.0]}), m=Count(), n=Count(), generator=Gen(), dtype=Dtype())
case("gradnoise.sampling.token_noise",
     lambda W: dict(shape=(2, 3), var=0.5, generator=gen(), law="gaussian", dtype=__import__("torch").float64),
     shape=Shape(extra={"rademacher 3.7 GiB": Replace(shape=(496, 1000, 1000), law="rademacher")}),
     var=Real(0, None, lo_open=True), generator=Gen(), law=Choice("gaussian", "rademacher"), dtype=Dtype())
case("gradnoise.sampling.token_gradients",
     lambda W: dict(G=well(2, 3), var=0.5, generator=gen(), trials=3, tokens=2, law="gaussian"),
     G=Tensor(min_ndim=2), var=Real(0, None, lo_open=True), generator=Gen(), trials=Count(), tokens=Count(),
     law=Choice("gaussian", "rademacher"))
case("gradnoise.sampling.block_means",
     lambda W: dict(G=well(2, 3), var=0.5, generator=gen(), trials=3, blocks=2, tokens=4, law="gaussian"),
     G=Tensor(min_ndim=2), var=Real(0, None, lo_open=True), generator=Gen(), trials=Count(), blocks=Count(),
     tokens=Count(huge=False, extra={"10**12 rademacher": Replace(tokens=HUGE, law="rademacher")}),
     law=Choice("gaussian", "rademacher"))
case("gradnoise.sampling.in_chunks",
     lambda W: dict(draw=lambda n: __import__("torch").zeros(n, 2), trials=5, chunk=2),
     draw=Call(), trials=Count(), chunk=Count(huge=False, optional=True))
case("gradnoise.sampling.ar1_steps", lambda W: dict(innovations=f64(5, 2, 3), rho=0.5, dim=-3),
     innovations=Tensor(min_ndim=1, extra={"200k steps (a 320 GB kernel)": lambda v, kw, W: f64(200_000, 1, 1)}),
     rho=Real(-1, 1, lo_open=True, hi_open=True),
     dim=Kind(extra={"3 (out of range)": 3, "2.5": 2.5, '"0"': "0", "True": True}))
case("gradnoise.sampling.covariance_factor", lambda W: dict(cov=spd(3)), cov=Tensor(ndim=2, dtypes=EXACT, extra=_SQ_BAD))
case("gradnoise.sampling.correlated_means",
     lambda W: dict(G=well(2, 3), factor=spd(6), generator=gen(), trials=3, blocks=2, tokens=4),
     G=Tensor(min_ndim=2), factor=Tensor(ndim=2, extra={"(5, 5)": lambda v, kw, W: spd(5)}), generator=Gen(),
     trials=Count(), blocks=Count(), tokens=Count(huge=False))

# stats ------------------------------------------------------------------------------------------------
case("gradnoise.stats.mean_stderr", lambda W: dict(x=f64(8, 3), dim=0),
     x=Tensor(min_ndim=1, extra={"one trial": lambda v, kw, W: v[:1]}),
     dim=Kind(extra={"5 (out of range)": 5, "2.5": 2.5, '"0"': "0", "True": True}))
case("gradnoise.stats.total_variance", lambda W: dict(x=f64(8, 3), dim=0),
     x=Tensor(min_ndim=1, extra={"one trial": lambda v, kw, W: v[:1]}),
     dim=Kind(extra={"5 (out of range)": 5, "2.5": 2.5, '"0"': "0", "True": True}))
_SE = lambda: Arr(0, None, lo_open=True)  # noqa: E731
case("gradnoise.stats.difference", lambda W: dict(a=[1.0, 2.0], se_a=[0.1, 0.1], b=[0.5, 1.0], se_b=[0.2, 0.2]),
     a=Arr(extra={"shape (3,)": [1.0, 2.0, 3.0]}), se_a=Arr(0, None), b=Arr(), se_b=Arr(0, None))
case("gradnoise.stats.loglog_slope", lambda W: dict(x=[1.0, 2.0, 4.0], y=[1.0, 0.5, 0.25]),
     x=Arr(0, None, lo_open=True, extra={"constant": [2.0, 2.0, 2.0]}),
     y=Arr(0, None, lo_open=True, extra={"length 2": [1.0, 0.5]}))
_EST = lambda W: dict(estimate=[1.0, 2.0], stderr=[0.1, 0.1])  # noqa: E731
case("gradnoise.stats.z_scores", lambda W: dict(**_EST(W), predicted=[1.05, 2.0]),
     estimate=Arr(), stderr=_SE(), predicted=Arr(extra={"shape (3,)": [1.0, 2.0, 3.0]}))
case("gradnoise.stats.resolution", lambda W: dict(stderr=[0.1, 0.1], predicted=[1.0, 2.0], z=5.0),
     stderr=_SE(), predicted=Arr(), z=Real(0, None, lo_open=True))
_WHAT = lambda: Text(empty_bad=False)  # noqa: E731
case("gradnoise.stats.assert_agrees", lambda W: dict(**_EST(W), predicted=[1.05, 2.0], z=5.0, what="probe", claim=None),
     estimate=Arr(), stderr=_SE(), predicted=Arr(), z=Real(0, None, lo_open=True), what=_WHAT(), claim=Claim())
case("gradnoise.stats.assert_rejects", lambda W: dict(**_EST(W), wrong=[3.0, 2.0], z=10.0, what="probe", claim=None),
     estimate=Arr(), stderr=_SE(), wrong=Arr(), z=Real(0, None, lo_open=True), what=_WHAT(), claim=Claim())
case("gradnoise.stats.assert_close",
     lambda W: dict(actual=[1.0, 2.0], expected=[1.0, 2.0 + 1e-12], rtol=1e-10, what="probe", claim=None, atol=0.0),
     actual=Arr(), expected=Arr(), rtol=Real(0, 1, lo_open=True, hi_open=True), what=_WHAT(), claim=Claim(),
     atol=Real(0, None))
case("gradnoise.stats.assert_differs",
     lambda W: dict(actual=[1.0, 2.0], wrong=[1.5, 2.0], rtol=1e-6, what="probe", claim=None, atol=None),
     actual=Arr(), wrong=Arr(), rtol=Real(0, 2, lo_open=True), what=_WHAT(), claim=Claim(),
     atol=Real(0, None, lo_open=True, optional=True))  # a relative distance is at most 2

# site -------------------------------------------------------------------------------------------------
SPHINX = "passed by Sphinx, not by a user"


class FakeApp:
    """Enough of a Sphinx application for ``setup`` and the event handlers (the full edition)."""

    def __init__(self, outdir):
        self.outdir = str(outdir)

    def __getattr__(self, name):
        return lambda *a, **k: None


case("gradnoise.site.pdf_name", lambda W: dict(edition="student"), edition=Choice("full", "student"))
case("gradnoise.site.latex_macros", lambda W: dict(macros={"E": r"\mathbb{E}", "Cov": [r"\mathrm{Cov}(#1)", 1]}),
     macros=Kind(optional=True, extra={'{"1x": "a"}': {"1x": "a"}, '{"a": 5}': {"a": 5}, '{"a": ["b", "x"]}': {"a": ["b", "x"]},
                        "5": 5, '["a"]': ["a"]}))
case("gradnoise.site.setup", lambda W: dict(app=FakeApp(W.tmp)), app=Free(SPHINX))
case("gradnoise.site.cache.fingerprint", lambda W: dict(root=str(W.root)), root=Path())
case("gradnoise.site.cache.refresh", lambda W: dict(root=str(W.root), build="_build"), root=Path(), build=Build())
case("gradnoise.site.cache.main", lambda W: dict(argv=[str(W.root)]), _cli=True,
     argv=Kind(optional=True, extra={"5": 5, "[missing folder]": lambda v, kw, W: [str(W.tmp / "no-such-root")],
                      '["--bogus"]': ["--bogus"], "[a file]": lambda v, kw, W: [str(W.tmp / "a-file.txt")]}))
case("gradnoise.site.edition.edition", lambda W: dict())
_UNCLOSED = "text\n```{solution-start} ex\n```\nsecret\nmore text\n"
case("gradnoise.site.edition.strip_solutions", lambda W: dict(text="a\n```{solution-start} ex\n```\nx\n```{solution-end}\n```\nb\n"),
     text=Text(empty_bad=False, extra={"unclosed solution": _UNCLOSED}, names=("solution-start", "solution-end")))


def _nb(source):
    import nbformat
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(source)]
    return nb


case("gradnoise.site.edition.strip_notebook", lambda W: dict(nb=_nb("a\n```{solution-start} ex\n```\nx\n```{solution-end}\n```\n"), stub=True),
     nb=Kind(names=("solution-start", "solution-end"),
             extra={"5": 5, '"text"': "text", "unclosed solution": lambda v, kw, W: _nb(_UNCLOSED)}), stub=Flag())
case("gradnoise.site.edition.remove_solution_nodes", lambda W: dict(app=FakeApp(W.tmp), doctree=None),
     app=Free(SPHINX), doctree=Free(SPHINX))
case("gradnoise.site.edition.strip_downloads", lambda W: dict(app=FakeApp(W.tmp), exception=None),
     app=Free(SPHINX), exception=Free(SPHINX))
case("gradnoise.site.ledger.load_yaml", lambda W: dict(text="a: 1\n", where="probe"),
     text=Text(empty_bad=False, bytes_bad=False, extra={'"a: [" (invalid)': "a: [", '"a: 1\\na: 2" (key twice)': "a: 1\na: 2"},
               names=("probe",)), where=Free(NAME_ONLY))
_FILE = lambda: Path(file=True, extra={"unclosed front matter": lambda v, kw, W: str(W.tmp / "unclosed.md")})  # noqa: E731
case("gradnoise.site.ledger.front_matter", lambda W: dict(path=W.root / "chapters" / "one.md"), path=_FILE())
case("gradnoise.site.ledger.title_of", lambda W: dict(path=W.root / "chapters" / "one.md"), path=Path(file=True))
case("gradnoise.site.ledger.catalogue", lambda W: dict(path=W.root / "claims.yml"),
     path=Path(file=True, extra={"no claims list": lambda v, kw, W: str(W.root / "_toc.yml")}))
case("gradnoise.site.ledger.coverage",
     lambda W: dict(chapters={"chapters/one": W.root / "chapters" / "one.md"}, known_ids=["000-C1"]),
     chapters=Kind(extra={"5": 5, "{docname: missing file}": lambda v, kw, W: {"x": W.tmp / "no-such.md"}}),
     known_ids=Kind(extra={"5": 5, "[] (the claim unknown)": []}))
case("gradnoise.site.ledger.ledger",
     lambda W: dict(catalogue_path=W.root / "claims.yml", chapters={"chapters/one": W.root / "chapters" / "one.md"}),
     catalogue_path=Path(file=True), chapters=Kind(extra={"5": 5, "{docname: missing file}": lambda v, kw, W: {"x": W.tmp / "no-such.md"}}))
case("gradnoise.site.mutation.sha256", lambda W: dict(path=W.root / "claims.yml"), path=Path(file=True))
case("gradnoise.site.mutation.list_path", lambda W: dict(root=W.root, name="one"),
     root=Path(must_exist=False), name=Name())
case("gradnoise.site.mutation.result_path", lambda W: dict(root=W.root, name="one"),
     root=Path(must_exist=False), name=Name())
case("gradnoise.site.mutation.load", lambda W: dict(path=W.root / "mutations" / "one.yml"),
     path=Path(file=True, extra={"not a mutation list": lambda v, kw, W: str(W.root / "claims.yml")}))


def _mutation(old="1 + 1"):
    from gradnoise.site.mutation import Mutation
    return Mutation("m", "prediction", old, "1 + 2", "the nearest wrong alternative")


_CH_TEXT = "---\nkernelspec:\n  name: python3\n  display_name: Python 3\n---\n# One\n\n```{code-cell} python\nx = 1 + 1\n```\n"
case("gradnoise.site.mutation.validate", lambda W: dict(mutation=_mutation(), text=_CH_TEXT),
     mutation=Kind(extra={"5": 5, "old not in text": lambda v, kw, W: _mutation("2 * 3")}), text=Text(empty_bad=False))
case("gradnoise.site.mutation.apply", lambda W: dict(mutation=_mutation(), text=_CH_TEXT),
     mutation=Kind(extra={"5": 5, "old not in text": lambda v, kw, W: _mutation("2 * 3")}), text=Text(empty_bad=False))
case("gradnoise.site.mutation.run_text",
     lambda W: dict(text=_CH_TEXT, name="one", timeout=60, env=None, evidence_dir=None), _limit=90,
     text=Text(empty_bad=False), name=Name(), timeout=Count(), env=Kind(optional=True, extra={"5": 5, '"x"': "x"}),
     evidence_dir=Kind(optional=True, extra={"5": 5, "a file": lambda v, kw, W: str(W.tmp / "a-file.txt")}))
_RESULT = {"status": "failed", "cell": 1, "ename": "AssertionError", "message": "", "seconds": 1.0}
case("gradnoise.site.mutation.outcome", lambda W: dict(result=dict(_RESULT)),
     result=Kind(extra={"{}": {}, "5": 5, '{"status": "weird"}': {"status": "weird", "ename": None}}))
case("gradnoise.site.mutation.run_chapter",
     lambda W: dict(root=W.root, name="one", jobs=1, timeout=60, only=None, log=lambda *a: None), _limit=90,
     root=Path(), name=Name(extra={'"nosuch"': "nosuch"}), jobs=Count(), timeout=Count(),
     only=Kind(optional=True, extra={"5": 5, '["nosuch"]': ["nosuch"]}), log=Call())
case("gradnoise.site.mutation.read_result", lambda W: dict(root=W.root, name="one"), root=Path(), name=Name())
case("gradnoise.site.mutation.state", lambda W: dict(root=W.root, name="one", record=None),
     root=Path(), name=Name(), record=Kind(optional=True, extra={"5": 5, "{}": {}}))
case("gradnoise.site.mutation.summary", lambda W: dict(record={"mutations": [{"outcome": "caught"}]}),
     record=Kind(extra={"{}": {}, "5": 5, "an unknown outcome": {"mutations": [{"outcome": "weird"}]}}))
case("gradnoise.site.mutation.chapters", lambda W: dict(root=W.root), root=Path(must_exist=False))
case("gradnoise.site.mutation.main", lambda W: dict(argv=["--root", str(W.root), "one"]), _cli=True, _limit=90,
     argv=Kind(optional=True, extra={"5": 5, '["--jobs", "x"]': ["--jobs", "x"], '["--jobs", "0"]': lambda v, kw, W: ["--jobs", "0", "--root", str(W.root)],
                      '["--timeout", "-5"]': lambda v, kw, W: ["--timeout", "-5", "--root", str(W.root)],
                      '["nosuch"]': lambda v, kw, W: ["--root", str(W.root), "nosuch"],
                      "[--root missing]": lambda v, kw, W: ["--root", str(W.tmp / "no-such-root")]}))
case("gradnoise.site.toc.files", lambda W: dict(root=W.root), root=Path(must_exist=False))


# checks: the vocabulary added for issue 19 -----------------------------------------------------------
_BOUND = lambda: Kind(optional=True, extra={"nan": math.nan, '"0"': "0", "1+1j": 1 + 1j})  # noqa: E731
case("gradnoise.checks.real",
     lambda W: dict(x=0.5, name="thing", low=0.0, high=1.0, low_open=False, high_open=True),
     x=Real(0, 1, hi_open=True, names=("thing",)), name=Free(NAME_ONLY), low=_BOUND(), high=_BOUND(),
     low_open=Flag(), high_open=Flag())
case("gradnoise.checks.real_tensor",
     lambda W: dict(x=[0.5, 0.25], name="thing", low=0.0, high=1.0, low_open=False, high_open=True, device=None,
                    dtype=__import__("torch").float64),
     x=Arr(0, 1, hi_open=True, names=("thing",)), name=Free(NAME_ONLY), low=_BOUND(), high=_BOUND(),
     low_open=Flag(), high_open=Flag(), device=Device(), dtype=Dtype())
case("gradnoise.checks.choice", lambda W: dict(x="a", name="thing", options=("a", "b")),
     x=Kind(names=("thing",), extra={'"c"': "c", "1": 1}), name=Free(NAME_ONLY),
     options=Kind(names=("thing",), extra={"5 (not a sequence)": 5, "() (nothing passes)": ()}))
case("gradnoise.checks.flag", lambda W: dict(x=True, name="thing"),
     x=Kind(names=("thing",), extra={'"no"': "no", "1": 1}), name=Free(NAME_ONLY))
case("gradnoise.checks.argv", lambda W: dict(args=["--x", "1"], name="argv"),
     args=Kind(names=("argv",), optional=True, extra={'"--x" (a string)': "--x", "[1] (not strings)": [1], "5": 5}), name=Free(NAME_ONLY))
case("gradnoise.checks.function", lambda W: dict(f=len, name="thing"), f=Call(names=("thing",)), name=Free(NAME_ONLY))
case("gradnoise.checks.steps", lambda W: dict(n=10, name="thing", minimum=0),
     n=Count(minimum=0, names=("thing",)), name=Free(NAME_ONLY),
     minimum=Kind(extra={"2.5": 2.5, '"1"': "1", "True": True}))
case("gradnoise.checks.tensor",
     lambda W: dict(x=f64(2, 3), name="thing", ndim=None, min_ndim=0, floating=True, allow_empty=False, finite=True),
     x=Tensor(names=("thing",)), name=Free(NAME_ONLY), ndim=Count(minimum=0, optional=True, huge=False),
     min_ndim=Count(minimum=0, huge=False), floating=Flag(), allow_empty=Flag(), finite=Flag())
case("gradnoise.checks.floating_dtype", lambda W: dict(dtype=__import__("torch").float32, name="dtype"),
     dtype=Dtype(), name=Free(NAME_ONLY))
case("gradnoise.checks.inside", lambda W: dict(path=str(W.root / "_build"), root=str(W.root), name="build"),
     path=Kind(names=("build",), extra={'"../victim"': lambda v, kw, W: str(W.root / ".." / "victim"),
                                        "a symlink to victim": lambda v, kw, W: str(W.root / "link"),
                                        "5": 5}),
     root=Kind(names=("build",), extra={"5": 5}), name=Free(NAME_ONLY))
case("gradnoise.checks.torch_device", lambda W: dict(d="cpu", name="device"), d=Device(names=("device",)),
     name=Free(NAME_ONLY))
case("gradnoise.checks.long_tensor", lambda W: dict(x=__import__("torch").arange(3), name="thing", min_ndim=1),
     x=Kind(names=("thing",), extra={"float": lambda v, kw, W: v.double(), "0-d": lambda v, kw, W: v[0],
                                     '"x"': "x", "a list": [0, 1]}),
     name=Free(NAME_ONLY), min_ndim=Count(minimum=0, huge=False))

case("gradnoise.checks.path", lambda W: dict(p=str(W.root / "claims.yml"), name="thing", kind="file", exists=True),
     p=Path(file=True, names=("thing",), extra={'""': ""}), name=Free(NAME_ONLY),
     kind=Choice("file", "dir", "any"), exists=Flag())
case("gradnoise.checks.plain_name", lambda W: dict(x="one", name="thing"), x=Name(names=("thing",)),
     name=Free(NAME_ONLY))

# pergrad: the per-example machinery ------------------------------------------------------------------
def _model():
    from gradnoise.networks import digits
    return digits.network(device="cpu")


def _ce(out, target, p):
    import torch
    return torch.nn.functional.cross_entropy(out, target)


case("gradnoise.pergrad.functional_per_example_gradients",
     lambda W: dict(model=_model(), params=params(), loss=_ce, x=xy()[0], y=xy()[1]),
     model=Kind(extra={"5": 5}), params=Params(partial_ok=True), loss=Call(),
     x=Tensor(min_ndim=2, dtypes=(__import__("torch").float64,), partner="y",
              extra={"11 examples": lambda v, kw, W: v[:-1]}),
     y=Labels())
case("gradnoise.pergrad.batch_means",
     lambda W: dict(grads=f64(6, 3), k=2, trials=4, gen=gen(), replacement=True, chunk=None),
     grads=Tensor(min_ndim=1), k=Count(huge=False, extra={"7 > N without replacement": Replace(k=7, replacement=False)}),
     trials=Count(), gen=Gen(), replacement=Flag(), chunk=Count(optional=True, huge=False))

# networks.modular -------------------------------------------------------------------------------------
_MOD = []


def modular_data():
    if not _MOD:
        from gradnoise.networks import modular
        _MOD.append(modular.data(p=5, device="cpu"))
    return _MOD[0]


def mod_params():
    import torch
    from gradnoise.networks import modular
    return modular.initial_parameters(p=5, gen=torch.Generator().manual_seed(5), device="cpu")


def ModParams():
    import torch

    def drop(v, kw, W):
        return {k: t for k, t in v.items() if k != "pos"}

    def nan(v, kw, W):
        out = dict(v)
        out["attn.q"] = _poke(out["attn.q"], math.nan)
        return out

    return Kind(extra={"a key missing": drop, "a NaN entry": nan, "5": 5,
                       "float32 entries": lambda v, kw, W: {k: t.float() for k, t in v.items()}})


def Tokens():
    import torch
    return Kind(extra={"float tokens": lambda v, kw, W: v.double(), "token 5 (= p)": lambda v, kw, W: v.clone().fill_(5),
                       "token -1": lambda v, kw, W: v.clone().fill_(-1), "last axis 3": lambda v, kw, W: torch.cat([v, v[:, :1]], 1),
                       '"tokens"': "tokens"})


_PTY = lambda W: dict(params=mod_params(), tokens=modular_data().tokens_train, y=modular_data().y_train)  # noqa: E731
case("gradnoise.networks.modular.shapes", lambda W: dict(p=5, width=8, mlp=16),
     p=Count(minimum=2, huge=False), width=Count(huge=False), mlp=Count(huge=False))
case("gradnoise.networks.modular.data", lambda W: dict(p=5, train_fraction=0.3, device="cpu"),
     p=Count(minimum=2), train_fraction=Real(0, 1, lo_open=True, hi_open=True), device=Device())
case("gradnoise.networks.modular.initial_parameters", lambda W: dict(p=5, gen=gen(), device="cpu"),
     p=Count(minimum=2), gen=Gen(optional=True), device=Device())
case("gradnoise.networks.modular.logits", lambda W: dict(params=mod_params(), tokens=modular_data().tokens_train),
     params=ModParams(), tokens=Tokens())
_MY = lambda: Kind(extra={"label 5 (= p)": lambda v, kw, W: v.clone().fill_(5), "label -1": lambda v, kw, W: v.clone().fill_(-1),  # noqa: E731
                          "float labels": lambda v, kw, W: v.double(), "one short": lambda v, kw, W: v[:-1]})
for _f in ("losses", "accuracy", "full_gradient"):
    case(f"gradnoise.networks.modular.{_f}", _PTY, params=ModParams(), tokens=Tokens(), y=_MY())
case("gradnoise.networks.modular.per_example_gradients",
     lambda W: dict(**_PTY(W), names=("attn.q",), chunk=4),
     params=ModParams(), tokens=Tokens(), y=_MY(),
     names=Kind(extra={'("nosuch",)': ("nosuch",), "()": (), "5": 5}), chunk=Count(huge=False))
case("gradnoise.networks.modular.train",
     lambda W: dict(steps=(0, 1), dataset=modular_data(), lr_muon=0.02, lr_adamw=3e-3, momentum=0.95, weight_decay=0.1),
     steps=Kind(extra={"()": (), "(-1,)": (-1,), "(2.5,)": (2.5,), "5": 5, "(10**12,)": (HUGE,), "(True,)": (True,)}),
     dataset=Kind(optional=True, extra={"5": 5}), lr_muon=Real(0, None, lo_open=True), lr_adamw=Real(0, None, lo_open=True),
     momentum=Real(0, 1, hi_open=True), weight_decay=Real(0, None))
case("gradnoise.networks.modular.batch_counts",
     lambda W: dict(n=5, batch=8, shape=(3,), gen=gen(), dtype=__import__("torch").float64),
     n=Count(), batch=Count(huge=False), shape=Shape(), gen=Gen(), dtype=Kind(extra={'"float64"': "float64", "5": 5}))

# networks.training ------------------------------------------------------------------------------------
def _W4():
    return f64(1, 2, 3, 4)


case("gradnoise.networks.training.muon_views", lambda W: dict(W=_W4()),
     W=Tensor(ndim=4, extra={"requires grad": lambda v, kw, W: v.requires_grad_(True)}))
case("gradnoise.networks.training.torch_muon", lambda W: dict(W=_W4(), lrs=[0.01], momentum=0.95),
     W=Tensor(ndim=4), lrs=Arr(0, None, lo_open=True, extra={"two rates for one row": [0.01, 0.02]}),
     momentum=Real(0, 1, hi_open=True))


def _set_grads_valid(W):
    from gradnoise.networks import training
    Wt = _W4()
    _, ps = training.torch_muon(Wt, [0.01])
    return dict(params=ps, grads=f64(1, 2, 3, 4, seed=3))


case("gradnoise.networks.training.set_grads", _set_grads_valid,
     params=Kind(extra={"5": 5, "one parameter too few": lambda v, kw, W: v[:-1]}),
     grads=Tensor(min_ndim=2, extra={"shape (1, 2, 4, 3)": lambda v, kw, W: f64(1, 2, 4, 3)}))


def _train_valid(W):
    import torch
    from gradnoise.networks import digits
    init = {k: t.unsqueeze(0) for k, t in params().items()}
    return dict(data=digits_data(), init=init, lrs=[0.01], k=2, steps=1, draws=gen(), arms=("muon-k",),
                lr_other=0.1, momentum=0.95, record_every=1, engine="torch")


case("gradnoise.networks.training.train", _train_valid,
     data=Kind(extra={"5": 5}), init=Params(), lrs=Arr(0, None, lo_open=True), k=Count(), steps=Count(), draws=Gen(),
     arms=Kind(extra={'("nosuch",)': ("nosuch",), "()": (), "5": 5}), lr_other=Real(0, None),
     momentum=Real(0, 1, hi_open=True), record_every=Count(huge=False), engine=Choice("torch", "model"))

# site.scale (its __all__: main, run, unscaled_sizes) -------------------------------------------------
case("gradnoise.site.scale.run", lambda W: dict(root=W.root, scale=2.0, names=["one"], jobs=1, timeout=60, log=lambda *a: None),
     _limit=90,
     root=Path(), scale=Real(0, None, lo_open=True), names=Kind(extra={"5": 5, '["nosuch"]': ["nosuch"], '["../one"]': ["../one"]}),
     jobs=Count(), timeout=Count(), log=Call())
case("gradnoise.site.scale.main", lambda W: dict(argv=["--scale", "2", "--root", str(W.root), "one"]), _cli=True, _limit=90,
     argv=Kind(optional=True, extra={"5": 5, '["--scale", "x"]': ["--scale", "x"],
                                     '["--scale", "nan"]': lambda v, kw, W: ["--scale", "nan", "--root", str(W.root)],
                                     '["--scale", "-1"]': lambda v, kw, W: ["--scale", "-1", "--root", str(W.root)],
                                     '["nosuch"]': lambda v, kw, W: ["--scale", "2", "--root", str(W.root), "nosuch"],
                                     '["--jobs", "0"]': lambda v, kw, W: ["--scale", "2", "--jobs", "0", "--root", str(W.root), "one"],
                                     '["--timeout", "-5"]': lambda v, kw, W: ["--scale", "2", "--timeout", "-5", "--root", str(W.root), "one"]}))
case("gradnoise.site.scale.unscaled_sizes", lambda W: dict(path=W.root / "chapters" / "one.md"), path=Path(file=True))

# --- environment variables -------------------------------------------------------------------------------
# (variable, value, function, keyword arguments): the call must refuse the value in one line naming the variable.
ENV_CASES = []
for _v in ("abc", "-1", "0", "nan", "inf", "1e300"):
    ENV_CASES += [("GRADNOISE_SCALE", _v, "gradnoise.device.scale", {}),
                  ("GRADNOISE_SCALE", _v, "gradnoise.device.trials", {"n": 100}),
                  ("GRADNOISE_SCALE", _v, "gradnoise.checks.allocation", {"shape": (10**5, 10**5), "dtype": "float64", "name": "x"})]
for _v in ("gpu", "cuda:99", "meta", "cpu:x", "7"):
    ENV_CASES += [("GRADNOISE_DEVICE", _v, "gradnoise.device.device", {}),
                  ("GRADNOISE_DEVICE", _v, "gradnoise.seeds.generator", {"label": "x"})]
for _v in ("abc", "1.5", "nan", "1e3"):
    ENV_CASES += [("GRADNOISE_SEED", _v, "gradnoise.seeds.base_seed", {}),
                  ("GRADNOISE_SEED", _v, "gradnoise.seeds.generator", {"label": "x"})]
for _v in ("<a file>", "<under a file>"):
    ENV_CASES += [("GRADNOISE_EVIDENCE", _v, "gradnoise.evidence.begin", {"name": "probe"}),
                  ("GRADNOISE_EVIDENCE", _v, "gradnoise.chapter", {"name": "probe"})]
for _v in ("teacher", "STUDENT"):
    ENV_CASES += [("GRADNOISE_EDITION", _v, "gradnoise.site.edition.edition", {})]



# --- the course: self-checks, the pack, the grader --------------------------------------------------------

ANSWER = "any value is an answer: a wrong one is the exercise's verdict (WrongAnswer), not bad input"
_SYMBOLS = Kind(optional=True, extra={"5": 5, "{}": {}, '{"k": [3, 1]}': {"k": [3, 1]}, '{"k": ["a", 2]}': {"k": ["a", 2]},
                                      '{"a/b": null}': {"a/b": None}, '{"k": [1, nan]}': {"k": [1, float("nan")]}})
_NEW_DIR = lambda: Kind(optional=True, extra={"5": 5, "a file": lambda v, kw, W: str(W.tmp / "a-file.txt")})  # noqa: E731
case("gradnoise.course.check", lambda W: dict(exercise="ex-real-transformer-bias-noise", answer="b/sqrt(N*sigma_L2)", root=None),
     exercise=Name(extra={'"ex-no-such"': "ex-no-such"}), answer=Free(ANSWER),
     root=Kind(optional=True, extra={"5": 5, "missing": lambda v, kw, W: str(W.tmp / "no-such-answers")}))
case("gradnoise.course.fingerprint",
     lambda W: dict(exercise="ex-a", kind="formula", answer="b/k", symbols={"b": None, "k": [2, 50]}, digits=10),
     exercise=Name(), kind=Choice("formula", "number", "choice"), answer=Free(ANSWER), symbols=_SYMBOLS,
     digits=Count(maximum=15, huge=False))
case("gradnoise.course.load", lambda W: dict(exercise="ex-real-transformer-bias-noise", root=None),
     exercise=Name(extra={'"ex-no-such"': "ex-no-such"}),
     root=Kind(optional=True, extra={"5": 5, "missing": lambda v, kw, W: str(W.tmp / "no-such-answers")}))
case("gradnoise.course.register",
     lambda W: dict(exercise="ex-a", kind="formula", answer="b/k", symbols={"b": None, "k": [2, 50]}, powers=["k"],
                    digits=None, rtol=0.0, choices=(), expects="a formula", root=W.tmp / "answers"),
     exercise=Name(), kind=Choice("formula", "number", "choice"), answer=Free(ANSWER), symbols=_SYMBOLS,
     powers=Kind(extra={"5": 5, '["x"] (not a symbol)': ["x"], '["a/b"]': ["a/b"]}), digits=Count(maximum=15, huge=False, optional=True),
     rtol=Real(0, 1), choices=Free("labels shown in a message"), expects=Free(NAME_ONLY), root=_NEW_DIR())
case("gradnoise.course.main", lambda W: dict(argv=["register", "ex-a", "number", "0.5", "--root", str(W.tmp / "answers")]),
     _cli=True, argv=Kind(optional=True, extra={"5": 5, '["register"]': ["register"], '["bogus"]': ["bogus"],
                                                 '[... number "x"]': ["register", "ex-a", "number", "x"],
                                                 '[... --digits 0]': ["register", "ex-a", "number", "1", "--digits", "0"]}))
_STUB_TEXT = "a\n### BEGIN SOLUTION\nanswer = 1\n### END SOLUTION\nb\n"
case("gradnoise.site.edition.stub_answers", lambda W: dict(text=_STUB_TEXT),
     text=Text(empty_bad=False, extra={"unclosed answer": "### BEGIN SOLUTION\nanswer = 1\n"}, names=("BEGIN SOLUTION",)))


def _toy_pack(W):
    """A course pack of one notebook without exercises, and a class of one student who handed nothing in."""
    import nbformat
    pack = W.tmp / "pack"
    (pack / "full").mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, pack / "full" / "one.ipynb")
    (W.tmp / "subs" / "alice").mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, W.tmp / "subs" / "alice" / "one.ipynb")
    return pack, W.tmp / "subs"


def _grade_args(W):
    pack, subs = _toy_pack(W)
    return dict(submissions=subs, pack=pack, out=W.tmp / "grades", timeout=60)


case("gradnoise.grade.grade", _grade_args, _limit=90,
     submissions=Path(extra={"a folder with no students": lambda v, kw, W: str(W.victim)}),
     pack=Path(extra={"not a pack": lambda v, kw, W: str(W.tmp)}), out=_NEW_DIR(), timeout=Count(maximum=86400))
case("gradnoise.grade.main", lambda W: dict(argv=[str(_grade_args(W)["submissions"]), "--pack", str(W.tmp / "pack"),
                                              "--out", str(W.tmp / "grades")]), _cli=True, _limit=90,
     argv=Kind(optional=True, extra={"5": 5, '["--timeout", "x"]': ["--timeout", "x"],
                                     "[missing folder]": lambda v, kw, W: [str(W.tmp / "no-such-subs")]}))
case("gradnoise.site.pack.build", lambda W: dict(root=W.root, out=W.tmp / "pack-out", chapters=["one"]), _limit=90,
     root=Path(), out=_NEW_DIR(), chapters=Kind(optional=True, extra={"5": 5, '"one" (a string)': "one", '["nosuch"]': ["nosuch"],
                                                                      "[5]": [5]}))
case("gradnoise.site.pack.main", lambda W: dict(argv=["--root", str(W.root), "--out", str(W.tmp / "pack-out"), "one"]),
     _cli=True, _limit=90, argv=Kind(optional=True, extra={"5": 5, '["nosuch"]': lambda v, kw, W: ["--root", str(W.root), "nosuch"],
                                                           "[--root missing]": lambda v, kw, W: ["--root", str(W.tmp / "no-such-root")]}))


# --- the workspace and the worker ------------------------------------------------------------------------

class Workspace:
    """``tmp/root`` (a tiny book: claims, a chapter, a mutation list, a ``_build``), ``tmp/victim`` beside it,
    a symlink ``root/link -> victim``, a file ``tmp/a-file.txt`` and an evidence folder."""

    VICTIM_FILES = ("html/index.html", "evidence/c.jsonl", "student/x.txt", "_build/html/keep.html", "keep.txt")

    def __init__(self, tmp):
        self.tmp = pathlib.Path(tmp)
        self.root = self.tmp / "root"
        self.victim = self.tmp / "victim"
        self.evidence = self.tmp / "evidence"

    def make(self):
        (self.root / "chapters").mkdir(parents=True, exist_ok=True)
        (self.root / "mutations").mkdir(exist_ok=True)
        for d in ("html", "evidence", ".jupyter_cache"):
            (self.root / "_build" / d).mkdir(parents=True, exist_ok=True)
        (self.root / "claims.yml").write_text("claims:\n  - id: 000-C1\n    note: '000'\n    statement: a claim\n")
        (self.root / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: chapters/one\n")
        (self.root / "chapters" / "one.md").write_text(
            "---\nclaims:\n  000-C1: holds\nkernelspec:\n  name: python3\n  display_name: Python 3\n---\n# One\n\n"
            "```{code-cell} python\nx = 1 + 1\n```\n")
        (self.root / "mutations" / "one.yml").write_text("chapter: one\nmutations: []\n")
        self.evidence.mkdir(exist_ok=True)
        (self.evidence / "probe.jsonl").write_text("")
        (self.tmp / "a-file.txt").write_text("a file\n")
        (self.tmp / "unclosed.md").write_text("---\nclaims: {}\n")
        self.make_victim()
        link = self.root / "link"
        if not link.is_symlink():
            link.symlink_to(self.victim, target_is_directory=True)

    def make_victim(self):
        for rel in self.VICTIM_FILES:
            p = self.victim / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if not p.exists():
                p.write_text("victim\n")

    def victim_intact(self) -> bool:
        return all((self.victim / rel).is_file() for rel in self.VICTIM_FILES)


def resolve(qualname):
    import importlib
    module, _, name = qualname.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _env_value(value, W):
    if value == "<a file>":
        return str(W.tmp / "a-file.txt")
    if value == "<under a file>":
        return str(W.tmp / "a-file.txt" / "sub")
    return value


def run_job(job, W):
    """Make one call; return what happened (the parent decides the outcome class)."""
    import traceback

    import torch

    saved_env = dict(os.environ)
    try:
        os.chdir(W.root)
        if "probe" in job:                     # the harness's self-test (tests/test_bad_input.py)
            qualname, kwargs = f"{__name__}.probe_{job['probe']}", {"W": W}
        elif "env" in job:
            var, value, qualname, kwargs = job["env"]
            kwargs = dict(kwargs)
            if kwargs.get("dtype") == "float64":
                kwargs["dtype"] = torch.float64
            os.environ[var] = _env_value(value, W)
        else:
            c = CASES[job["case"]]
            qualname = c.qualname
            kwargs = c.valid(W)
            if job.get("arg"):
                if "raw" in job:
                    value = job["raw"]
                else:
                    kind = c.kinds[job["arg"]]
                    v = kwargs[job["arg"]]
                    if v is None and kind.sample is not None:
                        v = kind.sample(kwargs)
                    value = dict(kind.bad())[job["label"]](v, kwargs, W)
                if c.kinds[job["arg"]].with_:
                    kwargs.update(c.kinds[job["arg"]].with_)
                if isinstance(value, Replace):
                    kwargs.update(value)
                else:
                    kwargs[job["arg"]] = value
        fn = resolve(qualname)
        cpu = time.process_time()
        try:
            out = fn(**kwargs)
        except BaseException as err:          # noqa: BLE001 - SystemExit from a CLI counts too
            tb = traceback.extract_tb(err.__traceback__)
            where = tb[-1].filename if tb else ""
            code = err.code if isinstance(err, SystemExit) else None
            return {"raised": type(err).__name__, "mro": [k.__name__ for k in type(err).__mro__],
                    "message": str(err), "where": where, "exit": code, "cpu": time.process_time() - cpu,
                    "worker_cpu": time.process_time()}
        return {"returned": _summary(out), "cpu": time.process_time() - cpu, "worker_cpu": time.process_time()}
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        try:
            from gradnoise import evidence
            evidence.end()
        except Exception:                      # noqa: BLE001
            pass


# --- probes: one call per outcome class, to show that the harness tells them apart ----------------------

def probe_clean(W):
    raise ValueError("x must be positive, got -1")


def probe_deep(W):
    return {}["x"]


def probe_silent(W):
    return 1


def probe_hang(W):
    while True:                                                # burns CPU, as the hangs of issue 19 did
        pass


def probe_crash(W):
    os.abort()


def probe_blowup(W):
    import torch
    return torch.empty(2**40, dtype=torch.float64)           # 8 TB: refused by RLIMIT_AS


def probe_deletion(W):
    import shutil
    shutil.rmtree(W.victim / "html")


def _summary(out):
    try:
        import torch
        if isinstance(out, torch.Tensor):
            return f"tensor {tuple(out.shape)} {out.dtype}" + (" with NaN" if out.is_floating_point() and bool(out.isnan().any()) else "")
        text = repr(out)
    except Exception:                          # noqa: BLE001
        text = type(out).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _import_everything():
    import torch  # noqa: F401  (import once, before the first job)
    import gradnoise.pergrad, gradnoise.site, gradnoise.site.mutation  # noqa: F401,E401
    import importlib
    import pkgutil
    for m in pkgutil.walk_packages(gradnoise.__path__, "gradnoise."):
        importlib.import_module(m.name)


def serve(tmp, jobs_in, results_out):
    """The worker loop: one JSON job per line of ``jobs_in``, one JSON result per line on ``results_out``."""
    import resource

    limit = int(os.environ.get("BAD_INPUT_MEMORY", str(6 * 2**30)))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)                        # prints of the functions called go nowhere
    os.dup2(devnull, 0)
    W = Workspace(tmp)
    results_out.write(json.dumps({"ready": True}) + "\n")
    for line in jobs_in:
        job = json.loads(line)
        try:
            res = run_job(job, W)
        except MemoryError:
            res = {"raised": "MemoryError", "mro": ["MemoryError"], "message": "(while building the input)", "where": "", "exit": None}
        except Exception as err:               # noqa: BLE001 - the case table itself failed
            res = {"table_error": f"{type(err).__name__}: {err}"}
        if not W.victim_intact():              # checked here, so that it is this call's doing
            res["deleted"] = True
            W.make_victim()
        results_out.write(json.dumps(res, default=str) + "\n")
    os._exit(0)


def zygote():
    """Import gradnoise once, then fork a fresh worker for every request ``{"jobs": FIFO, "results": FIFO,
    "tmp": DIR}`` read on stdin (answering ``{"pid": ...}``): a worker that hung or crashed is replaced in
    milliseconds instead of the seconds an import of torch takes."""
    import signal

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    _import_everything()
    import sklearn.datasets  # noqa: F401
    digits_data()                                       # loaded once, inherited by every worker
    modular_data()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)      # the workers are reaped automatically
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                jobs_in = open(req["jobs"], "r")
                results_out = open(req["results"], "w", buffering=1)
                serve(req["tmp"], jobs_in, results_out)
            finally:
                os._exit(1)
        out.write(json.dumps({"pid": pid}) + "\n")
        out.flush()


if __name__ == "__main__":
    if sys.argv[1:] == ["--zygote"]:
        zygote()
    else:
        raise SystemExit("usage: bad_input_cases.py --zygote (the bad-input test starts it)")

