"""The claim ledger: the catalogue and the chapters' front matter must fit together."""
import pathlib

import pytest

from gradnoise.site import ledger
from conftest import ROOT, chapter_sources

CATALOGUE = ROOT / "claims.yml"


def write_chapter(tmp_path, name, front):
    path = tmp_path / f"{name}.md"
    path.write_text(f"---\n{front}---\n\n# Title of {name}\n")
    return path


def test_the_books_chapters_make_a_valid_ledger():
    chapters = {str(p.relative_to(ROOT).with_suffix("")): p for p in chapter_sources()}
    rows = ledger.ledger(CATALOGUE, chapters)
    assert len(rows) == len(ledger.catalogue(CATALOGUE)) and len(rows) > 30
    covered = [r for r in rows if r.chapter]
    assert len(covered) == sum(len(ledger.front_matter(p).get("claims") or {}) for p in chapters.values())
    for r in covered:
        assert r.verdict in ledger.VERDICTS and r.title
        assert r.verdict == "holds" or r.verdict_note


def test_the_catalogue_matches_the_shared_one():
    shared = ROOT.parent / "shared" / "claims.md"
    if not shared.exists():
        pytest.skip("../shared/claims.md is not beside this checkout")
    import re
    ids = re.findall(r"^\| `(\d{3}-[A-Z]\d+)` \|", shared.read_text(), flags=re.M)
    assert [c["id"] for c in ledger.catalogue(CATALOGUE)] == ids


@pytest.mark.parametrize("front, message", [
    ("claims:\n  999-Z9: holds\n", "not in the catalogue"),
    ("claims:\n  000-C1: true\n", "has verdict"),
    ("claims:\n  000-C1: mostly\n", "has verdict 'mostly'"),
    ("claims:\n  000-C1: wrong\n", "no one-line verdict_notes"),
    ("claims:\n  000-C1: holds\nverdict_notes:\n  000-C2: x\n", "does not claim"),
    ("claims: [000-C1]\n", "must be mappings"),
])
def test_bad_front_matter_is_refused(tmp_path, front, message):
    chapters = {"chapters/bad": write_chapter(tmp_path, "bad", front)}
    with pytest.raises(ValueError, match=message):
        ledger.ledger(CATALOGUE, chapters)


def test_an_id_covered_twice_is_refused(tmp_path):
    chapters = {
        "chapters/a": write_chapter(tmp_path, "a", "claims:\n  000-C2: holds\n"),
        "chapters/b": write_chapter(tmp_path, "b", "claims:\n  000-C2: holds\n"),
    }
    with pytest.raises(ValueError, match="covered twice: by chapters/a and by chapters/b"):
        ledger.ledger(CATALOGUE, chapters)


def test_uncovered_claims_are_listed_as_such(tmp_path):
    chapters = {"chapters/a": write_chapter(tmp_path, "a", "claims:\n  000-C2: holds\n")}
    rows = {r.id: r for r in ledger.ledger(CATALOGUE, chapters)}
    assert rows["000-C2"].chapter == "chapters/a" and rows["000-C2"].title == "Title of a"
    assert rows["000-C3"].chapter is None and rows["000-C3"].verdict is None


def test_malformed_catalogue(tmp_path):
    bad = tmp_path / "claims.yml"
    bad.write_text("claims:\n  - {id: C1, note: '000', statement: x}\n")
    with pytest.raises(ValueError, match="malformed claim ID"):
        ledger.catalogue(bad)
    bad.write_text("claims:\n  - {id: 000-C1, note: '000', statement: x}\n  - {id: 000-C1, note: '000', statement: y}\n")
    with pytest.raises(ValueError, match="listed twice"):
        ledger.catalogue(bad)
    bad.write_text("notes: {}\n")
    with pytest.raises(ValueError, match="no 'claims'"):
        ledger.catalogue(bad)


def test_malformed_front_matter_is_one_line_naming_the_file(tmp_path):
    bad = write_chapter(tmp_path, "bad", "claims: {000-C7: holds\n")
    with pytest.raises(ValueError) as info:
        ledger.front_matter(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_same_id_twice_in_one_chapter(tmp_path):
    twice = write_chapter(tmp_path, "twice", "claims:\n  000-C7: holds\n  000-C7: wrong\n")
    with pytest.raises(ValueError, match="appears twice"):
        ledger.coverage({"twice": twice}, ["000-C7"])


def test_catalogue_entry_missing_a_key(tmp_path):
    cat = tmp_path / "claims.yml"
    cat.write_text("claims:\n- id: 000-C1\n  note: '000'\n")
    with pytest.raises(ValueError, match="lacks statement"):
        ledger.catalogue(cat)


def test_every_chapter_claims_or_retests():
    """A chapter either covers catalogued claims or says which earlier verdicts it re-tests."""
    known = {c["id"] for c in ledger.catalogue(CATALOGUE)}
    for path in chapter_sources():
        meta = ledger.front_matter(path)
        claims, retests = meta.get("claims") or {}, meta.get("retests") or []
        assert claims or retests, f"{path.stem} neither claims nor re-tests anything"
        assert set(retests) <= known, f"{path.stem} re-tests unknown claims {set(retests) - known}"
