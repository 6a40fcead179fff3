r"""The scale test: every chapter run under ``GRADNOISE_SCALE``, with the worst :math:`|z|` of each check.

A check that holds only at one Monte-Carlo size checks the sample size, not the claim. ``make test-scale
SCALE=10`` (``python -m gradnoise.site.scale --scale 10 [--jobs 1] [--timeout 3600] [NAME ...]``) runs
every chapter of ``_toc.yml`` (or those named) with ``GRADNOISE_SCALE=10``, each in a child process and a
scratch directory (:func:`gradnoise.site.mutation.run_text`) with its own evidence folder
``_build/scale/10/evidence/NAME/``, and writes ``_build/scale/10/report.md`` and ``report.json`` (not
committed): per chapter whether it passed (else the first failing code cell and the error on one line),
its seconds, and per check — one row per label and kind, from the chapter's evidence records — the worst
:math:`|z|` of an agreement (its largest over the entries and over every time the label was recorded) with
its bound, and the smallest :math:`|z|` of a rejection (the one closest to losing its power) with its
bound; then the totals. It prints the per-chapter table and exits non-zero when a chapter failed or ran
past the timeout. Not part of ``make test``.

What a check's numbers mean (:mod:`gradnoise.evidence`): ``agrees`` and ``exact`` hold while
``worst < bound``, so the row keeps the largest ``worst``; ``rejects`` and ``differs`` hold while
``worst >= bound``, so it keeps the smallest. ``margin`` is ``worst / bound`` (below 1 for a holding
agreement, at least 1 for a holding rejection).

The second half of the module is the *knob scan* behind ``tests/test_scale.py``: :func:`unscaled_sizes`
finds, statically, every Monte-Carlo size of a chapter that ``GRADNOISE_SCALE`` does not reach (the rules
are in the comment above it); a chapter says why a size is fixed with ``# not scaled: <reason>``.
"""
from __future__ import annotations

import argparse
import ast
import concurrent.futures as futures
import dataclasses
import datetime
import functools
import importlib
import inspect
import json
import math
import os
import pathlib
import re
import shutil
import sys
import time

from .mutation import chapters as book_chapters
from .mutation import run_text

__all__ = ["main", "run", "unscaled_sizes"]   # the entry points; the rest are the report's and the scan's parts

OUT = "_build/scale"
MAX_JOBS = 64
MAX_TIMEOUT = 7 * 24 * 3600
REJECTIONS = ("rejects", "differs")
"""Kinds whose check holds while ``worst >= bound`` (every other kind holds while ``worst < bound``)."""
DEFAULT_TIMEOUT = 3600


def scale_label(value: float) -> str:
    """``10.0`` -> ``'10'``, ``0.5`` -> ``'0.5'``: the folder name and the value given to the children."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"the scale must be a positive number, got {value!r}")
    value = float(value)
    if not (0 < value < math.inf):
        raise ValueError(f"the scale must be a positive number, got {value!r}")
    return str(int(value)) if value == int(value) else repr(value)


def out_dir(root, scale: float) -> pathlib.Path:
    """``ROOT/_build/scale/SCALE``: where one scale's report and evidence go."""
    return pathlib.Path(root) / OUT / scale_label(scale)


def read_records(path) -> list[dict]:
    """The evidence records of one ``NAME.jsonl`` file (``[]`` when it does not exist), as dicts."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise ValueError(f"{path}:{n}: not an evidence record ({err})") from None
        if not isinstance(row, dict) or not {"kind", "what", "worst", "bound"} <= set(row):
            raise ValueError(f"{path}:{n}: an evidence record needs kind, what, worst and bound")
        rows.append(row)
    return rows


def _num(x) -> float:
    """A record's number; ``None`` (how JSON keeps ``inf``/``nan``) is read as ``inf``."""
    return math.inf if x is None else float(x)


def summarize_checks(records: list[dict]) -> list[dict]:
    """One row per check (label and kind), in the order first recorded.

    Each row: ``kind``, ``what``, ``claim``, ``times`` (how often the label was recorded), ``entries``
    (summed), ``worst`` — the largest over the records for a check that holds below its bound, the
    smallest for a rejection — with the ``bound`` of that record, ``margin = worst / bound`` and the
    ``resolution`` of that record (agreements only; ``None`` otherwise).
    """
    rows: dict[tuple, dict] = {}
    for rec in records:
        kind, what = rec["kind"], rec["what"]
        worst, bound = _num(rec["worst"]), _num(rec["bound"])
        row = rows.get((kind, what))
        if row is None:
            rows[(kind, what)] = {"kind": kind, "what": what, "claim": rec.get("claim"), "times": 1,
                                  "entries": int(rec.get("entries") or 0), "worst": worst, "bound": bound,
                                  "resolution": rec.get("resolution")}
            continue
        row["times"] += 1
        row["entries"] += int(rec.get("entries") or 0)
        closer = worst / bound < row["worst"] / row["bound"] if kind in REJECTIONS else worst / bound > row["worst"] / row["bound"]
        if closer:
            row.update(worst=worst, bound=bound, resolution=rec.get("resolution"))
    out = list(rows.values())
    for row in out:
        row["margin"] = row["worst"] / row["bound"] if row["bound"] else math.inf
    return out


