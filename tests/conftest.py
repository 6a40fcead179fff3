"""Make every chapter of ``_toc.yml`` an nbval test.

At start-up the MyST Markdown chapters listed in ``_toc.yml`` are converted with jupytext into
``tests/_notebooks/*.ipynb`` (git-ignored, rewritten on every run, no stored outputs), which
``pytest --nbval-lax`` then collects: a chapter passes when none of its cells raises, so the chapter's
own assertions are the test. A chapter added to ``_toc.yml`` is tested with no further wiring.
"""
from __future__ import annotations

import pathlib
import shutil

import jupytext
import nbformat
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = pathlib.Path(__file__).resolve().parent / "_notebooks"


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


def pytest_configure(config):
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    for path in chapter_sources():
        notebook = jupytext.read(path)
        nbformat.write(notebook, OUT / f"{path.stem}.ipynb")
