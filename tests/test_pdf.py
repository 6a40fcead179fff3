"""The book as a PDF, read back: both editions, every chapter, no broken reference, no solution in print.

``make pdf`` builds ``_build/latex/gradnoise-book.pdf`` (the full edition) and
``_build/student/_build/latex/gradnoise-book.pdf`` (the student edition) with Jupyter Book's LaTeX
builder, adds them to the website, then runs this file. The text is extracted with ``pdftotext``
(poppler) and compared with the sources: every page of the table of contents has its title in the PDF,
no reference is left unresolved (``??``), the LaTeX log has no undefined control sequence or reference,
the page count is sane, the solutions' text is in the full PDF and in none of the student PDF, and the
website links to the PDFs it offers. Without the PDFs the tests are skipped (under ``CI=true`` they fail).
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import toc_files
from gradnoise.site import PDFS, pdf_name

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = (120, 1500)


def _pdf(edition: str) -> pathlib.Path:
    folder, name = PDFS[edition]
    path = ROOT / folder / name
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"no {edition} PDF at {path}: run make pdf")
        pytest.skip(f"no {edition} PDF (make pdf builds it)")
    if shutil.which("pdftotext") is None:
        pytest.fail("pdftotext (Debian's poppler-utils) is needed to read the PDF back")
    return path


def _normal(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = text.replace("\u2014", "-").replace("\u2013", "-").replace("\ufb01", "fi").replace("\ufb02", "fl")
    text = re.sub(r"(\w)-\s*\n\s*(\w)", r"\1\2", text)          # words hyphenated across lines
    return re.sub(r"\s+", " ", text)


_TEXT: dict[str, str] = {}


def _text(edition: str) -> str:
    if edition not in _TEXT:
        out = subprocess.run(["pdftotext", "-enc", "UTF-8", str(_pdf(edition)), "-"], capture_output=True,
                             text=True, check=True).stdout
        _TEXT[edition] = _normal(out)
    return _TEXT[edition]


def _pages(edition: str) -> int:
    out = subprocess.run(["pdfinfo", str(_pdf(edition))], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^Pages:\s+(\d+)", out, re.M).group(1))


def _toc_pages() -> list[pathlib.Path]:
    return [(ROOT / f).with_suffix(".md") for f in toc_files()]


def _title(path: pathlib.Path) -> str:
    return re.search(r"^# (.+)$", path.read_text(), re.M).group(1).strip()


def _plain_segments(text: str, words: int = 4) -> list[str]:
    """The runs of a Markdown text outside ``$...$`` and markup with at least ``words`` words."""
    text = re.sub(r"\$\$.*?\$\$", "|", text, flags=re.S)
    text = re.sub(r"\$[^$]*\$", "|", text)
    text = re.sub(r"\{[a-z-]+\}`[^`]*`|`[^`]*`|\*+|_+|\[|\]\([^)]*\)", "|", text)
    runs = [_normal(run).strip(" ,.;:()") for run in re.split(r"[|\n]", text)]
    return [r for r in runs if len(r.split()) >= words]


def _solutions(path: pathlib.Path) -> list[str]:
    """The longest plain-text run of each solution's prose (between solution-start and the first code cell)."""
    out = []
    for block in re.findall(r"```\{solution-start\}.*?\n```\n(.*?)```\{solution-end\}", path.read_text(), re.S):
        prose = block.split("```{code-cell}")[0]
        runs = _plain_segments(prose, words=5)
        if runs:
            longest = max(runs, key=len)
            out.append(" ".join(longest.split()[:8]))
    return out


@pytest.mark.parametrize("edition", list(PDFS))
def test_every_page_title_is_in_the_pdf(edition):
    text = _text(edition)
    missing = []
    for path in _toc_pages():
        for run in _plain_segments(_title(path), words=1) or [_title(path)]:
            if _normal(run) not in text:
                missing.append(f"{path.stem}: {run!r}")
    assert not missing, f"{edition} PDF lacks these titles (or parts of them): {missing}"


@pytest.mark.parametrize("edition", list(PDFS))
def test_no_unresolved_reference_or_undefined_macro(edition):
    text = _text(edition)
    assert "??" not in text, f"unresolved reference in the {edition} PDF: …{text[max(0, text.find('??') - 80):text.find('??') + 20]}…"
    log = _pdf(edition).with_suffix(".log").read_text(errors="replace")
    for bad in ("Undefined control sequence", "There were undefined references", "Citation `",
                "LaTeX Error"):
        assert bad not in log, f"{edition} PDF: '{bad}' in the LaTeX log"


@pytest.mark.parametrize("edition", list(PDFS))
def test_page_count_is_sane(edition):
    pages = _pages(edition)
    assert PAGES[0] <= pages <= PAGES[1], f"{edition} PDF has {pages} pages"


def test_figures_are_in_the_pdf():
    """Every chapter shows at least one figure (the browser test checks that on the site)."""
    from gradnoise.site.mutation import chapters

    out = subprocess.run(["pdfimages", "-list", str(_pdf("full"))], capture_output=True, text=True, check=True).stdout
    images = len(out.splitlines()) - 2
    assert images >= len(chapters(ROOT)), f"{images} images in the PDF for {len(chapters(ROOT))} chapters"


def test_student_pdf_has_no_solution_text():
    full, student = _text("full"), _text("student")
    phrases = [s for path in _toc_pages() if path.exists() for s in _solutions(path)]
    assert len(phrases) >= 20, f"only {len(phrases)} solutions found in the sources"
    in_full = [p for p in phrases if p in full]
    assert len(in_full) >= 0.8 * len(phrases), (
        f"only {len(in_full)} of {len(phrases)} solution phrases found in the full PDF: the check could not "
        f"tell a leak; missing e.g. {[p for p in phrases if p not in full][:3]}")
    leaked = [p for p in phrases if p in student]
    assert not leaked, f"solution text in the student PDF: {leaked[:5]}"
    assert student.count("Exercise") >= 20, "the student PDF keeps the exercises"


@pytest.mark.parametrize("edition, site", [("full", "_build/html"), ("student", "_build/student/_build/html")])
def test_the_site_offers_its_pdfs(edition, site):
    _pdf(edition)
    page = ROOT / site / "intro.html"
    if not page.exists():
        pytest.fail(f"no {page}: make pdf builds the site again after the PDFs")
    links = re.findall(r'<a class="[^"]*pdf-download[^"]*" href="([^"]+)"', page.read_text())
    offered = sorted(links)
    expected = sorted(pdf_name(e) for e in (["student"] if edition == "student" else list(PDFS)))
    assert offered == expected, f"{site}/intro.html offers {offered}, expected {expected}"
    for link in links:
        target = (page.parent / link).resolve()
        assert target.read_bytes()[:5] == b"%PDF-", f"{link} on the {edition} site is not a PDF"