def chapter_row(name: str, result: dict, records: list[dict]) -> dict:
    """A chapter's line of the report: its run (``run_text``'s result) and its checks, summarized."""
    checks = summarize_checks(records)
    agree = [c for c in checks if c["kind"] == "agrees"]
    reject = [c for c in checks if c["kind"] == "rejects"]
    return {
        "chapter": name, "status": result["status"], "seconds": result["seconds"],
        "cell": result.get("cell"), "error": result.get("ename"), "message": result.get("message") or "",
        "checks": checks, "records": len(records),
        "worst_agrees": max(agree, key=lambda c: c["margin"]) if agree else None,
        "weakest_rejects": min(reject, key=lambda c: c["margin"]) if reject else None,
    }


def totals(rows: list[dict], wall: float | None = None) -> dict:
    """Counts over the chapters: passed/failed/timeout, checks, the summed seconds and the wall time."""
    out = {"chapters": len(rows), "passed": 0, "failed": 0, "timeout": 0,
           "checks": sum(len(r["checks"]) for r in rows),
           "seconds": round(sum(r["seconds"] for r in rows), 1), "wall": None if wall is None else round(wall, 1)}
    for r in rows:
        out[r["status"] if r["status"] in ("passed", "timeout") else "failed"] += 1
    return out


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    if math.isinf(x):
        return "inf"
    return f"{x:.3g}"


def _z(check: dict | None) -> str:
    return "–" if check is None else f"{_fmt(check['worst'])}/{_fmt(check['bound'])}"


