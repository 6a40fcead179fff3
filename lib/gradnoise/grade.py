"""Grade a class: every submitted notebook run in a fresh kernel, every exercise check scored.

``python -m gradnoise.grade SUBMISSIONS --pack PACK --out OUT [--timeout SECONDS]``

``SUBMISSIONS/<student>/<chapter>.ipynb`` are the students' notebooks (student edition of the course pack
at ``PACK``). The grading is nbgrader's: the pack's full notebooks become nbgrader's source (solutions
left out, answers kept), ``generate_assignment`` records the check cells and their checksums, and
``autograde`` runs each submission in a fresh kernel with a time limit per cell, restores any check cell
a student edited, and scores each check cell (one point when it runs without error). Around it this
module adds what a class needs:

- a time limit per notebook (the autograder's process is stopped), and a notebook that does not run, runs
  too long, or whose check cells were edited or deleted gets a clear status, never a crash of the grader
  and never a silent full score (a deleted check scores 0; an edited one is restored, rerun and flagged);
- the one-line reason for each lost point: the check's own message (``off by a constant factor ...``),
  or the error of the answer cell when that is what stopped it (``the answer cell timed out``);
- ``OUT/grades.csv`` and ``OUT/grades.html``: students × exercises, with status, total and reasons.
"""
from __future__ import annotations

import argparse
import csv
import html
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import checks

__all__ = ["grade", "main", "STATUSES"]

STATUSES = ("graded", "tampered", "timed out", "did not run", "missing")


def _reason_from_outputs(cell) -> str | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            name, value = out.get("ename", "Error"), str(out.get("evalue", "")).strip()
            if name == "WrongAnswer":
                return value.splitlines()[0] if value else "wrong answer"
            if name in ("CellTimeoutError", "TimeoutError", "KeyboardInterrupt"):
                return "timed out"
            return f"{name}: {value.splitlines()[0] if value else ''}".strip().rstrip(":")
    return None


def _inspect(submitted, release) -> tuple[list[str], list[str]]:
    """Check cells of ``release`` that ``submitted`` lacks, and those whose source it changed (nbgrader's
    checksum of the cell)."""
    from nbgrader.utils import compute_checksum

    def checks_of(nb):
        return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells
                if c.get("metadata", {}).get("nbgrader", {}).get("locked")}

    mine, ref = checks_of(submitted), checks_of(release)
    removed = [gid for gid in ref if gid not in mine]
    edited = [gid for gid in ref if gid in mine and compute_checksum(mine[gid]) != ref[gid].metadata["nbgrader"]["checksum"]]
    return removed, edited


