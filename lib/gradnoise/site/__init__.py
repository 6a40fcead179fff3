"""Sphinx extension for the book: the claim ledger, build information, and page hygiene.

Enabled in ``_config.yml`` under ``sphinx: extra_extensions: [gradnoise.site]``. It adds

- ``{claims-ledger}``: the table of every catalogued claim (``claims.yml``) with the verdict its chapter
  declares, the one-line corrected or conditioned statement, and a link — generated at build time from
  the catalogue and the chapters' front matter (see :mod:`gradnoise.site.ledger`);
- ``{evidence-table}``: every check every chapter made when it was executed (``gradnoise.evidence``
  records, read from ``$GRADNOISE_EVIDENCE`` at write time, after every chapter has run), grouped by
  chapter and claim, with its worst |z| and its resolution;
- ``{mutation-table}``: per chapter, how many mutations of its predictions its checks caught, and every
  mutation with its outcome (the committed records of :mod:`gradnoise.site.mutation`, with their state:
  a record older than its chapter is shown as stale); the ledger links each verdict to its chapter's row;
- ``{build-info}``: the versions of the tools and the device the build computed on;
- the executed notebook of every chapter in the page's download menu (``.ipynb`` beside ``.md``);
- the student edition (``GRADNOISE_EDITION=student``, see :mod:`gradnoise.site.edition`): no solutions
  in the pages, the notebooks or the sources offered for download;
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

from . import edition as _edition
from . import ledger as _ledger

CATALOGUE = "claims.yml"


def _mutation():
    """:mod:`gradnoise.site.mutation`, imported when first needed (so that ``python -m`` can run it cleanly)."""
    from . import mutation

    return mutation


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


def _doc_link(env, docname: str, text: str | None = None) -> nodes.Node:
    """A link from the current page to ``docname``, resolved by Sphinx for every builder (HTML, LaTeX).

    Without ``text`` the link shows the target's title, mathematics included (see
    :func:`_math_in_link_titles`: a plain ``{doc}`` reference would flatten it to raw TeX).
    """
    from sphinx import addnodes

    if docname not in env.found_docs:
        raise ValueError(f"no document {docname}")
    ref = addnodes.pending_xref("", refdomain="std", reftype="doc", reftarget="/" + docname,
                                refexplicit=text is not None, refwarn=True, refdoc=env.docname)
    ref += nodes.inline(text or "", text or "")
    return ref


class ClaimsLedger(SphinxDirective):
    """Render the claim ledger as a summary line and one table."""

    has_content = False

    def run(self):
        env = self.env
        catalogue = pathlib.Path(env.srcdir) / CATALOGUE
        env.note_dependency(str(catalogue))
        try:
            chapters = _chapters(env)
            for path in chapters.values():
                env.note_dependency(str(path))
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

        headers = ["ID", "What the note claims", "Verdict", "Corrected or conditioned statement", "Chapter",
                   "Mutations caught"]
        table, body = self._table(["claims-ledger"], headers, (8, 32, 10, 28, 14, 8))
        root = pathlib.Path(env.srcdir)
        for r in rows:
            ident = nodes.paragraph()
            ident += nodes.literal(text=r.id)
            verdict = nodes.paragraph()
            verdict += _badge(r.verdict)
            note = nodes.paragraph()
            note.extend(_with_math(r.verdict_note or ("—" if r.verdict == "holds" else "")))
            chapter = nodes.paragraph()
            if r.chapter:
                chapter += _doc_link(self.env, r.chapter)
            else:
                chapter += nodes.emphasis(text="not yet covered")
            power = nodes.paragraph()
            if r.chapter:
                power += _mutation_link(env, root, r.chapter)
            body += self._row([ident, nodes.paragraph(text=r.statement), verdict, note, chapter, power],
                              classes=[f"ledger-{r.verdict or 'none'}"])
        return [summary, table]

    @staticmethod
    def _table(classes, headers, widths):
        """``(table, body)``: a docutils table with a header row; rows go into ``body``."""
        table = nodes.table(classes=classes)
        group = nodes.tgroup(cols=len(headers))
        table += group
        for width in widths:
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        head += ClaimsLedger._row([nodes.paragraph(text=h) for h in headers])
        body = nodes.tbody()
        group += body
        return table, body

    @staticmethod
    def _row(cells, classes=()):
        row = nodes.row(classes=list(classes))
        for content in cells:
            entry = nodes.entry()
            entry += content
            row += entry
        return row


EVIDENCE_DOC = "chapters/evidence"


def _mutation_anchor(name: str) -> str:
    return f"mutations-{name}"


def _mutation_text(root: pathlib.Path, name: str) -> str:
    """``caught/total`` of a chapter's mutation record, with ``(stale)`` or ``none`` where that is so."""
    record = _mutation().read_result(root, name)
    if record is None or not _mutation().list_path(root, name).exists():
        return "none recorded"
    counts = _mutation().summary(record)
    stale = "" if _mutation().state(root, name, record) == "fresh" else " (stale)"
    return f"{counts['caught']}/{counts['total']}{stale}"


