r"""Mutation testing of the book: every chapter shows that its checks can fail.

A check that passes whatever the prediction is proves nothing. For every chapter ``chapters/NAME.md``
the repository keeps a list of **mutations** in ``mutations/NAME.yml``: each replaces one piece of the
chapter's text — a prediction, a coefficient, a design — by its nearest wrong alternative, and says why
that alternative is the nearest::

    chapter: richardson
    mutations:
      - id: nested-variance-doubled           # unique in the file; a survivor is named by it in the chapter
        kind: prediction                      # prediction | coefficient | design | derivation
        old: "sigma_L2 / K)"                  # occurs exactly once in the chapter
        new: "2 * sigma_L2 / K)"
        why: "the independent-draw variance in place of the nested one"

``python -m gradnoise.site.mutation [--jobs 2] [NAME ...]`` (``make mutate``) runs the chapter once as
it is (the control: it must pass) and once per mutation, each in a scratch directory with its own
evidence folder — nothing in the working tree changes but the result files — and writes
``mutations/results/NAME.json``: the outcome of each mutant and a SHA-256 of the chapter and of its list.
A mutant is

- **caught** when a cell raised ``AssertionError`` (one of the chapter's checks failed) or
  ``WrongAnswer`` (an exercise's self-check, :mod:`gradnoise.course`, refused the mutated answer);
- **survived** when every cell passed (the chapter must name it and say why, see ``tests/test_mutations.py``);
- **error** when a cell raised anything else (the mutation broke the code instead of the claim: rewrite it);
- **timeout** when it ran past the limit.

The result files are committed: they are the record the evidence page shows, and the tests fail when a
chapter or its list changed after its results were recorded, so the page never shows stale power.
Mutations replace predictions, coefficients and designs — never an assertion's threshold
(:func:`validate` refuses a mutation whose changed text touches one).
"""
from __future__ import annotations

import argparse
import concurrent.futures as futures
import dataclasses
import datetime
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from .. import checks

MUTATIONS = "mutations"
RESULTS = "mutations/results"
KINDS = ("prediction", "coefficient", "design", "derivation")
OUTCOMES = ("caught", "survived", "error", "timeout")
CAUGHT = ("AssertionError", "WrongAnswer")     # a check failed: the chapter's, or an exercise's self-check
MIN_MUTATIONS = 6
# Names that hold an assertion's threshold: a mutation whose changed text touches one of these changes how
# strictly a check is held, not what it predicts.
THRESHOLD = re.compile(r"\b(z|z_max|bound|rtol|atol|tol|tolerance|threshold)\s*=(?!=)\s*([^,)\n]*)")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclasses.dataclass(frozen=True)
class Mutation:
    """One mutation of a chapter: ``old`` (occurring once) replaced by ``new``; see the module docstring."""

    id: str
    kind: str
    old: str
    new: str
    why: str


MAX_TIMEOUT = 86_400
"""Longest limit (seconds) on one chapter's run: a day."""


def sha256(path) -> str:
    """The SHA-256 of a file's bytes (hex)."""
    return hashlib.sha256(checks.path(path, "path", "file").read_bytes()).hexdigest()


def list_path(root, name: str) -> pathlib.Path:
    """Where chapter ``name``'s list of mutations lives under the book's ``root``."""
    return checks.path(root, "root", "dir") / MUTATIONS / f"{checks.plain_name(name, 'name')}.yml"


def result_path(root, name: str) -> pathlib.Path:
    """Where chapter ``name``'s mutation record lives under the book's ``root``."""
    return checks.path(root, "root", "dir") / RESULTS / f"{checks.plain_name(name, 'name')}.json"


