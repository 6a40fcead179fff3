"""Sphinx extension for the book: the claim ledger, build information, and page hygiene.

Enabled in ``_config.yml`` under ``sphinx: extra_extensions: [gradnoise.book]``. It adds

- ``{claims-ledger}``: the table of every catalogued claim (``claims.yml``) with the verdict its chapter
  declares, the one-line corrected or conditioned statement, and a link — generated at build time from
  the catalogue and the chapters' front matter (see :mod:`gradnoise.ledger`);
- ``{build-info}``: the versions of the tools and the device the build computed on;
- the executed notebook of every chapter in the page's download menu (``.ipynb`` beside ``.md``);
- a clean-up of a script that sphinx-thebe registers once per read and Sphinx then writes twice into
  every page (a ``const`` declared twice is a console error).
"""
from __future__ import annotations

import importlib.metadata
import pathlib
import shutil
from collections import Counter

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

from . import ledger as _ledger

CATALOGUE = "claims.yml"


def _chapters(env) -> dict[str, pathlib.Path]:
    found = {}
    for docname in sorted(env.found_docs):
        path = pathlib.Path(env.doc2path(docname))
        if path.suffix == ".md" and "claims" in _ledger.front_matter(path):
            found[docname] = path
    return found


def _badge(verdict: str | None) -> nodes.inline:
    word = verdict or "not yet covered"
    return nodes.inline(word, word, classes=["verdict-badge", f"verdict-{(verdict or 'none')}"])


def _with_math(text: str) -> list[nodes.Node]:
    """Text with ``$...$`` segments turned into inline math nodes (MathJax typesets them)."""
    parts = text.split("$")
    if len(parts) % 2 == 0:  # unbalanced dollars: keep the text as it is
        return [nodes.Text(text)]
    return [nodes.math(p, p) if i % 2 else nodes.Text(p) for i, p in enumerate(parts) if p]


def _doc_link(env, docname: str, text: str) -> nodes.reference:
    """A link from the current page to ``docname`` whose text may hold ``$...$`` mathematics.

    (A ``:doc:`` cross-reference would flatten the title's math nodes to raw TeX.)
    """
    if docname not in env.found_docs:
        raise ValueError(f"no document {docname}")
    ref = nodes.reference("", "", internal=True, refuri=env.app.builder.get_relative_uri(env.docname, docname))
    ref.extend(_with_math(text))
    return ref


class ClaimsLedger(SphinxDirective):
    """Render the claim ledger as a summary line and one table."""

    has_content = False

    def run(self):
        env = self.env
        catalogue = pathlib.Path(env.srcdir) / CATALOGUE
        chapters = _chapters(env)
        env.note_dependency(str(catalogue))
        for path in chapters.values():
            env.note_dependency(str(path))
        try:
            rows = _ledger.ledger(catalogue, chapters)
        except ValueError as err:
            raise self.error(f"claims ledger: {err}") from None

        counts = Counter(r.verdict or "not yet covered" for r in rows)
        summary = nodes.paragraph()
        summary += nodes.Text(f"{len(rows)} catalogued claims: ")
        for i, word in enumerate(["holds", "conditional", "wrong", "not yet covered"]):
            summary += nodes.strong(text=str(counts.get(word, 0)))
            summary += nodes.Text(" ")
            summary += _badge(None if word == "not yet covered" else word)
            summary += nodes.Text(", " if i < 3 else ".")

        headers = ["ID", "What the note claims", "Verdict", "Corrected or conditioned statement", "Chapter"]
        table = nodes.table(classes=["claims-ledger"])
        group = nodes.tgroup(cols=len(headers))
        table += group
        for width in (8, 36, 10, 30, 16):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        head += self._row([nodes.paragraph(text=h) for h in headers])
        body = nodes.tbody()
        group += body
        for r in rows:
            ident = nodes.paragraph()
            ident += nodes.literal(text=r.id)
            verdict = nodes.paragraph()
            verdict += _badge(r.verdict)
            note = nodes.paragraph()
            note.extend(_with_math(r.verdict_note or ("—" if r.verdict == "holds" else "")))
            chapter = nodes.paragraph()
            if r.chapter:
                chapter += _doc_link(self.env, r.chapter, r.title)
            else:
                chapter += nodes.emphasis(text="not yet covered")
            body += self._row([ident, nodes.paragraph(text=r.statement), verdict, note, chapter],
                              classes=[f"ledger-{r.verdict or 'none'}"])
        return [summary, table]

    @staticmethod
    def _row(cells, classes=()):
        row = nodes.row(classes=list(classes))
        for content in cells:
            entry = nodes.entry()
            entry += content
            row += entry
        return row


class BuildInfo(SphinxDirective):
    """A definition list of tool versions and the device the chapters were executed on."""

    has_content = False

    def run(self):
        from . import device

        items = [("device", device.describe())]
        for dist in ("torch", "sympy", "jupyter-book", "myst-nb", "sphinx", "matplotlib", "jupytext", "nbval"):
            try:
                items.append((dist, importlib.metadata.version(dist)))
            except importlib.metadata.PackageNotFoundError:
                items.append((dist, "not installed"))
        table = nodes.bullet_list()
        for name, value in items:
            para = nodes.paragraph()
            para += nodes.strong(text=f"{name}: ")
            para += nodes.literal(text=value)
            table += nodes.list_item("", para)
        return [table]


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        # sphinx-thebe's inline script arrives once with filename None and once with '': same script.
        key = (getattr(js, "filename", js) or "", getattr(js, "priority", 0),
               tuple(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def _offer_notebook_download(app, pagename, templatename, context, doctree):
    """Put the executed notebook of a MyST chapter beside its source, for the download button.

    sphinx-book-theme offers ``.ipynb`` only when a launch service (Binder, ...) is configured; the book
    has none, so this does the same copy itself (before the theme builds its buttons, priority 501).
    """
    if not context.get("sourcename", "").endswith((".md", ".md.txt")) or context.get("ipynb_source"):
        return
    executed = pathlib.Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.exists():
        return
    target = pathlib.Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    app.add_directive("claims-ledger", ClaimsLedger)
    app.add_directive("build-info", BuildInfo)
    app.connect("html-page-context", _dedupe_scripts)
    app.connect("html-page-context", _offer_notebook_download, priority=450)
    # Chapter titles with mathematics appear in the navigation of every page, so every page needs
    # MathJax (Sphinx loads it only on pages whose body holds an equation).
    app.set_html_assets_policy("always")
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