class mutation_link(nodes.General, nodes.Inline, nodes.Element):
    """A chapter's mutation count, linked to its row on the evidence page at write time (HTML only: print
    has no row anchors, and the count stands as text)."""


def _mutation_link(env, root: pathlib.Path, docname: str) -> nodes.Node:
    """A chapter's mutation count (see :class:`mutation_link`)."""
    name = pathlib.PurePosixPath(docname).name
    for path in (_mutation().result_path(root, name), _mutation().list_path(root, name)):
        env.note_dependency(str(path))
    return mutation_link("", nodes.Text(_mutation_text(root, name)), anchor=_mutation_anchor(name))


def _resolve_mutation_links(app, doctree, docname):
    for node in list(doctree.findall(mutation_link)):
        text = node.astext()
        if app.builder.format == "html" and EVIDENCE_DOC in app.env.found_docs:
            uri = app.builder.get_relative_uri(docname, EVIDENCE_DOC) + "#" + node["anchor"]
            node.replace_self(nodes.reference("", text, internal=True, refuri=uri))
        else:
            node.replace_self(nodes.Text(text))


class MutationTable(SphinxDirective):
    """The evidence page's record of mutation testing: one row per chapter, then every mutation."""

    has_content = False

    def run(self):
        env = self.env
        root = pathlib.Path(env.srcdir)
        names = _mutation().chapters(root)
        per_chapter, every = [], []
        totals = Counter()
        for name in names:
            for path in (_mutation().result_path(root, name), _mutation().list_path(root, name),
                         root / "chapters" / f"{name}.md"):
                env.note_dependency(str(path))
            record = _mutation().read_result(root, name)
            doc = f"chapters/{name}"
            link = nodes.paragraph()
            link += _doc_link(env, doc, name)
            if record is None or not _mutation().list_path(root, name).exists():
                cells = [link] + [nodes.paragraph(text="—") for _ in range(4)] + [nodes.paragraph(text="none recorded")]
                per_chapter.append((name, cells, "mutations-none"))
                continue
            counts = _mutation().summary(record)
            totals.update(counts)
            fresh = _mutation().state(root, name, record)
            survivors = [row["id"] for row in record["mutations"] if row["outcome"] == "survived"]
            surv = nodes.paragraph()
            surv += nodes.Text(str(counts["survived"]))
            for i, ident in enumerate(survivors):
                surv += nodes.Text(": " if i == 0 else ", ")
                surv += nodes.inline(ident, ident, classes=["mutation-id"])
            cells = [link, nodes.paragraph(text=str(counts["total"])),
                     nodes.paragraph(text=f"{counts['caught']} ({100 * counts['caught'] / max(1, counts['total']):.0f} %)"),
                     surv, nodes.paragraph(text=str(counts["error"] + counts["timeout"])),
                     nodes.paragraph(text=f"{record['recorded'][:10]}, {fresh}")]
            per_chapter.append((name, cells, f"mutations-{fresh}"))
            mutations = {m.id: m for m in _mutation().load(_mutation().list_path(root, name))}
            for row in record["mutations"]:
                m = mutations.get(row["id"])
                how = (f"cell {row['cell']}: {row['message']}" if row["outcome"] == "caught"
                       else "every cell passed; the chapter says why" if row["outcome"] == "survived"
                       else f"{row['error'] or ''} {row['message']}".strip())
                every.append([nodes.paragraph(text=name), nodes.paragraph("", "", nodes.inline(row["id"], row["id"], classes=["mutation-id"])),
                              nodes.paragraph(text=row["kind"]), nodes.paragraph(text=m.why if m else "(no longer listed)"),
                              nodes.paragraph(text=row["outcome"]), nodes.paragraph(text=how)])
        summary = nodes.paragraph()
        summary += nodes.Text(
            f"{totals['total']} mutations of {sum(1 for _, _, c in per_chapter if c != 'mutations-none')} chapters: "
            f"{totals['caught']} caught ({100 * totals['caught'] / max(1, totals['total']):.1f} %), "
            f"{totals['survived']} survived (each named in its chapter, with the reason), "
            f"{totals['error'] + totals['timeout']} broken.")
        headers = ["Chapter", "Mutations", "Caught", "Survived", "Broken", "Recorded"]
        table, body = ClaimsLedger._table(["mutation-table"], headers, (18, 10, 12, 34, 8, 18))
        for name, cells, cls in per_chapter:
            row = ClaimsLedger._row(cells, classes=[cls])
            row["ids"].append(_mutation_anchor(name))
            body += row
        headers = ["Chapter", "Mutation", "Kind", "The nearest wrong alternative", "Outcome", "Caught by"]
        detail, dbody = ClaimsLedger._table(["mutation-detail"], headers, (14, 16, 9, 33, 8, 20))
        for cells in every:
            dbody += ClaimsLedger._row(cells, classes=[f"mutation-{cells[4].astext()}"])
        return [summary, table, nodes.paragraph(text="Every mutation, with the check that caught it:"), detail]