def load(path) -> list[Mutation]:
    """The mutations of one list file, each checked for form (not yet against its chapter)."""
    import yaml

    path = checks.path(path, "path", "file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not YAML ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("mutations"), list):
        raise ValueError(f"path {str(path)!r}: needs a 'mutations:' list")
    if data.get("chapter") != path.stem:
        raise ValueError(f"{path}: 'chapter:' must be {path.stem!r}, got {data.get('chapter')!r}")
    out, seen = [], set()
    for n, row in enumerate(data["mutations"], 1):
        where = f"{path}: mutation {n}"
        if not isinstance(row, dict) or set(row) != {"id", "kind", "old", "new", "why"}:
            raise ValueError(f"{where}: needs exactly the keys id, kind, old, new, why")
        if not all(isinstance(row[k], str) for k in row):
            raise ValueError(f"{where}: every value must be a string (quote numbers)")
        if not _ID.match(row["id"]) or row["id"] in seen:
            raise ValueError(f"{where}: id {row['id']!r} must be unique, lower-case letters, digits and '-'")
        if row["kind"] not in KINDS:
            raise ValueError(f"{where}: kind must be one of {KINDS}, got {row['kind']!r}")
        if not row["old"] or row["old"] == row["new"]:
            raise ValueError(f"{where}: old must be non-empty and differ from new")
        if len(row["why"].strip()) < 10:
            raise ValueError(f"{where}: say why this is the nearest wrong alternative")
        seen.add(row["id"])
        out.append(Mutation(**row))
    return out


def _changed(old: str, new: str) -> tuple[str, str]:
    """The parts of ``old`` and ``new`` between their common prefix and suffix, widened to whole lines."""
    i = 0
    while i < min(len(old), len(new)) and old[i] == new[i]:
        i += 1
    j = 0
    while j < min(len(old), len(new)) - i and old[-1 - j] == new[-1 - j]:
        j += 1
    start = old.rfind("\n", 0, i) + 1
    end_old, end_new = old.find("\n", len(old) - j), new.find("\n", len(new) - j)
    return (old[start:end_old if end_old >= 0 else len(old)], new[start:end_new if end_new >= 0 else len(new)])


def validate(mutation: Mutation, text: str) -> None:
    """Refuse a mutation that does not occur exactly once in ``text`` or changes an assertion's threshold."""
    if not isinstance(mutation, Mutation):
        raise ValueError(f"mutation must be a Mutation, got {type(mutation).__name__}")
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    count = text.count(mutation.old)
    if count != 1:
        raise ValueError(f"mutation {mutation.id!r}: its old text occurs {count} times in the chapter (needs 1)")
    before, after = _changed(mutation.old, mutation.new)
    if THRESHOLD.findall(before) != THRESHOLD.findall(after):
        raise ValueError(f"mutation {mutation.id!r} changes an assertion's threshold "
                         f"({THRESHOLD.findall(before)} -> {THRESHOLD.findall(after)}): "
                         "mutate the prediction, not how strictly it is held")


def apply(mutation: Mutation, text: str) -> str:
    """``text`` with the mutation applied (after :func:`validate`)."""
    validate(mutation, text)
    return text.replace(mutation.old, mutation.new)


# --- running one notebook ---------------------------------------------------------------------------

def _execute(notebook: str, timeout: int) -> dict:
    """Run a notebook cell by cell in a fresh kernel; say which cell failed first, with what (child side)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(pathlib.Path(notebook).parent)}})
    start = time.monotonic()
    try:
        client.execute()
    except CellExecutionError as err:
        code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        failed = next((n for n, i in enumerate(code, 1)
                       if any(o.get("output_type") == "error" for o in nb.cells[i].get("outputs", []))), None)
        return {"status": "failed", "cell": failed, "ename": err.ename,
                "message": _one_line(err.evalue), "seconds": round(time.monotonic() - start, 1)}
    except CellTimeoutError:
        return {"status": "timeout", "cell": None, "ename": None, "message": f"a cell ran past {timeout} s",
                "seconds": round(time.monotonic() - start, 1)}
    except DeadKernelError as err:
        return {"status": "failed", "cell": None, "ename": "DeadKernelError", "message": _one_line(err),
                "seconds": round(time.monotonic() - start, 1)}
    return {"status": "passed", "cell": None, "ename": None, "message": "",
            "seconds": round(time.monotonic() - start, 1)}


def _one_line(text: str, limit: int = 240) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(text)).strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def run_text(text: str, name: str, timeout: int = 900, env: dict | None = None,
             evidence_dir: str | None = None) -> dict:
    """Execute MyST chapter ``text`` in a scratch directory, in a child process; return what happened.

    The child gets its own evidence folder (the book's records are never touched) and no execution
    cache (``evidence_dir`` keeps the records there instead); it is killed with its kernel after
    ``timeout`` seconds. Returns ``status`` (``passed``,
    ``failed`` or ``timeout``), the first failing code ``cell`` (1-based), the exception's name and its
    message on one line, and the seconds it ran.
    """
    import jupytext
    import nbformat

    if not isinstance(text, str):
        raise ValueError(f"text must be a chapter's MyST text (a str), got {type(text).__name__}")
    checks.plain_name(name, "name")
    timeout = checks.count(timeout, "timeout", minimum=1, maximum=MAX_TIMEOUT)
    if env is not None and (not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        raise ValueError("env must be a dict of str to str (an environment)")
    if evidence_dir is not None:
        evidence_dir = checks.path(evidence_dir, "evidence_dir", "dir", exists=False)
        if evidence_dir.exists() and not evidence_dir.is_dir():
            raise ValueError(f"evidence_dir {str(evidence_dir)!r} is not a folder")
    with tempfile.TemporaryDirectory(prefix=f"mutant-{name}-") as tmp:
        tmp = pathlib.Path(tmp)
        nb = tmp / f"{name}.ipynb"
        nbformat.write(jupytext.reads(text, fmt="md:myst"), nb)
        child_env = {k: v for k, v in (env or os.environ).items() if k not in ("GRADNOISE_CACHE",)}
        child_env["GRADNOISE_EVIDENCE"] = str(evidence_dir or tmp / "evidence")
        out = tmp / "outcome.json"
        cmd = [sys.executable, "-c", "import json, sys; from gradnoise.site.mutation import _execute; "
               "json.dump(_execute(sys.argv[1], int(sys.argv[2])), open(sys.argv[3], 'w'))",
               str(nb), str(timeout), str(out)]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=tmp, env=child_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout + 60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"status": "timeout", "cell": None, "ename": None,
                    "message": f"no result in {timeout} s", "seconds": round(time.monotonic() - start, 1)}
        if not out.exists():
            return {"status": "failed", "cell": None, "ename": "RunnerError",
                    "message": _one_line(err[-400:] if err else f"exit status {proc.returncode}"),
                    "seconds": round(time.monotonic() - start, 1)}
        result = json.loads(out.read_text())
        if result["status"] == "failed" and "Timeout" in (result["ename"] or ""):
            result["status"] = "timeout"
        return result


def outcome(result: dict) -> str:
    """What a mutant's run means: caught (an assertion failed), survived, error or timeout."""
    if not isinstance(result, dict) or result.get("status") not in ("passed", "failed", "timeout"):
        raise ValueError(f"result must be a run's outcome (status passed, failed or timeout), got {checks._short(result)}")
    if result["status"] == "passed":
        return "survived"
    if result["status"] == "timeout":
        return "timeout"
    return "caught" if result["ename"] in CAUGHT else "error"


# --- a chapter ----------------------------------------------------------------------------------------

def run_chapter(root, name: str, jobs: int = 2, timeout: int = 900, only: list[str] | None = None,
                log=print) -> dict:
    """Run chapter ``name``'s control and its mutants (``jobs`` at a time); return the result record.

    ``only`` runs just those mutation ids and keeps the other entries of a fresh earlier record.
    """
    root = checks.path(root, "root", "dir")
    chapter = checks.path(root / "chapters" / f"{checks.plain_name(name, 'name')}.md", "name", "file")
    jobs = checks.count(jobs, "jobs", minimum=1, maximum=64)
    timeout = checks.count(timeout, "timeout", minimum=1, maximum=MAX_TIMEOUT)
    if only is not None and (not isinstance(only, (list, tuple, set)) or not all(isinstance(i, str) for i in only)):
        raise ValueError(f"only must be a list of mutation ids, got {checks._short(only)}")
    checks.function(log, "log")
    listing = list_path(root, name)
    text = chapter.read_text()
    mutations = load(listing)
    for m in mutations:
        validate(m, text)
    if only is not None and not set(only) <= {m.id for m in mutations}:
        raise ValueError(f"only: no mutation {sorted(set(only) - {m.id for m in mutations})} in {name}'s list")
    todo = [m for m in mutations if only is None or m.id in only]
    kept = {}
    if only is not None:
        old = read_result(root, name)
        if old is None or state(root, name, old) != "fresh":
            raise ValueError(f"only: {name} has no fresh record to add to; run every mutation")
        kept = {r["id"]: r for r in old["mutations"] if r["id"] not in only}
    start = time.monotonic()
    control = run_text(text, name, timeout)
    log(f"{name}: control {control['status']} in {control['seconds']} s")
    record = {"chapter": name, "chapter_sha256": sha256(chapter), "mutations_sha256": sha256(listing),
              "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "seed": os.environ.get("GRADNOISE_SEED", "0"), "scale": os.environ.get("GRADNOISE_SCALE", "1"),
              "control": control, "mutations": []}
    if control["status"] != "passed":
        raise RuntimeError(f"{name}: the chapter itself fails ({control['ename']}: {control['message']}); "
                           "mutants of a failing chapter prove nothing")
    rows = dict(kept)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, jobs))))
    with futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        running = {pool.submit(run_text, apply(m, text), name, timeout, env): m for m in todo}
        for done in futures.as_completed(running):
            m, res = running[done], done.result()
            rows[m.id] = {"id": m.id, "kind": m.kind, "outcome": outcome(res), "cell": res["cell"],
                          "error": res["ename"], "message": res["message"], "seconds": res["seconds"]}
            log(f"{name}: {m.id}: {rows[m.id]['outcome']}"
                + (f" (cell {res['cell']}: {res['message'][:100]})" if res["status"] != "passed" else ""))
    record["mutations"] = [rows[m.id] for m in mutations]
    record["seconds"] = round(time.monotonic() - start, 1)
    return record