def table(rows: list[dict]) -> str:
    """The per-chapter table, plain text: status, seconds, worst agreement |z|/bound, weakest rejection."""
    head = f"{'chapter':28s} {'status':8s} {'seconds':>8s} {'checks':>6s} {'worst agrees |z|/bound':>23s} {'weakest rejects |z|/bound':>26s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['chapter']:28s} {r['status']:8s} {r['seconds']:>8.1f} {len(r['checks']):>6d} "
                     f"{_z(r['worst_agrees']):>23s} {_z(r['weakest_rejects']):>26s}")
        if r["status"] != "passed":
            lines.append(f"    cell {r['cell']}: {r['error']}: {r['message']}")
    return "\n".join(lines)


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(report: dict) -> str:
    """The report as Markdown: the totals, the per-chapter table, then every chapter's checks."""
    t = report["totals"]
    out = [f"# Scale test at GRADNOISE_SCALE={report['scale']}", "",
           f"Seed {report['seed']}, device {report['device']}, {report['jobs']} job(s), recorded {report['recorded']}.",
           "",
           f"**{t['passed']} of {t['chapters']} chapters passed** ({t['failed']} failed, {t['timeout']} timed out); "
           f"{t['checks']} checks; {t['seconds']} s of chapter time"
           + (f", {t['wall']} s wall." if t["wall"] is not None else "."), "",
           "| chapter | status | seconds | checks | worst agreement \\|z\\| / bound | weakest rejection \\|z\\| / bound |",
           "|---|---|---:|---:|---|---|"]
    for r in report["chapters"]:
        wa, wr = r["worst_agrees"], r["weakest_rejects"]
        out.append(f"| {r['chapter']} | {r['status']} | {r['seconds']:.1f} | {len(r['checks'])} | "
                   + (f"{_z(wa)} ({_cell(wa['what'])})" if wa else "–") + " | "
                   + (f"{_z(wr)} ({_cell(wr['what'])})" if wr else "–") + " |")
    for r in report["chapters"]:
        out += ["", f"## {r['chapter']}: {r['status']} in {r['seconds']:.1f} s", ""]
        if r["status"] != "passed":
            out += [f"Code cell {r['cell']}: `{r['error']}`: {_cell(r['message'])}", ""]
        if not r["checks"]:
            out.append("No check recorded.")
            continue
        out += ["| kind | check | claim | times | entries | worst \\|z\\| (exact, differs: relative error) | bound | margin | resolution |",
                "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for c in r["checks"]:
            out.append(f"| {c['kind']} | {_cell(c['what'])} | {c['claim'] or ''} | {c['times']} | {c['entries']} | "
                       f"{_fmt(c['worst'])} | {_fmt(c['bound'])} | {_fmt(c['margin'])} | "
                       f"{_fmt(c['resolution']) if c['resolution'] is not None else ''} |")
    return "\n".join(out) + "\n"


def compare(reports: list[dict]) -> str:
    """Several scales' reports side by side (Markdown): per chapter and scale, status, seconds, worst agreement."""
    labels = [r["scale"] for r in reports]
    names = list(dict.fromkeys(row["chapter"] for r in reports for row in r["chapters"]))
    out = ["| chapter | " + " | ".join(f"{x}×: s | {x}×: worst agreement \\|z\\|/bound" for x in labels) + " |",
           "|---|" + "---:|---|" * len(labels)]
    for name in names:
        cells = []
        for r in reports:
            row = next((c for c in r["chapters"] if c["chapter"] == name), None)
            if row is None:
                cells += ["", ""]
                continue
            flag = "" if row["status"] == "passed" else f" **{row['status']}** (cell {row['cell']})"
            cells += [f"{row['seconds']:.1f}", _z(row["worst_agrees"]) + flag]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("| total | " + " | ".join(f"{r['totals']['seconds']} | {r['totals']['passed']}/{r['totals']['chapters']} passed"
                                         for r in reports) + " |")
    return "\n".join(out) + "\n"


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def load_report(path) -> dict:
    """A ``report.json`` read back (``None`` numbers, how JSON keeps ``inf``, read as ``inf``)."""
    report = json.loads(pathlib.Path(path).read_text())
    for r in report["chapters"]:
        for c in r["checks"] + [x for x in (r["worst_agrees"], r["weakest_rejects"]) if x]:
            for key in ("worst", "bound", "margin"):
                c[key] = _num(c[key])
    return report


def run(root, scale: float, names: list[str], jobs: int = 1, timeout: int = DEFAULT_TIMEOUT, log=print) -> dict:
    """Run ``names`` at ``scale`` (``jobs`` at a time), write the report, and return it.

    ``root`` is the book (a folder with ``_toc.yml`` and ``chapters/``), ``names`` chapters of its table of
    contents, ``timeout`` the seconds each chapter may run, ``log`` called with one line per chapter done.
    Everything it writes goes under ``ROOT/_build/scale/SCALE/``, which it first removes.
    """
    from .. import checks

    if not isinstance(root, (str, os.PathLike)) or not (pathlib.Path(root) / "chapters").is_dir():
        raise ValueError(f"root must be the book's folder (with chapters/), got {root!r}")
    root = pathlib.Path(root).resolve()   # the children run elsewhere: their evidence folder is absolute
    scale_label(scale)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"names must be a list of chapter names, got {names!r}")
    known = book_chapters(root)
    unknown = [n for n in names if n not in known or not (root / "chapters" / f"{n}.md").is_file()]
    if unknown or not names:
        raise ValueError(f"names must be chapters of {root / '_toc.yml'}: "
                         + (f"no chapter {', '.join(map(repr, unknown))}" if unknown else "none given"))
    jobs = checks.count(jobs, "jobs", minimum=1, maximum=MAX_JOBS)
    timeout = checks.count(timeout, "timeout", minimum=1, maximum=MAX_TIMEOUT)
    if not callable(log):
        raise ValueError(f"log must be callable, got {type(log).__name__}")
    where = out_dir(root, scale)
    if where.exists():
        shutil.rmtree(where)
    (where / "evidence").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items()}
    env["GRADNOISE_SCALE"] = scale_label(scale)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, jobs))))

    def one(name):
        evidence = where / "evidence" / name
        evidence.mkdir()
        text = (root / "chapters" / f"{name}.md").read_text()
        result = run_text(text, name, timeout=timeout, env=env, evidence_dir=str(evidence))
        return chapter_row(name, result, read_records(evidence / f"{name}.jsonl"))

    start, done = time.monotonic(), {}
    with futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        running = {pool.submit(one, name): name for name in names}
        for fut in futures.as_completed(running):
            row = done[running[fut]] = fut.result()
            log(f"{row['chapter']}: {row['status']} in {row['seconds']:.1f} s "
                f"(worst agreement {_z(row['worst_agrees'])}, weakest rejection {_z(row['weakest_rejects'])})"
                + (f" — cell {row['cell']}: {row['error']}: {row['message']}" if row["status"] != "passed" else ""))
    rows = [done[n] for n in names]
    from gradnoise import device

    report = {"scale": scale_label(scale), "seed": os.environ.get("GRADNOISE_SEED", "0"),
              "device": str(device.device()), "jobs": jobs, "timeout": timeout,
              "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "totals": totals(rows, time.monotonic() - start), "chapters": rows}
    (where / "report.json").write_text(json.dumps(_json_safe(report), indent=1, ensure_ascii=False) + "\n")
    (where / "report.md").write_text(markdown(report))
    return report


def parse_names(given: list[str], known: list[str]) -> list[str]:
    """The chapters to run: ``given`` (names, each may hold several separated by spaces) or every one.

    Raises ``ValueError`` naming any that ``_toc.yml`` does not list.
    """
    names = [n for g in given for n in g.split()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"no chapter {', '.join(unknown)} (chapters: {', '.join(known)})")
    return names or list(known)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gradnoise.site.scale", description=__doc__.split("\n")[0])
    ap.add_argument("chapters", nargs="*", help="chapter names (default: every chapter of _toc.yml)")
    ap.add_argument("--scale", type=float, help="GRADNOISE_SCALE for every chapter (required to run them)")
    ap.add_argument("--compare", nargs="+", metavar="SCALE",
                    help="run nothing: print the reports of these scales (_build/scale/SCALE/report.json) side by side")
    ap.add_argument("--unscaled", action="store_true",
                    help="run nothing: list every Monte-Carlo size of the chapters that the knob does not reach")
    ap.add_argument("--jobs", type=int, default=1, help="chapters at a time (default 1)")
    ap.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, help="seconds per chapter (default 3600)")
    ap.add_argument("--root", default=".")
    if argv is not None and (not isinstance(argv, (list, tuple)) or not all(isinstance(a, str) for a in argv)):
        print(f"scale: argv must be a list of strings, got {argv!r}", file=sys.stderr)
        return 2
    try:
        args = ap.parse_args(argv)
    except SystemExit as done:      # argparse's own message is printed; say so with a status, not an exit
        return done.code if isinstance(done.code, int) else 2
    root = pathlib.Path(args.root)
    try:
        if args.compare:
            try:
                paths = [out_dir(root, float(x)) / "report.json" for x in args.compare]
            except ValueError:
                raise ValueError(f"--compare takes scales (positive numbers), got {' '.join(args.compare)}") from None
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise ValueError(f"no report {', '.join(missing)} (run make test-scale SCALE=... first)")
            print(compare([load_report(p) for p in paths]), end="")
            return 0
        names = parse_names(args.chapters, book_chapters(root))
        if args.unscaled:
            found = [u for n in names for u in unscaled_sizes(root / "chapters" / f"{n}.md")]
            print("\n".join(map(str, found)) + f"\n{len(found)} unscaled size(s) in {len(names)} chapter(s)")
            return 0
        if args.scale is None:
            raise ValueError("--scale is required (or --unscaled to list the sizes the knob does not reach)")
        report = run(root, args.scale, names, args.jobs, args.timeout)
    except ValueError as err:
        print(f"scale: {err}", file=sys.stderr)
        return 2
    t = report["totals"]
    print(f"\nGRADNOISE_SCALE={report['scale']} (seed {report['seed']}, {report['device']})")
    print(table(report["chapters"]))
    print(f"{t['passed']}/{t['chapters']} passed, {t['failed']} failed, {t['timeout']} timed out; "
          f"{t['seconds']} s of chapter time, {t['wall']} s wall; report: {out_dir(root, args.scale) / 'report.md'}")
    return 0 if t["passed"] == t["chapters"] else 1



