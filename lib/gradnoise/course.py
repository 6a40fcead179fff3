r"""Self-checked exercises: a student's answer compared with a fingerprint of the solution.

An exercise whose answer is a formula, a number or one of a few words has an answer file
``gradnoise/answers/<exercise>.json`` that holds a **fingerprint** of the right answer — a salted hash —
and never the answer itself, so that the student edition, the pack's wheel and its notebooks reveal
nothing. In a chapter, the student sets ``answer`` and runs

>>> gradnoise.course.check("ex-richardson-cross-term", answer)        # doctest: +SKIP
right: ex-richardson-cross-term

A wrong answer raises :class:`WrongAnswer` with one line that says what is wrong where that can be told
without giving the answer away: off by a constant factor, the wrong sign, the wrong power of a named
symbol (``k``, say), a name the formula may not use. In Jupyter only that line is shown (no traceback).

Kinds of answer:

- ``formula``: a SymPy expression, or a string SymPy parses, in the symbols the exercise names (each
  taken positive). Its fingerprint: the formula's values at three fixed points of those symbols, each
  point inside the symbol's declared range, to ``digits`` significant digits.
- ``number``: a real number, right when it agrees with the solution to ``rtol`` (relative).
- ``choice``: one of a few words (``"above"``, ``"yes"``), compared without case.

Answer files are written by ``python -m gradnoise.course register`` (see :func:`main`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

from . import checks

__all__ = ["WrongAnswer", "check", "fingerprint", "load", "register", "ANSWERS", "main"]

ANSWERS = Path(__file__).resolve().parent / "answers"
KINDS = ("formula", "number", "choice")
# The factors and powers a wrong answer is tried against, to say how it is wrong.
FACTORS = (2, 0.5, 4, 0.25, 3, 1 / 3, 8, 0.125, 1.5, 2 / 3)
POWERS = (1, -1, 2, -2, 0.5, -0.5)
DEFAULT_RANGE = (1.0, 3.0)
_EXPRESSION_TEXT = 500


class WrongAnswer(AssertionError):
    """A wrong or missing answer: its message is one line, and Jupyter shows only that line."""

    def _render_traceback_(self):          # IPython: show the message, not a traceback
        return [f"{type(self).__name__}: {self}"]


def _salt(exercise: str, kind: str, text: str) -> str:
    return hashlib.sha256(f"gradnoise|{exercise}|{kind}|{text}".encode()).hexdigest()[:32]


def _points(symbols: dict) -> list[dict]:
    """Three fixed points, one value per symbol inside its range, drawn from the symbol's name."""
    out = []
    for p in range(3):
        point = {}
        for name, (lo, hi) in sorted(symbols.items()):
            u = int(hashlib.sha256(f"{name}|{p}".encode()).hexdigest()[:12], 16) / 16**12
            point[name] = lo + (hi - lo) * (0.1 + 0.8 * u)
        out.append(point)
    return out


def _parse(answer, symbols: dict):
    """The answer as a SymPy expression in the named (positive) symbols; WrongAnswer if it is not one."""
    import sympy as sp

    names = {n: sp.Symbol(n, positive=True) for n in symbols}
    if isinstance(answer, str):
        if len(answer) > _EXPRESSION_TEXT:
            raise WrongAnswer(f"the formula is longer than {_EXPRESSION_TEXT} characters")
        try:
            expr = sp.sympify(answer, locals=dict(names), rational=True)
        except (sp.SympifyError, SyntaxError, TypeError, ValueError, AttributeError) as e:
            raise WrongAnswer(f"SymPy cannot read the formula {answer!r}: {type(e).__name__}") from None
    elif isinstance(answer, sp.Basic) or isinstance(answer, (int, float)) and not isinstance(answer, bool):
        expr = sp.sympify(answer)
    else:
        raise WrongAnswer(f"the answer must be a formula (a SymPy expression or a string), got {type(answer).__name__}")
    if not isinstance(expr, sp.Expr):
        raise WrongAnswer(f"the answer must be an expression, got {type(expr).__name__}")
    # Symbols are matched by name (a student's own sp.symbols("k") is the same k).
    unknown = sorted({s.name for s in expr.free_symbols} - set(symbols))
    if unknown:
        raise WrongAnswer(f"the formula uses {', '.join(unknown)}; it may use only {', '.join(sorted(symbols))}")
    return expr.subs({s: names[s.name] for s in expr.free_symbols})