PDFS = {"full": ("_build/latex", "gradnoise-book.pdf"),
        "student": ("_build/student/_build/latex", "gradnoise-book.pdf")}
"""Where ``make pdf`` leaves each edition's PDF (relative to the book's root)."""


def _pdf_editions() -> list[str]:
    """The PDFs a site offers: both on the full edition's, only its own on the student edition's."""
    return ["student"] if _edition.edition() == "student" else list(PDFS)


def pdf_name(edition: str) -> str:
    """The file name of an edition's PDF on the website."""
    if edition not in _edition.EDITIONS:
        raise ValueError(f"edition must be one of {_edition.EDITIONS}, got {edition!r}")
    return "gradnoise-book.pdf" if edition == "full" else f"gradnoise-book-{edition}.pdf"


class PdfDownloads(SphinxDirective):
    """Links to the PDFs of both editions, where ``make pdf`` has built them (a sentence saying how, if not).

    The PDFs are copied into the website's root at ``build-finished``; this page depends on them, so the
    HTML build that ``make pdf`` runs after the LaTeX builds adds the links.
    """

    has_content = False

    def run(self):
        root = pathlib.Path(self.env.srcdir)
        found = {}
        for edition in _pdf_editions():
            folder, name = PDFS[edition]
            path = root / folder / name
            self.env.note_dependency(str(path))
            if path.exists():
                found[edition] = path
        para = nodes.paragraph()
        if not found:
            para += nodes.Text("The book as a PDF (both editions) is built by ")
            para += nodes.literal(text="make pdf")
            para += nodes.Text("; this copy of the site was built without it.")
            return [para]
        if self.env.app.builder.format != "html":
            return []
        depth = self.env.docname.count("/")
        para += nodes.Text("Download the book as a PDF: ")
        for i, (edition, path) in enumerate(found.items()):
            label = "the full edition" if edition == "full" else "the student edition (no solutions)"
            uri = "../" * depth + pdf_name(edition)
            para += nodes.reference("", "", nodes.Text(label), refuri=uri, classes=["pdf-download"])
            para += nodes.Text(f" ({path.stat().st_size / 2**20:.1f} MiB)" + (", " if i < len(found) - 1 else "."))
        return [para]


def _copy_pdfs(app, exception):
    """Put the built PDFs beside the website's pages (see :class:`PdfDownloads`)."""
    if exception is not None or app.builder.format != "html":
        return
    root = pathlib.Path(app.srcdir)
    for edition in _pdf_editions():
        folder, name = PDFS[edition]
        path = root / folder / name
        if path.exists():
            shutil.copy2(path, pathlib.Path(app.outdir) / pdf_name(edition))