# --- the knob reaches every chapter: a static scan of the chapters' code -----------------------------
#
# A Monte-Carlo size that GRADNOISE_SCALE does not multiply makes a scale run check the same sample twice.
# :func:`unscaled_sizes` reads a chapter's code cells (jupytext) as one program, laid out on the lines of
# the .md file, and follows each number that sizes a random experiment back to where it is written:
#
# 1. *count arguments* — a parameter named trials, chains, seeds, steps, draws or samples of a gradnoise
#    function that draws (takes a generator — a parameter ``gen``/``generator`` or one annotated
#    ``torch.Generator``: ``sampling.block_means``, ``nqm.simulate``, ``pergrad.sgd``, ``diffusion.sgd_chains``,
#    ``networks.training.train``, ...), bound by keyword or by position;
# 2. *draw shapes* — the shape of a random draw (``torch.randn/rand/randint/normal(..., generator=)``, the
#    samples of ``torch.multinomial``, a ``shape`` or tuple ``batch`` of a drawing gradnoise function, the
#    chains of ``diffusion``'s ``theta0``) that holds a constant of ``COUNT_MIN`` or more: smaller ones are
#    the model's own shapes (a 4x6 matrix, a dozen steps), larger ones a Monte-Carlo sample;
# 3. *loops that draw* — the count of a ``for`` loop or comprehension over ``range(n)`` whose passes draw
#    (call a torch draw with a generator, a drawing gradnoise function, or a chapter function that does),
#    when ``n`` is a number (``range(len(settings))`` is a loop over settings, not a count);
# 4. *size constants* — a module-level name with an upper-case letter and a size word (``STEPS``,
#    ``T_steps``, ``STEPS_TRIALS``; see ``SIZE_WORDS``), unless its value is a tuple, list or dict (a set
#    of settings, such as the checkpoints ``STEPS = (10, 50, 400)``; their use as sizes is checked there).
#
# A size is *scaled* when the knob reaches it: its expression calls ``gn.trials`` / ``gradnoise.trials``
# / ``device.scale()``, or uses a name whose value does (followed through assignments, tuple unpacking and
# for-loops over literal tuples, e.g. ``3 * TRIALS`` or ``idx.shape[0]`` of a scaled draw). A size inside
# a chapter's own function that comes from the function's parameters is checked at every call of that
# function instead (with its default where a call leaves it out), through any depth of such functions.
# An unscaled size is reported once, at the line where its number is written (the assignment of a
# constant, or the argument itself), with the name it has there. A chapter says why a size is fixed with
# a comment ``# not scaled: <reason>`` on that line (or any line of that statement).

COUNT_NAMES = frozenset({"trials", "chains", "seeds", "steps", "draws", "samples", "n_samples", "num_samples"})
SHAPE_NAMES = frozenset({"shape", "size"})
SIZE_WORDS = frozenset({"trials", "chains", "seeds", "steps", "draws", "samples", "reps", "repeats", "runs"})
COUNT_MIN = 100
MARKER = re.compile(r"#\s*not scaled:\s*(\S.{4,})")
TORCH_DRAWS = {"randn": "all", "rand": "all", "randint": "randint", "normal": "size", "multinomial": 1}
_KNOBS = ("gradnoise.device.trials", "gradnoise.device.scale")
_FENCE = re.compile(r"^```\{code-cell\}[^\n]*\n", re.M)


@dataclasses.dataclass(frozen=True)
class Unscaled:
    """A size the knob does not reach: chapter, line of the .md file, the name it has there, the line."""

    chapter: str
    line: int
    name: str
    code: str
    lines: tuple = ()   # every line of the statement (where a ``# not scaled:`` marker may stand)

    def __str__(self):
        return f"{self.chapter}.md:{self.line}: {self.name} is not scaled by GRADNOISE_SCALE: {self.code.strip()}"