def _formula_values(expr, symbols: dict, digits: int):
    import sympy as sp

    names = {n: sp.Symbol(n, positive=True) for n in symbols}
    values = []
    for point in _points(symbols):
        v = sp.N(expr.subs({names[n]: sp.Rational(repr(x)) for n, x in point.items()}), 40)
        try:
            z = complex(v)
        except (TypeError, ValueError):
            return None
        if not all(math.isfinite(c) for c in (z.real, z.imag)):
            return None
        values.append(z)
    return values


def _round(x: float, digits: int) -> str:
    return "0" if x == 0 else f"{x:.{digits - 1}e}"


def _values_text(values, digits: int) -> str:
    return ";".join(f"{_round(z.real, digits)},{_round(z.imag, digits) if abs(z.imag) > 1e-30 else '0'}"
                    for z in values)


def fingerprint(exercise: str, kind: str, answer, symbols: dict | None = None, digits: int = 10) -> str | None:
    """The salted hash of ``answer`` for ``exercise``: what an answer file stores and :func:`check` compares.

    ``formula``: ``answer`` is parsed in ``symbols`` (``{name: (low, high)}``) and evaluated at three fixed
    points to ``digits`` significant digits. ``number``: rounded to ``digits`` significant digits.
    ``choice``: the lower-cased, stripped word. None if the formula has no finite value at the points.
    """
    exercise = checks.plain_name(exercise, "exercise")
    kind = checks.choice(kind, "kind", KINDS)
    digits = checks.count(digits, "digits", maximum=15)
    if kind == "choice":
        if not isinstance(answer, str):
            raise WrongAnswer(f"the answer must be a word (a string), got {type(answer).__name__}")
        return _salt(exercise, kind, answer.strip().lower())
    if kind == "number":
        x = _number(answer)
        return _salt(exercise, kind, _round(x, digits))
    values = _formula_values(_parse(answer, _symbols(symbols)), _symbols(symbols), digits)
    return None if values is None else _salt(exercise, kind, _values_text(values, digits))


def _symbols(symbols) -> dict:
    if not isinstance(symbols, dict) or not symbols:
        raise ValueError(f"symbols must be a non-empty dict name -> (low, high), got {checks._short(symbols)}")
    out = {}
    for name, rng in symbols.items():
        checks.plain_name(name, "symbols name")
        if rng is None:
            rng = DEFAULT_RANGE
        if isinstance(rng, (str, bytes)) or not isinstance(rng, (list, tuple)) or len(rng) != 2:
            raise ValueError(f"symbols: the range of {name} must be (low, high), got {checks._short(rng)}")
        lo, hi = (float(checks.real(x, "symbols range")) for x in rng)
        if not lo < hi:
            raise ValueError(f"symbols: the range of {name} must have low < high, got {rng!r}")
        out[name] = (lo, hi)
    return out


def _number(answer) -> float:
    import sympy as sp

    if isinstance(answer, bool):
        raise WrongAnswer("the answer must be a number, got a bool")
    try:
        x = float(answer.item() if hasattr(answer, "item") else answer)
    except (TypeError, ValueError, RuntimeError):
        try:
            x = float(sp.sympify(answer)) if isinstance(answer, (str, sp.Basic)) else None
        except (sp.SympifyError, TypeError, ValueError, SyntaxError):
            x = None
        if x is None:
            raise WrongAnswer(f"the answer must be a number, got {type(answer).__name__}") from None
    if not math.isfinite(x):
        raise WrongAnswer(f"the answer must be a finite number, got {x}")
    return x