PACK_ZIP = ("_build/pack", "gradnoise-course.zip")


class CoursePack(SphinxDirective):
    """A link to the course pack's zip where ``make pack`` (or ``make test``) has built it; a sentence saying
    how, if not. The full edition only: the pack holds the full notebooks too."""

    has_content = False

    def run(self):
        path = pathlib.Path(self.env.srcdir) / PACK_ZIP[0] / PACK_ZIP[1]
        self.env.note_dependency(str(path))
        para = nodes.paragraph()
        if _edition.edition() == "student":
            para += nodes.Text("The course pack (student and full notebooks, the package, the grader) is "
                               "offered on this page in the full edition of the book.")
            return [para]
        if not path.exists():
            para += nodes.Text("The course pack is built by ")
            para += nodes.literal(text="make pack")
            para += nodes.Text("; this copy of the site was built without it.")
            return [para]
        if self.env.app.builder.format != "html":
            return []
        uri = "../" * self.env.docname.count("/") + PACK_ZIP[1]
        para += nodes.Text("Download the course pack: ")
        para += nodes.reference("", "", nodes.literal(text=PACK_ZIP[1]), refuri=uri, classes=["course-pack"])
        para += nodes.Text(f" ({path.stat().st_size / 2**20:.1f} MiB).")
        return [para]


def _copy_pack(app, exception):
    """Put the course pack's zip beside the website's pages (see :class:`CoursePack`)."""
    if exception is not None or app.builder.format != "html" or _edition.edition() == "student":
        return
    path = pathlib.Path(app.srcdir) / PACK_ZIP[0] / PACK_ZIP[1]
    if path.exists():
        shutil.copy2(path, pathlib.Path(app.outdir) / PACK_ZIP[1])


class BuildInfo(SphinxDirective):
    """A definition list of tool versions and the device the chapters were executed on."""

    has_content = False

    def run(self):
        from .. import device

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
    if _edition.edition() == "student":
        import nbformat

        nbformat.write(_edition.strip_notebook(nbformat.read(executed, as_version=4)), target)
    else:
        shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


class evidence_placeholder(nodes.General, nodes.Element):
    """Where the evidence table goes; filled in at ``doctree-resolved``, once every chapter has run."""


class EvidenceTable(SphinxDirective):
    """The evidence page's table (see :func:`_fill_evidence`)."""

    has_content = False

    def run(self):
        return [evidence_placeholder()]


def _fmt(value, kind):
    if value is None:
        return "—"
    if kind in ("exact", "differs"):
        return f"{value:.1e}"
    return f"{value:.2f}" if value < 1000 else f"{value:.3g}"


def _fill_evidence(app, doctree, docname):
    import os

    from .. import evidence

    holders = list(doctree.findall(evidence_placeholder))
    if not holders:
        return
    where = os.environ.get(evidence.ENV_VAR, "").strip()
    records = evidence.load(where) if where and pathlib.Path(where).is_dir() else []
    order = {name: i for i, name in enumerate(_toc_order(app.env))}
    records.sort(key=lambda r: (order.get(f"chapters/{r.chapter}", 10**6), r.chapter, r.claim or "~"))
    out = []
    if not records:
        para = nodes.paragraph()
        para += nodes.emphasis(text="No evidence records: build with GRADNOISE_EVIDENCE set (make book does).")
        out.append(para)
    else:
        kinds = Counter(r.kind for r in records)
        coarse = [r for r in records if r.kind == "agrees" and r.resolution is not None and r.resolution > 0.1]
        summary = nodes.paragraph()
        summary += nodes.Text(
            f"{len(records)} checks in {len({r.chapter for r in records})} chapters: {kinds['agrees']} z-tested "
            f"agreements, {kinds['rejects']} z-tested rejections, {kinds['exact']} exact agreements and "
            f"{kinds['differs']} exact rejections. {len(coarse)} agreements have a resolution coarser than 10 %; "
            "each such chapter says why that is enough.")
        out.append(summary)
        out.append(_evidence_per_chapter(app, docname, records))
        headers = ["Chapter", "Claim", "Check", "Kind", "Entries", "Worst", "Bound", "Resolution"]
        table, body = ClaimsLedger._table(["evidence-table"], headers, (14, 8, 34, 8, 6, 10, 8, 10))
        for r in records:
            chapter = _chapter_cell(app, docname, r.chapter)
            claim = nodes.paragraph()
            if r.claim:
                claim += nodes.literal(text=r.claim)
            resolution = "exact" if r.kind in ("exact", "differs") else (
                f"{100 * r.resolution:.2g} %" if r.kind == "agrees" and r.resolution is not None else "—")
            cells = [chapter, claim, nodes.paragraph(text=r.what), nodes.paragraph(text=r.kind),
                     nodes.paragraph(text=str(r.entries)), nodes.paragraph(text=_fmt(r.worst, r.kind)),
                     nodes.paragraph(text=_fmt(r.bound, r.kind)), nodes.paragraph(text=resolution)]
            body += ClaimsLedger._row(cells, classes=[f"evidence-{r.kind}"])
        out.append(table)
    for holder in holders:
        holder.replace_self(out)