def code_lines(text: str) -> str:
    """The chapter's code cells as one Python source on the lines they occupy in ``text``; blank elsewhere.

    Cells are read by jupytext; each is found in the text after the previous one. IPython magics and shell
    lines become comments. Raises ``ValueError`` if a cell cannot be located.
    """
    import jupytext

    nb = jupytext.reads(text, fmt="md:myst")
    lines = text.split("\n")
    out = [""] * len(lines)
    pos = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        fence = _FENCE.search(text, pos)
        if fence is None:
            raise ValueError(f"code cell without a ```{{code-cell}} fence: {cell.source[:60]!r}")
        pos = fence.end()
        if not cell.source.strip():
            continue
        at = text.find(cell.source, pos)
        if at < 0:
            raise ValueError(f"code cell not found in the chapter's text: {cell.source[:60]!r}")
        first = text.count("\n", 0, at)
        for i, src in enumerate(cell.source.split("\n")):
            out[first + i] = "# " + src if src.lstrip().startswith(("%", "!")) else src
        pos = at + len(cell.source)
    return "\n".join(out)


def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


@functools.lru_cache(maxsize=None)
def _import_object(path: str):
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for p in parts[i:]:
                obj = getattr(obj, p)
        except AttributeError:
            return None
        return obj
    return None


def _generator_params(sig) -> set:
    """The parameters that take a random generator: named ``gen``/``generator`` or annotated ``torch.Generator``."""
    return {p.name for p in sig.parameters.values()
            if p.name in ("gen", "generator") or "Generator" in str(p.annotation)}


def _size_word(name: str) -> bool:
    return any(c.isupper() for c in name) and bool(SIZE_WORDS & set(re.split(r"[_\d]+", name.lower())))


class _Scope:
    def __init__(self, node, parent):
        self.node, self.parent = node, parent
        self.params: set[str] = set()
        self.defs: dict[str, list[tuple[int, object]]] = {}

    def define(self, name, line, how):
        self.defs.setdefault(name, []).append((line, how))


