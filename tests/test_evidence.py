"""The evidence of every chapter: each agreement has a rejection, and every coarse check is explained.

These tests read the records that the chapters wrote (``$GRADNOISE_EVIDENCE/<chapter>.jsonl``) while
nbval executed them earlier in the same pytest session (``conftest.py`` orders this file last). Run
alone, without executed chapters, they are skipped. The unit tests of the recorder itself run always.
"""
from __future__ import annotations

import json
import os
import pathlib
import re

import pytest
import torch

from conftest import chapter_sources
from gradnoise import evidence, stats

COARSE = 0.10


def _records_by_chapter():
    where = os.environ.get(evidence.ENV_VAR, "").strip()
    if not where or not pathlib.Path(where).is_dir():
        pytest.skip("no evidence directory ($GRADNOISE_EVIDENCE): run through make test")
    records = evidence.load(where)
    if not records:
        pytest.skip("no evidence recorded in this session")
    by = {}
    for r in records:
        by.setdefault(r.chapter, []).append(r)
    return by


def _shape(text: str) -> str:
    """Numbers replaced by '#': a label made by an f-string over settings matches any of its instances."""
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "#", text)


def _prose(path: pathlib.Path) -> str:
    """A chapter's Markdown with its code cells removed."""
    return re.sub(r"```\{code-cell\}.*?```", "", path.read_text(), flags=re.S)


@pytest.mark.evidence
@pytest.mark.parametrize("path", chapter_sources(), ids=lambda p: p.stem)
def test_every_agreement_has_a_rejection(path):
    by = _records_by_chapter()
    mine = by.get(path.stem)
    assert mine, f"{path.stem} recorded no checks (does it call gn.chapter('{path.stem}')?)"
    for kind, partner in (("agrees", "rejects"), ("exact", "differs")):
        for claim in sorted({r.claim or "" for r in mine if r.kind == kind}):
            paired = [r for r in mine if r.kind in ("rejects", "differs") and (r.claim or "") == claim]
            assert paired, (f"{path.stem}: {kind} checks of claim {claim or '(none)'} have no rejection "
                            f"of a wrong alternative for the same claim")


@pytest.mark.evidence
@pytest.mark.parametrize("path", chapter_sources(), ids=lambda p: p.stem)
def test_coarse_checks_are_explained(path):
    by = _records_by_chapter()
    prose = _prose(path)
    paragraphs = [_shape(p) for p in re.split(r"\n\s*\n", prose) if "resolution" in p.lower()]
    for r in by.get(path.stem, []):
        if r.kind == "agrees" and r.resolution is not None and r.resolution > COARSE:
            assert any(_shape(r.what) in p for p in paragraphs), (
                f"{path.stem}: check {r.what!r} resolves only {100 * r.resolution:.0f} % of its prediction; "
                "the chapter must say why that is enough in a paragraph that names the check (its label; numbers "
            "may differ) and its resolution")


@pytest.mark.evidence
@pytest.mark.parametrize("path", chapter_sources(), ids=lambda p: p.stem)
def test_no_check_is_recorded_twice(path):
    """The same check (label, kind, entries and worst value) recorded twice pads the evidence page."""
    by = _records_by_chapter()
    seen, twice = set(), []
    for r in by.get(path.stem, []):
        key = (r.what, r.kind, r.entries, r.worst)
        if key in seen:
            twice.append(f"{r.kind} {r.what!r} (worst {r.worst:.6g})")
        seen.add(key)
    assert not twice, f"{path.stem}: the same check recorded twice: {twice}"


def test_distinct_predictions_are_counted():
    rows = [evidence.Record("c", None, "a", "agrees", 1, 0.5, 5.0, 0.01),
            evidence.Record("c", None, "a", "agrees", 2, 0.7, 5.0, 0.01),
            evidence.Record("c", None, "b", "exact", 1, 1e-12, 1e-10),
            evidence.Record("c", None, "a", "rejects", 1, 20.0, 10.0)]
    assert evidence.distinct_predictions(rows) == 2


@pytest.fixture
def no_chapter_after():
    """The recorder's chapter must not outlive a test (later tests would file checks under it)."""
    yield
    evidence.end()


def test_recorder_files_and_memory(tmp_path, monkeypatch, no_chapter_after):
    monkeypatch.setenv(evidence.ENV_VAR, str(tmp_path))
    evidence.begin("unit-chapter")
    est = torch.tensor([1.0, 2.0], dtype=torch.float64)
    stats.assert_agrees(est, 0.1, torch.tensor([1.0, 2.1]), what="pair", claim="000-C7")
    stats.assert_rejects(est, 0.1, 0.0, what="zero", claim="000-C7")
    stats.assert_close(1.0, 1.0, what="exact one")
    stats.assert_differs(1.0, 2.0, what="wrong one")
    rows = [json.loads(line) for line in (tmp_path / "unit-chapter.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["agrees", "rejects", "exact", "differs"]
    assert rows[0]["claim"] == "000-C7" and rows[0]["entries"] == 2
    assert rows[0]["resolution"] == pytest.approx(5 / (2.1 / 0.1))      # z_max / max |mu|/se
    assert [r.kind for r in evidence.records("unit-chapter")] == ["agrees", "rejects", "exact", "differs"]
    assert [r.kind for r in evidence.load(tmp_path)] == ["agrees", "rejects", "exact", "differs"]
    evidence.begin("unit-chapter")                                      # running again starts afresh
    assert (tmp_path / "unit-chapter.jsonl").read_text() == "" and not evidence.records("unit-chapter")
    with pytest.raises(AssertionError):                                 # a failed check records nothing
        stats.assert_agrees(est, 0.1, 0.0)
    assert evidence.records("unit-chapter") == []


def test_recorder_bad_input(tmp_path, no_chapter_after):
    with pytest.raises(ValueError, match="chapter name"):
        evidence.begin("no spaces please")
    with pytest.raises(ValueError, match="claim"):
        evidence.record("agrees", "x", 1, 0.1, 5.0, claim="C7")
    with pytest.raises(ValueError, match="kind"):
        evidence.record("maybe", "x", 1, 0.1, 5.0)
    (tmp_path / "bad.jsonl").write_text("{not json}\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        evidence.load(tmp_path)