def load(exercise: str, root: Path | None = None) -> dict:
    """The answer file of ``exercise`` (from ``root``, default the package's ``answers`` folder)."""
    exercise = checks.plain_name(exercise, "exercise")
    path = (ANSWERS if root is None else checks.path(root, "root", "dir")) / f"{exercise}.json"
    if not path.is_file():
        raise ValueError(f"no answer file for exercise {exercise!r} ({path})")
    spec = json.loads(path.read_text())
    if spec.get("exercise") != exercise or spec.get("kind") not in KINDS or "fingerprint" not in spec:
        raise ValueError(f"{path}: not an answer file for {exercise!r}")
    return spec


def _matches(spec: dict, answer) -> bool:
    fp = fingerprint(spec["exercise"], spec["kind"], answer, spec.get("symbols"), spec.get("digits", 10))
    return fp is not None and fp == spec["fingerprint"]


def _number_matches(spec: dict, x: float) -> bool:
    """A number is right when some value within rtol of it rounds to the solution's fingerprint."""
    rtol, digits = spec.get("rtol", 0.0), spec.get("digits", 3)
    steps = 41
    for i in range(steps):
        y = x * (1 + rtol * (2 * i / (steps - 1) - 1))
        if fingerprint(spec["exercise"], "number", y, digits=digits) == spec["fingerprint"]:
            return True
    return False


def _fraction(c: float) -> str:
    """A factor as a short fraction: 0.5 -> '1/2', 2 -> '2'."""
    import sympy as sp

    return str(sp.nsimplify(c))


def _diagnose(spec: dict, answer) -> str:
    """One line on how a wrong answer is wrong, found by trying simple corrections of it."""
    kind = spec["kind"]
    if kind == "choice":
        return f"not the right choice (one of {', '.join(spec.get('choices', [])) or 'the words the exercise names'})"
    if kind == "number":
        x = _number(answer)
        if _number_matches(spec, -x):
            return "wrong sign"
        for c in FACTORS:
            if _number_matches(spec, c * x):
                return f"off by a constant factor: the right answer is {_fraction(c)} times yours"
        return "not the right number (nor off by a simple factor or sign)"
    import sympy as sp

    symbols = _symbols(spec["symbols"])
    expr = _parse(answer, symbols)
    if _matches(spec, -expr):
        return "wrong sign"
    for c in FACTORS:
        if _matches(spec, sp.nsimplify(c) * expr):
            return f"off by a constant factor: the right answer is {_fraction(c)} times yours"
    for name in spec.get("powers", []):
        s = sp.Symbol(name, positive=True)
        for p in POWERS:
            if _matches(spec, expr * s ** sp.nsimplify(p)):
                return f"wrong power of {name}: the right answer is yours times {name}^{sp.nsimplify(p)}"
    return "not the right formula (nor off by a simple factor, sign or power)"


def check(exercise: str, answer, root: Path | None = None) -> bool:
    """Check ``answer`` to ``exercise``: print ``right: <exercise>`` and return True, or raise
    :class:`WrongAnswer` with one line on what is wrong (``...``, the unanswered stub, says so)."""
    spec = load(exercise, root)
    if answer is Ellipsis or answer is None:
        raise WrongAnswer(f"no answer yet: set `answer` ({spec.get('expects', spec['kind'])}) and run this cell again")
    if spec["kind"] == "number":
        ok = _number_matches(spec, _number(answer))
    else:
        ok = _matches(spec, answer)
    if not ok:
        raise WrongAnswer(_diagnose(spec, answer))
    print(f"right: {exercise}")
    return True


