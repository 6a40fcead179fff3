r"""The book's evidence: a record of every check a chapter makes, as it runs.

Every assertion of :mod:`gradnoise.stats` (``assert_agrees``, ``assert_rejects``, ``assert_close``,
``assert_differs``) calls :func:`record` with what it compared and how sharply. A chapter opens with
:func:`gradnoise.chapter`, which names it; when the environment variable ``GRADNOISE_EVIDENCE`` names a
directory, the records of chapter ``NAME`` are written to ``NAME.jsonl`` there (the file is started
afresh each time the chapter runs), and the book's evidence page is built from those files.

A record holds the chapter, the claim ID it supports (or ``None``), a short label, its kind
(``agrees``/``rejects`` for z-tests, ``exact``/``differs`` for checks to rounding), the number of
entries compared, the worst :math:`|z|` (or relative error), the bound, and for an agreement the
**resolution**: the smallest relative change of the prediction the check would have caught at its bound,
:math:`z_{\max}\,/\max_i(|\mu_i|/\mathrm{se}_i)` (``inf`` when the prediction is zero).
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import re
from dataclasses import asdict, dataclass

ENV_VAR = "GRADNOISE_EVIDENCE"
KINDS = ("agrees", "rejects", "exact", "differs")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ID = re.compile(r"^\d{3}-[A-Z]\d+$")


@dataclass(frozen=True)
class Record:
    """One check: see the module docstring for the fields."""

    chapter: str
    claim: str | None
    what: str
    kind: str
    entries: int
    worst: float
    bound: float
    resolution: float | None = None


_state = {"chapter": None, "claim": None}
_records: list[Record] = []


def begin(name: str, claim: str | None = None) -> None:
    """Name the chapter whose checks follow, and start its evidence file afresh (if one is kept).

    ``claim`` is the claim ID that the chapter's checks support when a check names none (for a chapter
    of a single claim).
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"chapter name must be letters, digits, '-', '_' or '.', got {name!r}")
    _check_claim(claim)
    _state["chapter"] = name
    _state["claim"] = claim
    _records[:] = [r for r in _records if r.chapter != name]
    path = _path(name)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")
        except OSError as err:
            raise ValueError(f"{ENV_VAR}={str(path.parent)!r} is not a folder the evidence can be written to "
                             f"({type(err).__name__})") from None


def _check_claim(claim) -> None:
    if claim is not None and (not isinstance(claim, str) or not _ID.match(claim)):
        raise ValueError(f"claim must be a claim ID such as '000-C7', got {claim!r}")


def end() -> None:
    """Stop filing checks under the current chapter (they are kept in memory as ``unnamed``)."""
    _state["chapter"] = None
    _state["claim"] = None


def current() -> str | None:
    """The chapter named by the last :func:`begin` (``None`` before any)."""
    return _state["chapter"]


def _path(name: str) -> pathlib.Path | None:
    where = os.environ.get(ENV_VAR, "").strip()
    return pathlib.Path(where) / f"{name}.jsonl" if where else None


def record(kind: str, what: str, entries: int, worst: float, bound: float,
           resolution: float | None = None, claim: str | None = None) -> Record:
    """Keep one check's record in memory, and in the chapter's evidence file when one is kept."""
    from . import checks

    checks.choice(kind, "kind", KINDS)
    _check_claim(claim)
    if not isinstance(what, str) or not what.strip():
        raise ValueError(f"what must be a non-empty label, got {checks._short(what)}")
    entries = checks.count(entries, "entries", minimum=1)
    worst = checks.real(worst, "worst", low=0)
    bound = checks.real(bound, "bound", low=0, low_open=True)
    if resolution is not None and not (isinstance(resolution, (int, float)) and not isinstance(resolution, bool)
                                       and resolution == math.inf):
        resolution = checks.real(resolution, "resolution", low=0, low_open=True)
    rec = Record(_state["chapter"] or "unnamed", claim if claim is not None else _state["claim"], what, kind, entries,
                 worst, bound, None if resolution is None else float(resolution))
    _records.append(rec)
    path = _path(rec.chapter) if _state["chapter"] else None
    if path is not None:
        row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(rec).items()}
        with path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
    return rec


def records(chapter: str | None = None) -> list[Record]:
    """The records kept in this process (of one chapter, if named)."""
    if chapter is not None and (not isinstance(chapter, str) or not _NAME.match(chapter)):
        raise ValueError(f"chapter must be a chapter name (letters, digits, '-', '_' or '.'), got {chapter!r}")
    return [r for r in _records if chapter is None or r.chapter == chapter]


def load(directory) -> list[Record]:
    """Every record in the ``*.jsonl`` files of ``directory`` (missing resolution read as ``None``)."""
    if not isinstance(directory, (str, os.PathLike)):
        raise ValueError(f"directory must be a path, got {type(directory).__name__}")
    if not pathlib.Path(directory).is_dir():
        raise ValueError(f"directory {str(directory)!r} is not an evidence folder (the tests would pass on nothing)")
    out = []
    for path in sorted(pathlib.Path(directory).glob("*.jsonl")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out.append(Record(**row))
            except (ValueError, TypeError) as err:
                raise ValueError(f"{path}:{n}: not an evidence record ({err})") from None
    return out


def distinct_predictions(records) -> int:
    """How many different predictions the records test: distinct labels among agreements and exact checks.

    (A rejection tests the power of a check, not another prediction; the same label recorded for several
    entries or settings counts once.)
    """
    if isinstance(records, (str, bytes, Record)) or not hasattr(records, "__iter__"):
        raise ValueError(f"records must be a list of evidence Records, got {type(records).__name__}")
    records = list(records)
    if not all(isinstance(r, Record) for r in records):
        raise ValueError("records must be a list of evidence Records (gradnoise.evidence.Record)")
    return len({r.what for r in records if r.kind in ("agrees", "exact")})