def _chapter_cell(app, docname: str, name: str) -> nodes.paragraph:
    """A table cell naming chapter ``name``, linked to it (write time: every builder can resolve it)."""
    cell = nodes.paragraph()
    target = f"chapters/{name}"
    if target in app.env.found_docs:
        cell += nodes.reference("", name, internal=True, refuri=app.builder.get_relative_uri(docname, target))
    else:
        cell += nodes.Text(name)
    return cell


def _evidence_per_chapter(app, docname, records) -> nodes.table:
    """Per chapter: how many checks, how many distinct predictions they test, and of which kinds."""
    from .. import evidence

    headers = ["Chapter", "Checks", "Distinct predictions", "Agreements", "Rejections", "Exact", "Exact rejections"]
    table, body = ClaimsLedger._table(["evidence-per-chapter"], headers, (22, 10, 16, 13, 13, 13, 13))
    chapters = list(dict.fromkeys(r.chapter for r in records))
    for name in chapters:
        mine = [r for r in records if r.chapter == name]
        kinds = Counter(r.kind for r in mine)
        cell = _chapter_cell(app, docname, name)
        body += ClaimsLedger._row([cell] + [nodes.paragraph(text=str(v)) for v in (
            len(mine), evidence.distinct_predictions(mine), kinds["agrees"], kinds["rejects"], kinds["exact"],
            kinds["differs"])])
    return table


PRINT_TABLES = {"claims-ledger": "footnotesize", "mutation-table": "footnotesize", "mutation-detail": "scriptsize",
                "evidence-table": "scriptsize", "evidence-per-chapter": "footnotesize"}
"""The book's generated tables, and the type size each is printed in."""


def _tables_for_print(app, doctree, docname):
    """In print (LaTeX), the generated tables wrap their text in columns of the given widths and a smaller
    type, so that they fit the page; Sphinx would otherwise set a long table's columns unwrapped."""
    if app.builder.format != "latex":
        return
    for table in list(doctree.findall(nodes.table)):
        size = next((PRINT_TABLES[c] for c in table["classes"] if c in PRINT_TABLES), None)
        if size is None:
            continue
        table["classes"] += ["colwidths-given", "longtable"]
        parent = table.parent
        at = parent.index(table)
        parent.insert(at + 1, nodes.raw("", "\\endgroup\n", format="latex"))
        parent.insert(at, nodes.raw("", f"\\begingroup\\{size}\n", format="latex"))


def _math_in_link_titles(app, doctree, docname):
    """A cross-reference that shows a page's title keeps the title's mathematics as math.

    A ``{doc}`` reference without explicit text takes its target's title as plain text, so a title such
    as "$\\Ortho$'s bias" would show the raw ``\\Ortho``; the link text is replaced by a copy of the
    title's nodes (MathJax typesets them inside the link).
    """
    import posixpath

    from sphinx.util.nodes import clean_astext

    suffix = getattr(app.builder, "out_suffix", ".html")
    for ref in list(doctree.findall(nodes.reference)):
        uri = ref.get("refuri", "")
        if not ref.get("internal") or not uri or "://" in uri:
            continue
        path = uri.split("#", 1)[0]
        if path.startswith("%"):                                   # LaTeX: '%docname'
            target = path[1:]
        elif path.endswith(suffix):
            target = posixpath.normpath(posixpath.join(posixpath.dirname(docname), path[: -len(suffix)]))
        else:
            continue
        title = app.env.titles.get(target)
        if title is None or not any(True for _ in title.findall(nodes.math)):
            continue
        if ref.astext().strip() != clean_astext(title).strip():
            continue
        holder = next((c for c in ref.children if isinstance(c, nodes.inline)), ref)
        holder.children = []
        holder.extend(child.deepcopy() for child in title.children)


