"""The book's claim ledger: the claims catalogue joined with the chapters' front matter.

``claims.yml`` (at the book's root) carries every claim of the research notes with its stable ID. Each
chapter declares in its YAML front matter the claims it covers and their verdicts, and, for a verdict
other than ``holds``, a one-line corrected or conditioned statement::

    claims:
      000-C7: conditional
    verdict_notes:
      000-C7: "R has bias O(1/k^2); Var R = sigma_L^2/k = 2 Var g_2k only if g_k's tokens are nested in g_2k's."

:func:`ledger` validates all of it and returns one row per catalogued claim.
"""
from __future__ import annotations

import pathlib
import re
from dataclasses import dataclass

import yaml

VERDICTS = ("holds", "conditional", "wrong")
ID_PATTERN = re.compile(r"^\d{3}-[A-Z]\d+$")


@dataclass(frozen=True)
class Row:
    """One line of the ledger: a catalogued claim and, if covered, its chapter and verdict."""

    id: str
    note: str
    statement: str
    verdict: str | None = None
    verdict_note: str | None = None
    chapter: str | None = None  # docname, e.g. "chapters/richardson"
    title: str | None = None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (yaml keeps the last silently)."""


def _unique_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _file(path, name: str) -> pathlib.Path:
    from .. import checks

    return checks.path(path, name, "file")


def _chapters(chapters) -> None:
    if not isinstance(chapters, dict) or not all(isinstance(k, str) for k in chapters):
        raise ValueError(f"chapters must map docnames to files, got {type(chapters).__name__}")
    for docname, path in chapters.items():
        _file(path, f"chapters[{docname!r}]")


def load_yaml(text: str, where) -> object:
    """Parse YAML, turning any parse error (or a duplicated key) into one ``ValueError`` naming ``where``."""
    if not isinstance(text, str):
        raise ValueError(f"text must be YAML text (a str), got {type(text).__name__}")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{where}: invalid YAML{at}: {problem}") from None


def front_matter(path: pathlib.Path) -> dict:
    """The YAML front matter of a Markdown file (``{}`` if it has none)."""
    text = _file(path, "path").read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        raise ValueError(f"path {str(path)!r}: front matter is not closed by '---'")
    data = load_yaml(text[3:end], f"{path}: front matter") or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: front matter must be a mapping")
    return data


def title_of(path: pathlib.Path) -> str:
    """The first level-1 heading of a Markdown file."""
    for line in _file(path, "path").read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return pathlib.Path(path).stem


def catalogue(path: pathlib.Path) -> list[dict]:
    """The claims of ``claims.yml``: dicts with ``id``, ``note`` and ``statement``."""
    data = load_yaml(_file(path, "path").read_text(encoding="utf-8"), f"path {str(path)!r}")
    claims = data.get("claims") if isinstance(data, dict) else None
    if not claims or not isinstance(claims, list):
        raise ValueError(f"path {str(path)!r}: no 'claims' list")
    seen = set()
    for n, c in enumerate(claims, 1):
        if not isinstance(c, dict):
            raise ValueError(f"{path}: claim entry {n} is not a mapping")
        missing = [key for key in ("id", "note", "statement") if key not in c]
        if missing:
            raise ValueError(f"{path}: claim entry {n} ({c.get('id', 'no id')}) lacks {', '.join(missing)}")
        if not ID_PATTERN.match(str(c.get("id", ""))):
            raise ValueError(f"{path}: malformed claim ID {c.get('id')!r}")
        if c["id"] in seen:
            raise ValueError(f"{path}: claim {c['id']} listed twice")
        seen.add(c["id"])
    return claims


def coverage(chapters: dict[str, pathlib.Path], known_ids) -> dict[str, tuple[str, str, str | None]]:
    """Map claim ID -> (docname, verdict, verdict note) from the chapters' front matter.

    ``chapters`` maps docnames to files. Raises ``ValueError`` for an unknown ID, a verdict other than
    holds / conditional / wrong, an ID covered by two chapters, a missing verdict note for a verdict
    other than ``holds``, or a verdict note for an ID the chapter does not cover.
    """
    _chapters(chapters)
    if isinstance(known_ids, (str, bytes)) or not hasattr(known_ids, "__iter__"):
        raise ValueError(f"known_ids must be a collection of claim IDs, got {type(known_ids).__name__}")
    known = set(known_ids)
    owner: dict[str, tuple[str, str, str | None]] = {}
    for docname, path in chapters.items():
        meta = front_matter(path)
        claims = meta.get("claims") or {}
        notes = meta.get("verdict_notes") or {}
        if not isinstance(claims, dict) or not isinstance(notes, dict):
            raise ValueError(f"{docname}: 'claims' and 'verdict_notes' must be mappings")
        for cid in notes:
            if cid not in claims:
                raise ValueError(f"{docname}: verdict_notes names {cid}, which the chapter does not claim")
        for cid, verdict in claims.items():
            if cid not in known:
                raise ValueError(f"{docname}: claim {cid} is not in the catalogue (known_ids)")
            if verdict not in VERDICTS:
                raise ValueError(f"{docname}: claim {cid} has verdict {verdict!r}; use one of {', '.join(VERDICTS)}")
            if cid in owner:
                raise ValueError(f"claim {cid} is covered twice: by {owner[cid][0]} and by {docname}")
            note = notes.get(cid)
            if verdict != "holds" and not note:
                raise ValueError(f"{docname}: claim {cid} is {verdict} but has no one-line verdict_notes entry")
            owner[cid] = (docname, verdict, note)
    return owner


def ledger(catalogue_path: pathlib.Path, chapters: dict[str, pathlib.Path]) -> list[Row]:
    """One :class:`Row` per catalogued claim, in catalogue order, joined with the chapters' verdicts."""
    _chapters(chapters)
    claims = catalogue(_file(catalogue_path, "catalogue_path"))
    owner = coverage(chapters, [c["id"] for c in claims])
    rows = []
    for c in claims:
        docname, verdict, note = owner.get(c["id"], (None, None, None))
        title = title_of(chapters[docname]) if docname else None
        rows.append(Row(c["id"], str(c["note"]), c["statement"], verdict, note, docname, title))
    return rows