def read_result(root, name: str) -> dict | None:
    """Chapter ``name``'s mutation record (``None`` if it has none)."""
    path = result_path(root, name)
    return json.loads(path.read_text()) if path.exists() else None


def state(root, name: str, record: dict | None = None) -> str:
    """``fresh``, ``stale`` (the chapter or its list changed since the record) or ``missing``."""
    if record is not None and (not isinstance(record, dict) or "chapter_sha256" not in record):
        raise ValueError(f"record must be a mutation record (with chapter_sha256), got {checks._short(record)}")
    record = read_result(root, name) if record is None else record
    if record is None:
        return "missing"
    root = pathlib.Path(root)
    listing = list_path(root, name)
    if not listing.exists():
        return "missing"
    same = (record.get("chapter_sha256") == sha256(root / "chapters" / f"{name}.md")
            and record.get("mutations_sha256") == sha256(listing))
    return "fresh" if same else "stale"


def summary(record: dict) -> dict:
    """Counts of a record: total, and each outcome."""
    if not isinstance(record, dict) or not isinstance(record.get("mutations"), list) or not all(
            isinstance(r, dict) and r.get("outcome") in OUTCOMES for r in record["mutations"]):
        raise ValueError(f"record must be a mutation record (a 'mutations' list of outcomes), got {checks._short(record)}")
    counts = {k: 0 for k in OUTCOMES}
    for row in record["mutations"]:
        counts[row["outcome"]] += 1
    return {"total": len(record["mutations"]), **counts}