class _Scan:
    """One chapter's program: scopes, definitions, imports; then the sizes of its random draws."""

    def __init__(self, source: str):
        self.tree = ast.parse(source)
        self.aliases: dict[str, str] = {}
        self.scopes: dict[int, _Scope] = {}
        self.scope_of: dict[int, _Scope] = {}       # id(node) -> innermost scope containing it
        self.requires: dict[int, list[tuple]] = {}  # id(scope node) -> [(frozenset(params), mode)]
        self.module = self._build(self.tree, None)
        self._knob: dict[int, bool] = {}

    # -- building scopes ---------------------------------------------------------------------------
    def _build(self, node, parent) -> _Scope:
        scope = _Scope(node, parent)
        self.scopes[id(node)] = scope
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            args = node.args
            for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
                if a is not None:
                    scope.params.add(a.arg)
            body = node.body if isinstance(node.body, list) else [node.body]
        else:
            body = node.body
        for stmt in body:
            self._visit(stmt, scope)
        return scope

    def _visit(self, node, scope):
        self.scope_of[id(node)] = scope
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            scope.define(node.name, node.lineno, ("function", node))
            for d in [*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None], *node.decorator_list]:
                self._visit(d, scope)
            self._build(node, scope)
            return
        if isinstance(node, ast.Lambda):
            for d in [*node.args.defaults, *[d for d in node.args.kw_defaults if d is not None]]:
                self._visit(d, scope)
            self._build(node, scope)
            return
        if isinstance(node, ast.ClassDef):
            scope.define(node.name, node.lineno, ("opaque", node))
        if isinstance(node, ast.Import):
            for a in node.names:
                self.aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                self._bind(t, node.value, (), scope, node.lineno, "assign")
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
            self._bind(node.target, node.value, (), scope, node.lineno, "aug" if isinstance(node, ast.AugAssign) else "assign")
        elif isinstance(node, ast.NamedExpr):
            self._bind(node.target, node.value, (), scope, node.lineno, "assign")
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self._bind(node.target, node.iter, (), scope, node.lineno, "element")
        elif isinstance(node, ast.comprehension):
            self._bind(node.target, node.iter, (), scope, getattr(node.iter, "lineno", 0), "element")
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    self._bind(item.optional_vars, item.context_expr, (), scope, node.lineno, "assign")
        for child in ast.iter_child_nodes(node):
            self._visit(child, scope)

    def _bind(self, target, value, path, scope, line, how):
        if isinstance(target, ast.Name):
            scope.define(target.id, line, (how, value, path))
        elif isinstance(target, (ast.Tuple, ast.List)):
            for i, t in enumerate(target.elts):
                self._bind(t.value if isinstance(t, ast.Starred) else t, value, (*path, i), scope, line, how)

    # -- what an expression depends on ---------------------------------------------------------------
    def resolve(self, dotted: str | None) -> str | None:
        if not dotted:
            return None
        head, _, rest = dotted.partition(".")
        if head not in self.aliases:
            return None
        return self.aliases[head] + ("." + rest if rest else "")

    def _is_knob(self, call) -> bool:
        if id(call) not in self._knob:
            self._knob[id(call)] = self._knob_call(call)
        return self._knob[id(call)]

    def _knob_call(self, call) -> bool:
        path = self.resolve(_dotted(call.func))
        if not path or not path.startswith("gradnoise"):
            return False
        obj = _import_object(path)
        return any(obj is _import_object(k) for k in _KNOBS)

    @staticmethod
    def _pick(value, path):
        """The parts of ``value`` that position ``path`` of an unpacking takes (all of it when unknown)."""
        if not path:
            return [value]
        if isinstance(value, (ast.Tuple, ast.List)) and not any(isinstance(e, ast.Starred) for e in value.elts) \
                and path[0] < len(value.elts):
            return _Scan._pick(value.elts[path[0]], path[1:])
        return [value]

    def _element_parts(self, it, path):
        """For ``for <target> in it``: the parts of ``it`` position ``path`` of the target takes."""
        if isinstance(it, (ast.Tuple, ast.List, ast.Set)) and not any(isinstance(e, ast.Starred) for e in it.elts):
            return [p for e in it.elts for p in self._pick(e, path)]
        return [it]

    def lookup(self, name: str, scope: _Scope, line: int):
        """``("param", scope)``, ``("def", line, how, scope)`` or ``None`` (a builtin or an import)."""
        s = scope
        while s is not None:
            defs = s.defs.get(name, [])
            if s.parent is not None:   # a function: its own assignments before the use, its parameter, later ones
                before = [d for d in defs if d[0] <= line]
                if before:
                    return ("def", *before[-1], s)
                if name in s.params:
                    return ("param", s)
                if defs:
                    return ("def", *defs[-1], s)
            elif defs:
                before = [d for d in defs if d[0] <= line]
                ln, how = (before or defs[:1])[-1]
                return ("def", ln, how, s)
            s = s.parent
        return None

    def depends(self, expr, scope: _Scope, line: int | None = None, seen=None) -> tuple[bool, frozenset]:
        """``(knob, params)``: whether the knob reaches ``expr``, and which function parameters it uses."""
        if expr is None:
            return False, frozenset()
        seen = set() if seen is None else seen
        knob, params = False, set()
        line = getattr(expr, "lineno", line or 0)
        stack = [expr]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Call) and self._is_knob(node):
                return True, frozenset()
            if isinstance(node, ast.Name):
                found = self.lookup(node.id, self.scope_of.get(id(node), scope), getattr(node, "lineno", line))
                if found is None:
                    continue
                if found[0] == "param":
                    params.add((id(found[1].node), node.id))
                    continue
                _, ln, how, s = found
                key = (id(s), node.id, ln)
                if key in seen:
                    continue
                seen.add(key)
                k, p = self._depends_def(node.id, ln, how, s, seen)
                if k:
                    return True, frozenset()
                params |= p
                continue
            if isinstance(node, (ast.Lambda, ast.FunctionDef)):
                continue
            stack.extend(ast.iter_child_nodes(node))
        return knob, frozenset(params)

    def _depends_def(self, name, ln, how, s, seen):
        kind = how[0]
        if kind in ("function", "opaque"):
            return False, frozenset()
        _, value, path = how
        parts = self._element_parts(value, path) if kind == "element" else self._pick(value, path)
        knob, params = False, set()
        for part in parts:
            k, p = self.depends(part, s, ln, seen)
            if k:
                return True, frozenset()
            params |= p
        if kind == "aug":   # x op= v: also what x was before
            earlier = [d for d in s.defs.get(name, []) if d[0] < ln]
            if earlier:
                k, p = self._depends_def(name, earlier[-1][0], earlier[-1][1], s, seen)
                if k:
                    return True, frozenset()
                params |= p
        return knob, frozenset(params)

    def constants(self, expr, scope, seen=None) -> list[float]:
        """Every number written in ``expr`` or in the values of the names it uses (not through calls' names)."""
        seen = set() if seen is None else seen
        out = []
        for node in ast.walk(expr):
            if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
                out.append(node.value)
            elif isinstance(node, ast.Name):
                found = self.lookup(node.id, self.scope_of.get(id(node), scope), getattr(node, "lineno", 0))
                if found and found[0] == "def" and found[2][0] in ("assign", "aug", "element") and (node.id, found[1]) not in seen:
                    seen.add((node.id, found[1]))
                    how, s = found[2], found[3]
                    parts = self._element_parts(how[1], how[2]) if how[0] == "element" else self._pick(how[1], how[2])
                    for part in parts:
                        out += self.constants(part, s, seen)
        return out

    def numeric(self, expr, scope, seen=None) -> bool:
        """Whether ``expr`` is a number: constants, arithmetic, the knob, and names of such (or parameters)."""
        seen = set() if seen is None else seen
        stack = [expr]
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Call):
                if not self._is_knob(node):
                    return False
                continue
            stack.extend(ast.iter_child_nodes(node))
            if isinstance(node, ast.Name):
                found = self.lookup(node.id, self.scope_of.get(id(node), scope), getattr(node, "lineno", 0))
                if found is None or found[0] == "param" or (node.id, found[1]) in seen:
                    continue
                seen.add((node.id, found[1]))
                how, s = found[2], found[3]
                if how[0] not in ("assign", "aug", "element"):
                    return False
                parts = self._element_parts(how[1], how[2]) if how[0] == "element" else self._pick(how[1], how[2])
                if not all(self.numeric(part, s, seen) for part in parts):
                    return False
            elif isinstance(node, (ast.Attribute, ast.Subscript, ast.Lambda)):
                return False
        return True

    # -- the sizes of random draws ---------------------------------------------------------------------
    def _bind_call(self, call, sig):
        """``{parameter: expression}`` for a call bound to ``sig`` (positional binding stops at ``*args``)."""
        out = {}
        names = [p.name for p in sig.parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        for i, a in enumerate(call.args):
            if isinstance(a, ast.Starred) or i >= len(names):
                break
            out[names[i]] = a
        for kw in call.keywords:
            if kw.arg is not None:
                out[kw.arg] = kw.value
        return out

    def _local_signature(self, fnode):
        a = fnode.args
        P = inspect.Parameter
        params = [P(x.arg, P.POSITIONAL_ONLY) for x in a.posonlyargs] + [P(x.arg, P.POSITIONAL_OR_KEYWORD) for x in a.args]
        if a.vararg:
            params.append(P(a.vararg.arg, P.VAR_POSITIONAL))
        params += [P(x.arg, P.KEYWORD_ONLY) for x in a.kwonlyargs]
        defaults = dict(zip([x.arg for x in [*a.posonlyargs, *a.args]][-len(a.defaults):] if a.defaults else [], a.defaults))
        defaults.update({x.arg: d for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None})
        return inspect.Signature(params), defaults

    def sites(self, call, scope):
        """The size arguments of one call: ``[(label, [expressions], mode)]`` (mode ``count`` or ``shape``)."""
        out = []
        dotted = _dotted(call.func)
        path = self.resolve(dotted)
        kws = {kw.arg: kw.value for kw in call.keywords if kw.arg}
        # torch's own random draws
        if path and path.startswith("torch.") and path.split(".")[-1] in TORCH_DRAWS and len(path.split(".")) == 2 \
                and "generator" in kws:
            how = TORCH_DRAWS[path.split(".")[-1]]
            args = [a for a in call.args if not isinstance(a, ast.Starred)]
            if how == "all":
                exprs = args + ([kws["size"]] if "size" in kws else [])
            elif how == "randint":
                exprs = [kws["size"]] if "size" in kws else args[-1:] if len(call.args) >= 2 else []
            elif how == "size":
                exprs = [kws["size"]] if "size" in kws else []
            else:
                exprs = [kws["num_samples"]] if "num_samples" in kws else call.args[how:how + 1]
            if exprs:
                out.append(("size of " + path, exprs, "shape"))
            return out
        # gradnoise functions that draw
        if path and path.startswith("gradnoise"):
            fn = _import_object(path)
            if not callable(fn):
                return out
            try:
                sig = inspect.signature(fn)
            except (TypeError, ValueError):
                return out
            gens = _generator_params(sig)
            if not gens:
                return out
            bound = self._bind_call(call, sig)
            for p in sig.parameters.values():
                if p.name in gens:
                    continue
                mode = ("count" if p.name in COUNT_NAMES else
                        "shape" if p.name in SHAPE_NAMES or p.annotation in (tuple, "tuple")
                        or (p.name == "theta0" and fn.__module__ == "gradnoise.diffusion") else None)
                if mode is None:
                    continue
                if p.name in bound:
                    out.append((p.name, [bound[p.name]], mode))
                elif mode == "count" and p.name in ("trials", "chains", "seeds") and p.default is not p.empty:
                    out.append((f"{p.name} (default {p.default!r})", [], mode))
            return out
        # the chapter's own functions
        fnode = self._local_function(call, scope)
        if fnode is not None and id(fnode) in self.requires:
            sig, defaults = self._local_signature(fnode)
            bound = self._bind_call(call, sig)
            for group, mode in self.requires[id(fnode)]:
                exprs = [bound.get(p, defaults.get(p)) for p in sorted(group)]
                exprs = [e for e in exprs if e is not None and not (isinstance(e, ast.Constant) and e.value is None)]
                out.append(("/".join(sorted(group)), exprs, mode))
        return out

    def _local_function(self, call, scope):
        """The FunctionDef or Lambda a call to a plain name reaches in the chapter, else ``None``."""
        if not isinstance(call.func, ast.Name):
            return None
        found = self.lookup(call.func.id, self.scope_of.get(id(call), scope), call.lineno)
        if found and found[0] == "def":
            how = found[2]
            if how[0] == "function":
                return how[1]
            if how[0] == "assign" and not how[2] and isinstance(how[1], ast.Lambda):
                return how[1]
        return None

    def draws(self, call, scope) -> bool:
        """Whether a call draws random numbers: a torch draw with a generator, a gradnoise function that
        takes one, or a chapter function whose body makes such a call."""
        path = self.resolve(_dotted(call.func))
        if path and path.startswith("torch.") and any(kw.arg == "generator" for kw in call.keywords):
            return True
        if path and path.startswith("gradnoise"):
            fn = _import_object(path)
            try:
                return callable(fn) and bool(_generator_params(inspect.signature(fn)))
            except (TypeError, ValueError):
                return False
        fnode = self._local_function(call, scope)
        return fnode is not None and id(fnode) in self.drawing

    def _loops(self):
        """``[(range call, stop expression, scope)]`` of every loop over ``range(...)`` whose passes draw."""
        out = []
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.For, ast.AsyncFor)):
                gens, body = [node], node.body
            elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
                gens = node.generators
                body = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            else:
                continue
            for g in gens:
                it = g.iter
                if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"
                        and "range" not in self.aliases and it.args and not it.keywords):
                    continue
                scope = self.scope_of.get(id(it), self.module)
                calls = [c for b in body for c in ast.walk(b) if isinstance(c, ast.Call)]
                if any(self.draws(c, self.scope_of.get(id(c), scope)) for c in calls):
                    out.append((it, it.args[0] if len(it.args) == 1 else it.args[1], scope))
        return out

    def check(self, label, exprs, mode, scope, call):
        """``None`` when scaled or deferred to callers; else ``(line, name, node)`` of the unscaled size."""
        params = set()
        for e in exprs:
            k, p = self.depends(e, scope, call.lineno)
            if k:
                return None
            params |= p
        if params:
            fnode_ids = {f for f, _ in params}
            for f in fnode_ids:
                group = frozenset(n for g, n in params if g == f)
                req = self.requires.setdefault(f, [])
                if (group, mode) not in req:
                    req.append((group, mode))
                    self.changed = True
            return None
        if mode == "shape" and not any(c >= COUNT_MIN for e in exprs for c in self.constants(e, scope)):
            return None
        # where is the number written? a plain name of a constant (or a 1-tuple of one): at its assignment
        one = exprs[0] if len(exprs) == 1 else None
        while isinstance(one, (ast.Tuple, ast.List)) and len(one.elts) == 1:
            one = one.elts[0]
        if isinstance(one, ast.Name):
            found = self.lookup(one.id, self.scope_of.get(id(one), scope), call.lineno)
            if found and found[0] == "def" and found[2][0] in ("assign", "aug"):
                return found[1], one.id, None
        return (exprs[0].lineno if exprs else call.lineno), label, call

    def scan(self) -> list[tuple[int, str]]:
        calls = [(n, self.scope_of.get(id(n), self.module)) for n in ast.walk(self.tree) if isinstance(n, ast.Call)]
        self.drawing: set[int] = set()
        grew = True
        while grew:   # the chapter's functions that draw, through any depth of calls
            grew = False
            for node in ast.walk(self.tree):
                if isinstance(node, (ast.FunctionDef, ast.Lambda)) and id(node) not in self.drawing:
                    body = node.body if isinstance(node.body, list) else [node.body]
                    if any(self.draws(c, self.scope_of.get(id(c), self.module))
                           for b in body for c in ast.walk(b) if isinstance(c, ast.Call)):
                        self.drawing.add(id(node))
                        grew = True
        loops = self._loops()
        self.changed = True
        rounds = 0
        while self.changed and rounds < 50:
            self.changed, rounds, found = False, rounds + 1, {}
            for call, scope in calls:
                for label, exprs, mode in self.sites(call, scope):
                    hit = self.check(label, exprs, mode, scope, call)
                    if hit is not None:
                        found.setdefault((hit[0], hit[1]), hit)
            for it, stop, scope in loops:
                if not self.numeric(stop, scope):   # range(len(settings)): a loop over settings, not a count
                    continue
                hit = self.check("range", [stop], "count", scope, it)
                if hit is not None:
                    found.setdefault((hit[0], hit[1]), hit)
        for name, defs in self.module.defs.items():
            if not _size_word(name):
                continue
            for ln, how in defs:
                if how[0] in ("assign", "aug") and not any(   # a tuple or dict of sizes is a set of settings
                        isinstance(part, (ast.Tuple, ast.List, ast.Set, ast.Dict)) for part in self._pick(how[1], how[2])):
                    k, p = self._depends_def(name, ln, how, self.module, set())
                    if not k and not p:
                        found.setdefault((ln, name), (ln, name, None))
        return sorted(found)


