"""The built website in a real browser: every page of ``_toc.yml`` in headless Chromium.

Needs ``make book`` first (``_build/html``) and the Debian packages ``chromium`` and
``chromium-driver``. Without the browser the tests are skipped, unless ``CI=true``, where they fail.
Each page is loaded once; the checks of ``site_check.py`` then report, per page:

* console errors; MathJax typesetting (no raw TeX left); images (and a figure on each chapter);
  tracebacks and warnings in cell outputs; internal links and anchors; requests to other hosts.

``test_checks_catch_broken_fixture`` runs the same checks on ``tests/site_fixtures/``: each broken
page names, in ``<meta name="site-check-expect">``, exactly the checks it must fail; the good pages
must pass all of them. Screenshots of the ledger and the first chapter go to ``_build/screenshots/``.
Set ``SITE_CHECK_BOOK`` to test another book folder than this repository.

Both editions are tested: in the default edition every chapter has its exercise and a folded solution;
in the student edition (``make student``, ``_build/student``) every chapter has its exercise and no
solution — not on the page, not in the downloadable notebook, not in the downloadable source.
"""
from __future__ import annotations

import os
import pathlib

import pytest

import site_check

HERE = pathlib.Path(__file__).resolve().parent
BOOK = pathlib.Path(os.environ.get("SITE_CHECK_BOOK", HERE.parent)).resolve()
HTML = BOOK / "_build" / "html"
STUDENT_HTML = BOOK / "_build" / "student" / "_build" / "html"     # make student
SCREENSHOTS = BOOK / "_build" / "screenshots"
FIXTURES = HERE / "site_fixtures"

PAGES = site_check.toc_entries(BOOK / "_toc.yml")
CHAPTERS = [entry for entry in PAGES if site_check.is_chapter(BOOK, entry)]
# Screenshots: the ledger (the first toc file whose name holds "ledger") and the first chapter.
LEDGER = [entry for entry in PAGES if "ledger" in entry][:1]
SCREENSHOT_PAGES = list(dict.fromkeys(LEDGER + CHAPTERS[:1]))
FIXTURE_PAGES = sorted(path.name for path in FIXTURES.glob("*.html"))


def report(problems: list[str], what: str) -> None:
    if problems:
        print("\n".join(problems))
        pytest.fail(f"{len(problems)} problem(s) with {what}:\n  " + "\n  ".join(problems),
                    pytrace=False)


@pytest.fixture(scope="session")
def browser():
    try:
        driver = site_check.start_browser()
    except site_check.BrowserMissing as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"headless Chromium not found ({exc}): "
                        "apt-get install chromium chromium-driver (Debian packages)", pytrace=False)
        pytest.skip("headless Chromium not found: apt-get install chromium chromium-driver")
    yield driver
    site_check.stop_browser(driver)


def _served(root, target):
    """Serve a built site for the session; a missing build fails with the make target that builds it."""
    if not (root / "index.html").exists():
        pytest.fail(f"{root / 'index.html'} is missing: run `make {target}` first", pytrace=False)
    with site_check.serve(root) as url:
        yield url


@pytest.fixture(scope="session")
def site_url():
    yield from _served(HTML, "book")


@pytest.fixture(scope="session")
def links():
    return site_check.LinkChecker()


@pytest.fixture(scope="session", params=PAGES, ids=PAGES)
def page(request, browser, site_url):
    """One visit per page of _toc.yml (session scope: pytest groups the tests of a page together)."""
    entry = request.param
    if not (HTML / f"{entry}.html").exists():
        pytest.fail(f"{entry}.html is not in {HTML}: is the build complete? (`make book`)",
                    pytrace=False)
    shot = SCREENSHOTS / f"{pathlib.PurePosixPath(entry).name}.png"
    return site_check.visit(browser, f"{site_url}{entry}.html", name=entry,
                             screenshot_to=shot if entry in SCREENSHOT_PAGES else None)


