"""The student edition: the same book with every exercise's solution left out.

``GRADNOISE_EDITION=student`` (``make student``) builds the site with the solutions — the text and the
code between ``{solution-start}`` and ``{solution-end}`` — absent from the pages, from the downloadable
executed notebooks and from the downloadable Markdown sources. The chapters are executed as in the full
edition (from the same cache: the solutions run, so they are still tested) and stripped afterwards, so a
student edition costs no second execution. The default edition keeps the solutions, folded.
"""
from __future__ import annotations

import os
import pathlib
import re

ENV_VAR = "GRADNOISE_EDITION"
EDITIONS = ("full", "student")

_START = re.compile(r"^(`{3,}|:{3,})\{solution-start\}")
# An exercise's answer cell holds its solution between nbgrader's markers; the student edition (and the
# course pack, through nbgrader's own ClearSolutions) replaces that region by STUB.
BEGIN_ANSWER, END_ANSWER = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "answer = ...  # your answer"
_END = re.compile(r"^(`{3,}|:{3,})\{solution-end\}")


def edition() -> str:
    """``"full"`` (default) or ``"student"``, from ``GRADNOISE_EDITION``."""
    value = os.environ.get(ENV_VAR, "").strip() or "full"
    if value not in EDITIONS:
        raise ValueError(f"{ENV_VAR} must be one of {EDITIONS}, got {value!r}")
    return value


def strip_solutions(text: str) -> str:
    """Markdown ``text`` with every gated solution removed: from the ``{solution-start}`` fence through the
    fence that closes the ``{solution-end}`` directive. An unclosed solution is an error."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    out, lines, i = [], text.splitlines(keepends=True), 0
    while i < len(lines):
        start = _START.match(lines[i])
        if not start:
            out.append(lines[i])
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not _END.match(lines[j]):
            j += 1
        if j == len(lines):
            raise ValueError(f"a {{solution-start}} on line {i + 1} has no {{solution-end}}")
        fence = _END.match(lines[j]).group(1)
        k = j + 1
        while k < len(lines) and lines[k].strip() != fence:   # the end directive's closing fence
            k += 1
        if k == len(lines):
            raise ValueError(f"the {{solution-end}} on line {j + 1} has no closing {fence} fence "
                             "(the rest of the page would be dropped)")
        i = k + 1
    return stub_answers("".join(out))


def stub_answers(text: str) -> str:
    """``text`` with every region from a ``### BEGIN SOLUTION`` line through its ``### END SOLUTION`` line
    replaced by :data:`STUB` (kept at the region's indentation). An unclosed region is an error."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    out, inside = [], None
    for n, line in enumerate(text.splitlines(keepends=True), 1):
        if inside is None and line.strip() == BEGIN_ANSWER:
            inside, indent = n, line[: len(line) - len(line.lstrip())]
        elif inside is not None:
            if line.strip() == END_ANSWER:         # the stub ends as the region's last line did
                out.append(indent + STUB + line[len(line.rstrip("\r\n")):])
                inside = None
        else:
            out.append(line)
    if inside is not None:
        raise ValueError(f"the {BEGIN_ANSWER} on line {inside} has no {END_ANSWER}")
    return "".join(out)


def strip_notebook(nb, stub: bool = True):
    """An nbformat notebook with its gated solutions removed (cells, and parts of Markdown cells), and,
    with ``stub`` (the student edition), each answer cell's solution replaced by :data:`STUB`."""
    if not hasattr(nb, "cells") or not isinstance(nb.cells, list):
        raise ValueError(f"nb must be an nbformat notebook, got {type(nb).__name__}")
    from .. import checks

    stub = checks.flag(stub, "stub")
    cells, inside = [], False
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            if not inside:
                if cell.cell_type == "code":
                    source = cell.source if isinstance(cell.source, str) else "".join(cell.source)
                    if stub and BEGIN_ANSWER in source:
                        cell.source = stub_answers(source)
                        cell.outputs = []
                cells.append(cell)
            continue
        text = cell.source if isinstance(cell.source, str) else "".join(cell.source)
        kept, state = [], inside
        for line in text.splitlines(keepends=True):
            if not state and _START.match(line):
                state = True
                closing = None
                continue
            if state:
                if closing is None and _END.match(line):
                    closing = _END.match(line).group(1)
                    continue
                if closing is not None and line.strip() == closing:
                    state, closing = False, None
                continue
            kept.append(line)
        inside = state
        if "".join(kept).strip():
            cell.source = "".join(kept)
            cells.append(cell)
    if inside:
        raise ValueError("a {solution-start} has no {solution-end}")
    nb.cells = cells
    return nb


def remove_solution_nodes(app, doctree) -> None:
    """``doctree-read``: drop sphinx-exercise's solution nodes from the page (student edition)."""
    if edition() != "student":
        return
    from sphinx_exercise import nodes as ex

    kinds = (ex.solution_node, ex.solution_start_node, ex.solution_end_node)
    for node in list(doctree.findall(lambda n: isinstance(n, kinds))):
        node.parent.remove(node)
    from docutils import nodes

    for node in list(doctree.findall(nodes.literal_block)):      # the answer cells' code
        if BEGIN_ANSWER in node.astext():
            node.replace_self(nodes.literal_block(STUB, STUB, **{k: v for k, v in node.attributes.items()
                                                                 if k in ("language", "classes")}))


def strip_downloads(app, exception) -> None:
    """``build-finished``: strip the solutions from the Markdown sources offered for download."""
    if exception is not None or edition() != "student":
        return
    sources = pathlib.Path(app.outdir) / "_sources"
    for path in sources.rglob("*.md"):
        path.write_text(strip_solutions(path.read_text(encoding="utf-8")), encoding="utf-8")