def chapters(root) -> list[str]:
    """Every chapter (a MyST notebook of ``_toc.yml``), in the book's order."""
    from . import toc

    root = checks.path(root, "root", "dir")
    found = toc.files(root)
    names = []
    for entry in found:
        path = (root / entry).with_suffix(".md")
        if path.parent.name == "chapters" and path.exists() and "kernelspec:" in path.read_text().split("\n---", 1)[0]:
            names.append(path.stem)
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gradnoise.site.mutation", description=__doc__.split("\n")[0])
    ap.add_argument("chapters", nargs="*", help="chapter names (default: every chapter with a stale or missing record)")
    ap.add_argument("--all", action="store_true", help="run every chapter, fresh records too")
    ap.add_argument("--only", nargs="+", metavar="ID", help="just these mutation ids (one chapter)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=900, help="seconds per mutant")
    ap.add_argument("--root", default=".")
    if argv is not None and (not isinstance(argv, (list, tuple)) or not all(isinstance(a, str) for a in argv)):
        ap.error(f"argv must be a list of strings, got {checks._short(argv)}")
    args = ap.parse_args(argv)
    if not (1 <= args.jobs <= 64) or not (1 <= args.timeout <= MAX_TIMEOUT):
        ap.error(f"--jobs must lie in [1, 64] and --timeout in [1, {MAX_TIMEOUT}]")
    if not pathlib.Path(args.root).is_dir():
        ap.error(f"--root {args.root!r} is not a folder")
    root = pathlib.Path(args.root)
    known = chapters(root)
    unknown = [c for c in args.chapters if c not in known]
    if unknown:
        print(f"mutation: no chapter {', '.join(unknown)} (chapters: {', '.join(known)})", file=sys.stderr)
        return 2
    names = args.chapters or [c for c in known if args.all or state(root, c) != "fresh"]
    missing = [c for c in names if not list_path(root, c).exists()]
    if missing:
        print(f"mutation: no list of mutations for {', '.join(missing)} (write {MUTATIONS}/NAME.yml)", file=sys.stderr)
        return 2
    if args.only and len(names) != 1:
        print("mutation: --only needs exactly one chapter", file=sys.stderr)
        return 2
    start, failed, table = time.monotonic(), False, []
    (root / RESULTS).mkdir(parents=True, exist_ok=True)
    for name in names:
        try:
            record = run_chapter(root, name, args.jobs, args.timeout, args.only)
        except (ValueError, RuntimeError) as err:
            print(f"mutation: {err}", file=sys.stderr)
            failed = True
            continue
        result_path(root, name).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        s = summary(record)
        table.append((name, s, record["seconds"]))
        failed |= bool(s["error"] or s["timeout"])
    print(f"\n{'chapter':28s} {'caught':>7s} {'survived':>9s} {'error':>6s} {'timeout':>8s} {'seconds':>8s}")
    for name, s, secs in table:
        print(f"{name:28s} {s['caught']:>4d}/{s['total']:<2d} {s['survived']:>9d} {s['error']:>6d} {s['timeout']:>8d} {secs:>8.0f}")
    caught = sum(s["caught"] for _, s, _ in table)
    total = sum(s["total"] for _, s, _ in table)
    print(f"{'all':28s} {caught:>4d}/{total:<4d} in {time.monotonic() - start:.0f} s with {args.jobs} job(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