def grade(submissions, pack, out, timeout: int = 600) -> list[dict]:
    """Grade ``submissions/<student>/<chapter>.ipynb`` against the course pack at ``pack``; write
    ``out/grades.csv`` and ``out/grades.html``; return one row per (student, chapter)."""
    import nbformat

    from .site import pack as _pack

    submissions = checks.path(submissions, "submissions", "dir").resolve()
    pack = checks.path(pack, "pack", "dir").resolve()
    timeout = checks.count(timeout, "timeout", maximum=86400)
    out = checks.path(out, "out", exists=False).resolve()
    if out.exists() and not out.is_dir() or not out.parent.is_dir():
        raise ValueError(f"out must be a folder (or a new one in an existing folder), got {out}")
    full = {p.stem: p for p in sorted((pack / "full").glob("*.ipynb"))}
    if not full:
        raise ValueError(f"{pack} is not a course pack (no full/*.ipynb)")
    students = sorted(p.name for p in submissions.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not students:
        raise ValueError(f"{submissions} holds no student folders (<student>/<chapter>.ipynb)")
    handed = {n for s in students for n in (p.stem for p in (submissions / s).glob("*.ipynb"))}
    unknown = sorted(handed - set(full))
    names = sorted(handed & set(full))
    if not handed:
        raise ValueError(f"submissions holds no notebooks (<student>/<chapter>.ipynb) in {submissions}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp) / "course"
        sources = {n: _pack._source_notebook(nbformat.read(full[n], as_version=4)) for n in names}
        released = _pack._generate_student(sources, course, timeout)
        for name in names:
            release = nbformat.read(released[name], as_version=4)
            exercises = [c.metadata["nbgrader"]["grade_id"] for c in release.cells
                         if c.get("metadata", {}).get("nbgrader", {}).get("grade")]
            staged = {s: _stage(course, submissions / s / f"{name}.ipynb", s, name, release, exercises)
                      for s in students}
            ready = [s for s, row in staged.items() if row.get("staged")]
            if len(ready) > 1:          # one autograder run for the class, each notebook still in its own kernel
                try:
                    _pack._nbgrader(course, "autograde", name, "--create", "--force",
                                    timeout=(timeout + 120) * len(ready))
                except subprocess.TimeoutExpired:
                    pass                # the notebooks it did not reach are graded one by one below
            for s in students:
                rows.append(_finish(course, staged[s], release, exercises, timeout))
    for student in students:
        for name in unknown:
            if (submissions / student / f"{name}.ipynb").exists():
                rows.append({"student": student, "chapter": name, "status": "did not run", "note":
                             "not a chapter of this course pack", "scores": {}, "reasons": {}, "max": 0})
    _write(rows, out)
    return rows


def _stage(course: Path, path: Path, student: str, name: str, release, exercises) -> dict:
    """Read and check one submission and put it where nbgrader's autograder finds it; the row so far."""
    import nbformat

    row = {"student": student, "chapter": name, "status": "graded", "note": "", "max": len(exercises),
           "scores": {e: 0.0 for e in exercises}, "reasons": {e: "" for e in exercises}, "removed": []}
    if not path.exists():
        row.update(status="missing", note="no notebook handed in")
        row["reasons"] = {e: "not handed in" for e in exercises}
        return row
    try:
        submitted = nbformat.read(path, as_version=4)
        nbformat.validate(submitted)
    except Exception as e:                      # not a notebook at all: JSON, schema
        row.update(status="did not run", note=f"not a readable notebook ({type(e).__name__})")
        row["reasons"] = {e_: "notebook unreadable" for e_ in exercises}
        return row
    removed, edited = _inspect(submitted, release)
    dest = course / "submitted" / student / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    notes = []
    if removed:                                 # nbgrader cannot grade a notebook without its grade cells
        notes.append(f"check cells deleted: {', '.join(removed)} (put back to grade the rest; they score 0)")
        submitted = _restore(submitted, release)
    if edited:
        notes.append(f"check cells edited: {', '.join(edited)} (graded with the original checks)")
    if notes:
        row.update(status="tampered", note="; ".join(notes))
    nbformat.write(submitted, dest / f"{name}.ipynb")
    row.update(staged=True, removed=removed)
    return row


def _finish(course: Path, row: dict, release, exercises, timeout) -> dict:
    """Autograde a staged submission if the class run did not (one process, with a time limit), then read
    its scores and the reason for each lost point."""
    import nbformat

    from .site import pack as _pack

    staged, removed = row.pop("staged", False), row.pop("removed", [])
    if not staged:
        return row
    student, name = row["student"], row["chapter"]
    graded = course / "autograded" / student / name / f"{name}.ipynb"
    if not graded.exists():
        try:
            done = _pack._nbgrader(course, "autograde", name, "--student", student, "--create", "--force",
                                   timeout=timeout + 120)
        except subprocess.TimeoutExpired:
            row.update(status="timed out", note=f"stopped after {timeout + 120} s")
            row["reasons"] = {e: "the notebook ran too long" for e in exercises}
            return row
        if done.returncode != 0 or not graded.exists():
            tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or [""]
            row.update(status="did not run", note=f"the autograder failed: {tail[0][:200]}")
            row["reasons"] = {e: "not graded" for e in exercises}
            return row
    result = nbformat.read(graded, as_version=4)
    cells = {c.metadata["nbgrader"]["grade_id"]: c for c in result.cells if "nbgrader" in c.get("metadata", {})}
    timed_out = any(_reason_from_outputs(c) == "timed out" for c in result.cells if c.cell_type == "code")
    if timed_out and row["status"] == "graded":
        row.update(status="timed out", note=f"a cell ran longer than {timeout} s and was stopped")
    order = [c for c in result.cells if c.cell_type == "code"]
    for e in exercises:
        cell = cells.get(e)
        reason = _reason_from_outputs(cell) if cell is not None else "check cell missing"
        if e in removed:
            reason = "check cell deleted"
        if reason is None:
            row["scores"][e] = 1.0
            continue
        if reason.startswith("NameError") and cell is not None:     # the answer cell never set `answer`
            i = order.index(cell)
            before = next((c for c in reversed(order[:i]) if c.get("metadata", {}).get("nbgrader", {}).get("solution")), None)
            if before is not None and _reason_from_outputs(before):
                reason = f"the answer cell failed: {_reason_from_outputs(before)}"
        row["reasons"][e] = reason
    return row


def _restore(submitted, release):
    """``submitted`` with every check cell of ``release`` it lacks put back after the answer cell before
    it (so that nbgrader can grade the rest)."""
    import copy

    nb = copy.deepcopy(submitted)
    have = {c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in nb.cells}
    for i, cell in enumerate(release.cells):
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid and gid not in have:
            prev = release.cells[i - 1].get("metadata", {}).get("nbgrader", {}).get("grade_id") if i else None
            at = next((j + 1 for j, c in enumerate(nb.cells)
                       if prev and c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == prev), len(nb.cells))
            nb.cells.insert(at, copy.deepcopy(cell))
            have.add(gid)
    return nb


def _write(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    exercises = []
    for r in rows:
        for e in r["scores"]:
            key = f"{r['chapter']}:{e}"
            if key not in exercises:
                exercises.append(key)
    students = sorted({r["student"] for r in rows})
    by = {(r["student"], r["chapter"]): r for r in rows}
    header = ["student", "total", "max", "status"] + [x for e in exercises for x in (e, f"{e} reason")]
    table = []
    for s in students:
        mine = [r for r in rows if r["student"] == s]
        status = "; ".join(f"{r['chapter']}: {r['status']}" + (f" ({r['note']})" if r["note"] else "") for r in mine)
        line = {"student": s, "total": sum(sum(r["scores"].values()) for r in mine),
                "max": sum(r["max"] for r in mine), "status": status}
        for e in exercises:
            chapter, ex = e.split(":", 1)
            r = by.get((s, chapter))
            line[e] = "" if r is None else r["scores"].get(ex, "")
            line[f"{e} reason"] = "" if r is None else r["reasons"].get(ex, "")
        table.append(line)
    with open(out / "grades.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(table)
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in ["student", "total", "status"] + exercises)
    body = []
    for line in table:
        cells = [f"<td>{esc(line['student'])}</td>", f"<td>{line['total']:g} / {line['max']}</td>",
                 f"<td>{esc(line['status'])}</td>"]
        for e in exercises:
            score, reason = line[e], line[f"{e} reason"]
            cls = "right" if score == 1.0 else "lost"
            cells.append(f'<td class="{cls}">{score if score != "" else "–"}'
                         + (f"<br><small>{esc(reason)}</small>" if reason else "") + "</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    (out / "grades.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>Grades</title><style>"
        "table{border-collapse:collapse;font:14px sans-serif}td,th{border:1px solid #ccc;padding:4px 8px;"
        "vertical-align:top}td.right{background:#e6f4ea}td.lost{background:#fdecea}</style>"
        f"<h1>Grades</h1><table><tr>{head}</tr>{''.join(body)}</table>\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gradnoise.grade", description=__doc__.split("\n")[0])
    p.add_argument("submissions", type=Path, help="a folder of <student>/<chapter>.ipynb")
    p.add_argument("--pack", type=Path, default=Path("."), help="the course pack's folder (default: here)")
    p.add_argument("--out", type=Path, default=Path("grades"))
    p.add_argument("--timeout", type=int, default=600, help="seconds per notebook cell (default 600)")
    checks.argv(argv)
    args = p.parse_args(argv)
    try:
        rows = grade(args.submissions, args.pack, args.out, args.timeout)
    except ValueError as e:
        p.error(str(e))
    for r in rows:
        got = sum(r["scores"].values())
        print(f"{r['student']:20s} {r['chapter']:28s} {got:g}/{r['max']}  {r['status']}" + (f" ({r['note']})" if r["note"] else ""))
    print(f"wrote {args.out / 'grades.csv'} and {args.out / 'grades.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