def test_no_console_errors(page):
    report(site_check.check_console(page), f"the browser console of {page.name}")


def test_math_typeset(page):
    report(site_check.check_math(page), f"the mathematics of {page.name}")


def test_images_loaded(page):
    report(site_check.check_images(page, require_figure=page.name in CHAPTERS),
           f"the images of {page.name}")


def test_outputs_clean(page):
    report(site_check.check_outputs(page), f"the cell outputs of {page.name}")


def test_internal_links(page, links):
    report(site_check.check_links(page, links), f"the links of {page.name}")


def test_no_external_requests(page):
    report(site_check.check_external(page), f"the requests of {page.name}")


def test_full_edition_folds_solutions(page):
    if page.name not in CHAPTERS:
        pytest.skip("not a chapter")
    assert page.dom["exercises"] >= 1, f"{page.name} shows no exercise"
    assert page.dom["solutions"], f"{page.name} shows no solution"
    unfolded = [c for c in page.dom["solutions"] if "dropdown" not in c.split()]
    assert not unfolded, f"{page.name}: solutions not folded: {unfolded}"


@pytest.fixture(scope="session")
def student_url():
    yield from _served(STUDENT_HTML, "student")


@pytest.mark.parametrize("entry", CHAPTERS)
def test_student_edition_has_no_solutions(entry, browser, student_url, links):
    page = site_check.visit(browser, f"{student_url}{entry}.html", name=f"student:{entry}")
    problems = [f"{check}: {p}" for check, found in site_check.run_checks(page, links, require_figure=True).items()
                for p in found]
    report(problems, f"the student edition of {entry}")
    assert page.dom["exercises"] >= 1, f"student {entry} shows no exercise"
    assert not page.dom["solutions"], f"student {entry} shows {len(page.dom['solutions'])} solution(s)"
    assert "Solution to" not in page.dom["fullText"], f"student {entry} still says 'Solution to'"
    for suffix in (".ipynb", ".md"):
        download = STUDENT_HTML / "_sources" / f"{entry}{suffix}"
        assert download.exists(), f"{download} is not offered"
        assert "solution-start" not in download.read_text(), f"{download} still holds a solution"


@pytest.mark.parametrize("page", SCREENSHOT_PAGES, ids=SCREENSHOT_PAGES, indirect=True)
def test_screenshot_written(page):
    path = SCREENSHOTS / f"{pathlib.PurePosixPath(page.name).name}.png"
    assert path.stat().st_size > 1000, f"{path} is empty"


# --------------------------------------------------------------------------------------------------
# Every check must be able to fail: the same functions on deliberately broken pages
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def fixtures_url():
    with site_check.serve(FIXTURES) as url:
        yield url


def test_every_check_has_a_broken_fixture():
    expected = {name: site_check.fixture_expectation(FIXTURES / name) for name in FIXTURE_PAGES}
    assert any(not checks for checks in expected.values()), "no good fixture page"
    covered = set().union(*expected.values())
    missing = set(site_check.CHECK_NAMES) - covered
    assert not missing, f"no broken fixture page fails the checks {sorted(missing)}"


@pytest.mark.parametrize("name", FIXTURE_PAGES)
def test_checks_catch_broken_fixture(name, browser, fixtures_url, links):
    expected = site_check.fixture_expectation(FIXTURES / name)
    # A short MathJax time-out: mathjax_hang.html must time out, and nothing else waits that long.
    visited = site_check.visit(browser, fixtures_url + name, name=name, mathjax_timeout=3)
    results = site_check.run_checks(visited, links, require_figure=True)
    failing = {check for check, problems in results.items() if problems}
    details = "\n".join(f"  {check}: {problem}" for check, problems in results.items()
                        for problem in problems)
    print("\n" + details if details else "")
    assert failing == expected, (f"{name}: expected the checks {sorted(expected)} to fail, "
                                 f"got {sorted(failing)}\n{details}")