def register(exercise: str, kind: str, answer, *, symbols: dict | None = None, powers=(), digits: int | None = None,
             rtol: float = 0.0, choices=(), expects: str = "", root: Path | None = None) -> Path:
    """Write the answer file of ``exercise``: the fingerprint of ``answer`` and how to compare with it
    (never the answer). ``expects`` is the one-line description shown with an unanswered stub."""
    exercise = checks.plain_name(exercise, "exercise")
    kind = checks.choice(kind, "kind", KINDS)
    digits = (10 if kind == "formula" else 3) if digits is None else checks.count(digits, "digits", maximum=15)
    rtol = float(checks.real(rtol, "rtol", low=0.0, high=1.0))
    if not isinstance(expects, str):
        raise ValueError(f"expects must be a str, got {checks._short(expects)}")
    if isinstance(choices, (str, bytes)) or not isinstance(choices, (list, tuple)):
        raise ValueError(f"choices must be a list of words, got {checks._short(choices)}")
    if isinstance(powers, (str, bytes)) or not isinstance(powers, (list, tuple)):
        raise ValueError(f"powers must be a list of symbol names, got {checks._short(powers)}")
    if root is not None:
        root = checks.path(root, "root", exists=False)
        if root.exists() and not root.is_dir():
            raise ValueError(f"root must be a folder, got the file {root}")
    spec = {"exercise": exercise, "kind": kind, "digits": digits, "expects": expects}
    if kind == "formula":
        spec["symbols"] = {n: list(r) for n, r in _symbols(symbols).items()}
        spec["powers"] = [checks.plain_name(p, "powers entry") for p in powers]
        if any(p not in spec["symbols"] for p in spec["powers"]):
            raise ValueError(f"powers must name symbols of the formula, got {list(powers)!r}")
    if kind == "number":
        spec["rtol"] = rtol
    if kind == "choice":
        spec["choices"] = [str(c) for c in choices]
    fp = fingerprint(exercise, kind, answer, spec.get("symbols"), digits)
    if fp is None:
        raise ValueError(f"{exercise}: the formula has no finite value at the fingerprint's points; narrow the ranges")
    spec["fingerprint"] = fp
    out = (ANSWERS if root is None else Path(root)) / f"{exercise}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
    return out


def main(argv=None) -> int:
    """``python -m gradnoise.course register EXERCISE KIND ANSWER [--symbol NAME[=LOW:HIGH] ...]
    [--power NAME ...] [--digits N] [--rtol X] [--choice WORD ...] [--expects TEXT]``: write an answer file."""
    p = argparse.ArgumentParser(prog="python -m gradnoise.course")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("register", help="write the answer file of one exercise")
    r.add_argument("exercise")
    r.add_argument("kind", choices=KINDS)
    r.add_argument("answer", help="the right answer: a formula, a number or a word")
    r.add_argument("--symbol", action="append", default=[], help="NAME or NAME=LOW:HIGH (formulas)")
    r.add_argument("--power", action="append", default=[], help="a symbol whose wrong power is diagnosed")
    r.add_argument("--digits", type=int)
    r.add_argument("--rtol", type=float, default=0.0)
    r.add_argument("--choice", action="append", default=[])
    r.add_argument("--expects", default="")
    r.add_argument("--root", type=Path)
    checks.argv(argv)
    args = p.parse_args(argv)
    try:
        return _register_cli(args)
    except ValueError as e:
        p.error(str(e))


def _register_cli(args) -> int:
    symbols = {}
    for s in args.symbol:
        name, _, rng = s.partition("=")
        try:
            symbols[name] = tuple(float(x) for x in rng.split(":")) if rng else None
        except ValueError:
            raise ValueError(f"--symbol must be NAME or NAME=LOW:HIGH, got {s!r}") from None
    try:
        answer = float(args.answer) if args.kind == "number" else args.answer
    except ValueError:
        raise ValueError(f"the answer of a number exercise must be a number, got {args.answer!r}") from None
    path = register(args.exercise, args.kind, answer, symbols=symbols or None, powers=args.power, digits=args.digits,
                    rtol=args.rtol, choices=args.choice, expects=args.expects, root=args.root)
    spec = json.loads(path.read_text())
    check(args.exercise, answer, root=args.root)         # the file accepts its own answer
    print(f"wrote {path} ({spec['kind']}; fingerprint {spec['fingerprint'][:8]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