def _statement_lines(tree, line: int) -> tuple:
    best = None
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and node.lineno <= line <= (node.end_lineno or node.lineno):
            if best is None or (node.end_lineno - node.lineno) < (best.end_lineno - best.lineno):
                best = node
    return tuple(range(best.lineno, best.end_lineno + 1)) if best else (line,)


def unscaled_sizes(path) -> list[Unscaled]:
    """Every Monte-Carlo size of chapter ``path`` (a MyST .md) that the knob does not reach (see above).

    Sizes marked ``# not scaled: <reason>`` on their statement are left out.
    """
    if not isinstance(path, (str, os.PathLike)) or not pathlib.Path(path).is_file() or pathlib.Path(path).suffix != ".md":
        raise ValueError(f"path must be a chapter's .md file, got {path!r}")
    path = pathlib.Path(path)
    try:
        text = path.read_text()
        source = code_lines(text)
        scan = _Scan(source)
    except (UnicodeDecodeError, SyntaxError, ValueError) as err:
        raise ValueError(f"path {str(path)!r}: its code cannot be read ({type(err).__name__}: {err})") from None
    lines = text.split("\n")
    out = []
    for line, name in scan.scan():
        span = _statement_lines(scan.tree, line)
        if any(MARKER.search(lines[i - 1]) for i in span):
            continue
        out.append(Unscaled(path.stem, line, name, lines[line - 1].strip(), span))
    return out


if __name__ == "__main__":
    sys.exit(main())