def _toc_order(env) -> list[str]:
    from . import toc

    return toc.files(env.srcdir)


def _check_device(app):
    from .. import device

    try:
        device.device()
    except device.DeviceUnavailable as err:
        from sphinx.errors import ConfigError

        raise ConfigError(str(err)) from None


def latex_macros(macros: dict) -> str:
    r"""LaTeX definitions of MathJax's ``tex.macros`` (``name: body`` or ``name: [body, nargs]``).

    The book's macros have one source, ``mathjax3_config`` in ``_config.yml``; the PDF's preamble is
    written from it, so a macro added for the website is defined in print too. Each is defined with
    ``\providecommand`` then ``\renewcommand``, which works whether or not LaTeX already knows the name.
    """
    if macros is not None and not isinstance(macros, dict):
        raise ValueError(f"macros must be a dict (mathjax3_config tex.macros), got {type(macros).__name__}")
    lines = []
    for name, body in (macros or {}).items():
        nargs = 0
        if isinstance(body, (list, tuple)):
            if not body or (len(body) > 1 and (isinstance(body[1], bool) or not isinstance(body[1], int) or body[1] < 0)):
                raise ValueError(f"macros: {name!r}: {body!r} must be [body, number of arguments]")
            body, nargs = body[0], body[1] if len(body) > 1 else 0
        if not isinstance(name, str) or not name.isalpha() or not isinstance(body, str):
            raise ValueError(f"mathjax3_config tex.macros: {name!r}: {body!r} is not a macro LaTeX can take")
        args = f"[{nargs}]" if nargs else ""
        lines.append(rf"\providecommand{{\{name}}}{{}}\renewcommand{{\{name}}}{args}{{{body}}}")
    return "\n".join(lines)


def _latex_from_mathjax(app, config):
    """Append the MathJax macros to the LaTeX preamble (see :func:`latex_macros`)."""
    macros = ((config.mathjax3_config or {}).get("tex") or {}).get("macros") or {}
    elements = dict(config.latex_elements or {})
    elements["preamble"] = elements.get("preamble", "") + "\n% from mathjax3_config (gradnoise.site)\n" + latex_macros(macros) + "\n"
    config.latex_elements = elements


def setup(app):
    _check_device(app)
    app.connect("config-inited", _latex_from_mathjax)
    _edition.edition()                                   # a wrong GRADNOISE_EDITION stops here, in one line
    app.connect("doctree-read", _edition.remove_solution_nodes)
    app.connect("build-finished", _edition.strip_downloads)
    app.add_node(evidence_placeholder)
    app.add_directive("evidence-table", EvidenceTable)
    app.connect("doctree-resolved", _fill_evidence)
    app.connect("doctree-resolved", _math_in_link_titles)
    app.connect("doctree-resolved", _tables_for_print, priority=900)
    app.add_node(mutation_link)
    app.connect("doctree-resolved", _resolve_mutation_links)
    app.add_directive("claims-ledger", ClaimsLedger)
    app.add_directive("mutation-table", MutationTable)
    app.add_directive("build-info", BuildInfo)
    app.add_directive("pdf-downloads", PdfDownloads)
    app.connect("build-finished", _copy_pdfs)
    app.add_directive("course-pack", CoursePack)
    app.connect("build-finished", _copy_pack)
    app.connect("html-page-context", _dedupe_scripts)
    app.connect("html-page-context", _offer_notebook_download, priority=450)
    # Chapter titles with mathematics appear in the navigation of every page, so every page needs
    # MathJax (Sphinx loads it only on pages whose body holds an equation).
    app.set_html_assets_policy("always")
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
