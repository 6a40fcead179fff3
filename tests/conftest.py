"""Make every chapter of ``_toc.yml`` an nbval test, and hand each passing chapter to the book's cache.

At start-up the MyST Markdown chapters listed in ``_toc.yml`` are converted with jupytext into
``tests/_notebooks/<session>/*.ipynb`` (git-ignored; one directory per pytest session, so two sessions
can run at once; removed when the session ends), which ``pytest --nbval-lax`` then collects: a chapter
passes when none of its cells raises, so the chapter's own assertions are the test.

**One execution per chapter.** nbval keeps each cell's outputs (``item.test_outputs``). When every cell
of a chapter has passed, the chapter with those outputs is stored in the book's execution cache
(jupyter-cache, ``_build/.jupyter_cache``, the store MyST-NB's ``execute_notebooks: cache`` reads), keyed
exactly as MyST-NB keys it: by the code cells and the kernelspec — when ``GRADNOISE_CACHE`` names that
cache (``make test`` sets it; ``make test-seeds`` does not, so other seeds never reach the site). ``make
test`` runs this session first,
so the book build that follows takes every chapter from the cache instead of executing it again
(``make book`` on its own still executes whatever the cache lacks).

Before anything runs, the device that ``GRADNOISE_DEVICE`` names is checked once: a wrong value stops
the session with one line instead of a traceback per chapter.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import uuid

import jupytext
import nbformat
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = pathlib.Path(__file__).resolve().parent / "_notebooks"
CACHE_VAR = "GRADNOISE_CACHE"   # make test sets it to _build/.jupyter_cache; unset, nothing is handed over


def toc_files(toc_path: pathlib.Path = ROOT / "_toc.yml") -> list[str]:
    """Every ``file:`` (and the ``root:``) of a Jupyter Book table of contents, in order."""
    toc = yaml.safe_load(toc_path.read_text())
    found = [toc["root"]] if "root" in toc else []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return found


def chapter_sources() -> list[pathlib.Path]:
    """The MyST notebooks (Markdown files with a kernelspec) that ``_toc.yml`` lists."""
    paths = []
    for entry in toc_files():
        path = (ROOT / entry).with_suffix(".md")
        if path.exists() and "kernelspec:" in path.read_text().split("\n---", 1)[0]:
            paths.append(path)
    return paths


def _session_dir(config) -> pathlib.Path:
    return config._gradnoise_notebooks


def pytest_configure(config):
    from gradnoise import device

    config.addinivalue_line("markers", "evidence: reads the evidence the chapters recorded (runs last)")
    try:
        device.device()
    except device.DeviceUnavailable as err:
        raise pytest.UsageError(str(err)) from None
    here = NOTEBOOKS / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    here.mkdir(parents=True)
    config._gradnoise_notebooks = here
    config._gradnoise_sources = {}
    config._gradnoise_outputs = {}
    if not config.getoption("nbval_lax", default=False):
        return
    for path in chapter_sources():
        target = here / f"{path.stem}.ipynb"
        nbformat.write(jupytext.read(path), target)
        config._gradnoise_sources[str(target)] = path


def pytest_ignore_collect(collection_path, config):
    """Collect this session's notebooks only (another session may be writing its own beside them)."""
    mine = getattr(config, "_gradnoise_notebooks", None)
    path = pathlib.Path(collection_path)
    if mine is None or NOTEBOOKS not in path.parents and path != NOTEBOOKS:
        return None
    if path == NOTEBOOKS or path == mine or mine in path.parents:
        return None
    return True


def pytest_collection_modifyitems(session, config, items):
    """The evidence tests read what the chapters recorded: run them after every chapter."""
    items.sort(key=lambda item: item.get_closest_marker("evidence") is not None)


def pytest_unconfigure(config):
    here = getattr(config, "_gradnoise_notebooks", None)
    if here is not None:
        shutil.rmtree(here, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    fspath = str(getattr(item, "fspath", ""))
    state = item.config._gradnoise_outputs.get(fspath)
    if fspath not in item.config._gradnoise_sources or not hasattr(item, "cell"):
        return
    if state is None:
        state = item.config._gradnoise_outputs[fspath] = {"outputs": [], "ok": True, "seconds": 0.0}
    state["seconds"] += report.duration
    if report.when == "call":
        state["outputs"].append(list(item.test_outputs or []))
    if report.failed or report.skipped:
        state["ok"] = False


def pytest_sessionfinish(session, exitstatus):
    """Store every chapter whose cells all passed, with nbval's outputs, in the book's execution cache."""
    config = session.config
    target = os.environ.get(CACHE_VAR, "").strip()
    if not target or not getattr(config, "_gradnoise_outputs", None):
        return
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(target)
    for fspath, state in config._gradnoise_outputs.items():
        source = config._gradnoise_sources[fspath]
        notebook = jupytext.read(source)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        if not state["ok"] or len(state["outputs"]) != len(code):
            continue
        for count, (cell, outputs) in enumerate(zip(code, state["outputs"]), 1):
            cell.outputs = [nbformat.from_dict(dict(o)) for o in outputs]
            cell.execution_count = count
            for out in cell.outputs:
                if out.get("output_type") == "execute_result":
                    out["execution_count"] = count
        cache.cache_notebook_bundle(
            CacheBundleIn(notebook, str(source), data={"execution_seconds": state["seconds"],
                                                        "executed_by": "nbval"}),
            check_validity=False, overwrite=True)
