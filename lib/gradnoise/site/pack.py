"""The course pack: every chapter as a notebook that runs outside this repository, for a class.

``make pack`` (``python -m gradnoise.site.pack``) builds ``_build/pack/gradnoise-course/`` and its zip:

- ``student/<chapter>.ipynb`` — the student edition: no outputs, no solutions, every exercise's answer cell
  reduced to ``answer = ...``; made by nbgrader's ``generate_assignment`` (which also records the
  checksums of the check cells, so that the grader can tell an edited or removed check);
- ``full/<chapter>.ipynb`` — the full edition, solutions included, no outputs (for the instructor);
- ``wheels/gradnoise-<version>-py3-none-any.whl`` — this package (the exercises' answer files hold
  fingerprints, never answers);
- ``requirements.txt`` — every package the notebooks and the grader need, pinned to the versions this
  book is tested with, and the wheel;
- ``README.md`` — two commands that set up a fresh environment and open the notebooks, and the grader's.

Every notebook begins with the book's LaTeX macros and a cell that, where ``gradnoise`` is missing, says
so in one line with the pack's install command (no traceback).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .. import checks
from . import edition as _edition, toc

__all__ = ["PACK", "CHECK", "GUARD", "build", "main"]

PACK = "gradnoise-course"
ROOTS = ("torch", "sympy", "matplotlib", "scikit-learn", "pyyaml", "ipykernel", "nbgrader", "jupyterlab")
CHECK = re.compile(r"""\bcourse\.check\(\s*["']([A-Za-z0-9_\-]+)["']""")
GUARD = '''# The course pack's set-up check: the book's package, gradnoise, must be installed here.
import importlib.util
if importlib.util.find_spec("gradnoise") is None:
    class GradnoiseMissing(Exception):
        def _render_traceback_(self):      # Jupyter shows this one line, not a traceback
            return [f"GradnoiseMissing: {self}"]
    raise GradnoiseMissing("gradnoise is not installed in this Python. In the course pack's folder run "
                           "`python3 -m venv .venv && .venv/bin/pip install -r requirements.txt`, "
                           "then open the notebooks with `.venv/bin/jupyter lab student/` (see README.md).")'''
README = """# {title}: the course pack

Every chapter of *{title}* as a Jupyter notebook, with the package its numbers come from.

- `student/` — the notebooks to hand out: no solutions; each exercise has an answer cell
  (`answer = ...`) and a check cell that says whether the answer is right, or what is wrong with it, without
  showing the solution. Exercises whose answer is an argument say so and have no check.
- `full/` — the same notebooks with the solutions, for the instructor.
- `wheels/` — the package `gradnoise` {version}; `requirements.txt` — every package, pinned.

## Set up and open (Python 3.11 or later; Linux or macOS; on Windows use `.venv\\Scripts\\` for `.venv/bin/`)

```
python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
.venv/bin/jupyter lab student/
```

Run a notebook from the top (*Run → Run All Cells*). Each experiment runs on the CPU in seconds to a
minute; `GRADNOISE_DEVICE=cuda` runs it on a GPU, `GRADNOISE_SCALE=10` makes it ten times larger.

## Grading a class (instructors)

Collect each student's notebooks as `submissions/<student>/<chapter>.ipynb`, then, in this folder:

```
.venv/bin/python -m gradnoise.grade submissions --pack . --out grades
```

Each notebook runs in a fresh kernel with a time limit (`--timeout`, seconds per notebook); every check
cell is scored (1 point when it passes) with nbgrader's autograder, against the check cells of this pack
(an edited or deleted check cell is restored, and reported). `grades/grades.csv` and `grades/grades.html`
hold the table of students × exercises, with the one-line reason for each lost point and a status per
notebook (graded, tampered, timed out, did not run).
"""


def _chapter_names(root) -> list[str]:
    """The chapters of ``_toc.yml`` that are notebooks (a ``kernelspec`` in their front matter), in order."""
    root = checks.path(root, "root", "dir")
    out = []
    for entry in toc.files(root):
        path = root / f"{entry}.md"
        if path.is_file() and "kernelspec:" in path.read_text(encoding="utf-8").split("\n---", 1)[0]:
            out.append(Path(entry).name)
    return out


def _config(root: Path) -> dict:
    import yaml

    path = root / "_config.yml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _macros(root: Path) -> str:
    config = _config(root)
    macros = (config.get("sphinx", {}).get("config", {}).get("mathjax3_config", {}).get("tex", {})
              .get("macros", {}))
    lines = []
    for name, body in macros.items():
        if isinstance(body, list):
            body, n = body[0], body[1]
            lines.append(rf"\newcommand{{\{name}}}[{n}]{{{body}}}")
        else:
            lines.append(rf"\newcommand{{\{name}}}{{{body}}}")
    return "$" + " ".join(lines) + "$" if lines else ""


def _notebook(text: str, root, name: str):
    """The full-edition notebook of a chapter's MyST ``text``: the LaTeX macros and the set-up check first,
    every cell as in the chapter, no outputs."""
    import jupytext
    import nbformat

    root = checks.path(root, "root", "dir")
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    nb = jupytext.reads(text, fmt="md:myst")
    head = []
    macros = _macros(root)
    if macros:
        head.append(nbformat.v4.new_markdown_cell(macros))
    head.append(nbformat.v4.new_code_cell(GUARD))
    nb.cells = head + nb.cells
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["gradnoise"] = {"chapter": checks.plain_name(name, "name")}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{name}-{i}"[:64]
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def _source_notebook(nb):
    """nbgrader's source version of a full notebook: the solution blocks left out (as in the student
    edition) but the answers kept between nbgrader's markers, the answer cells marked as solution cells,
    the check cells as locked grade cells of one point (their ``grade_id`` the exercise's id), the set-up
    check locked."""
    import copy

    nb = _edition.strip_notebook(copy.deepcopy(nb), stub=False)
    seen = set()
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        meta = None
        if _edition.BEGIN_ANSWER in cell.source:
            meta = {"solution": True, "grade": False, "locked": False, "grade_id": f"answer-{i}"}
        elif (m := CHECK.search(cell.source)):
            if m.group(1) in seen:
                raise ValueError(f"exercise {m.group(1)!r} is checked twice in one notebook")
            seen.add(m.group(1))
            meta = {"solution": False, "grade": True, "locked": True, "points": 1, "grade_id": m.group(1)}
        elif cell.source == GUARD:
            meta = {"solution": False, "grade": False, "locked": True, "grade_id": "gradnoise-setup"}
        if meta is not None:
            cell.metadata["nbgrader"] = {"schema_version": 3, **meta}
    return nb


def _nbgrader(course: Path, *args, timeout: float | None = None):
    """Run ``nbgrader ARGS`` in the course folder ``course`` (its own console script, this Python)."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _write_config(course: Path, timeout: int = 600) -> None:
    """nbgrader's configuration for a course folder: the answer stub, the time limit of a cell."""
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        "c.CourseDirectory.course_id = 'gradnoise'\n"
        f"c.ClearSolutions.code_stub = {{'python': {_edition.STUB!r}}}\n"
        f"c.ExecutePreprocessor.timeout = {int(timeout)}\n"
        "c.ExecutePreprocessor.interrupt_on_timeout = True\n")


def _generate_student(sources: dict, course: Path, timeout: int = 600) -> dict:
    """nbgrader's ``generate_assignment`` for each ``{chapter: source notebook}`` in the course folder
    ``course`` (created): returns ``{chapter: path of the student (release) notebook}``."""
    import nbformat

    course = Path(course)
    course.mkdir(parents=True, exist_ok=True)
    _write_config(course, timeout)
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(course.resolve())
    config.CourseDirectory.course_id = "gradnoise"
    config.ClearSolutions.code_stub = {"python": _edition.STUB}
    bindir = str(Path(sys.executable).parent)   # nbgrader runs `alembic` (its database) from the PATH
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bindir, os.environ.get("PATH", "")])
    api = NbGraderAPI(config=config)             # in this process: one import of nbgrader for all chapters
    out = {}
    for name, nb in sources.items():
        src = course / "source" / name
        src.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, src / f"{name}.ipynb")
        result = api.generate_assignment(name, force=True)
        target = course / "release" / name / f"{name}.ipynb"
        if not result.get("success") or not target.exists():
            raise RuntimeError(f"nbgrader generate_assignment {name} failed: {result.get('error') or result.get('log')}")
        out[name] = target
    return out


def _requirements(roots=ROOTS) -> list[str]:
    """``name==version`` for every distribution the ``roots`` need (their dependency closure, with this
    Python's markers), at the versions installed here (the ones the book is tested with)."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    env = default_environment()
    pins, todo = {}, [canonicalize_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in pins:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise ValueError(f"{name} is needed by the pack but not installed here") from None
        version = dist.version.split("+")[0]
        pins[name] = version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                todo.append(canonicalize_name(req.name))
    pins.pop("gradnoise", None)
    return [f"{n}=={v}" for n, v in sorted(pins.items())]


def _project() -> Path:
    """The source tree of this gradnoise (the folder with its pyproject.toml): the pack is built from a clone."""
    here = Path(__file__).resolve().parents[3]
    if not (here / "pyproject.toml").is_file() or not (here / "lib" / "gradnoise").is_dir():
        raise ValueError("the course pack is built from a clone of the book's repository (gradnoise installed with pip -e)")
    return here


def _wheel(root: Path, out: Path) -> Path:
    """The wheel of the project at ``root``, built from a copy of its sources (setuptools writes a ``build``
    folder into the tree it builds: not into the clone, and never two builds into one folder)."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (root / name).exists():
                shutil.copy2(root / name, src / name)
        shutil.copytree(root / "lib" / "gradnoise", src / "lib" / "gradnoise",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                               "--wheel-dir", str(out), str(src)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the gradnoise wheel failed:\n{done.stderr[-2000:]}")
    wheels = sorted(out.glob("gradnoise-*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one gradnoise wheel in {out}, found {[w.name for w in wheels]}")
    return wheels[0]


def build(root, out=None, chapters=None) -> Path:
    """Build the course pack of the book at ``root`` into ``out`` (default ``root/_build/pack``): the folder
    ``gradnoise-course`` and ``gradnoise-course.zip``; ``chapters`` limits it to those names. Returns the zip."""
    import nbformat

    root = checks.path(root, "root", "dir").resolve()
    out = root / "_build" / "pack" if out is None else checks.path(out, "out", exists=False)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a folder, got the file {out}")
    if chapters is not None and (isinstance(chapters, (str, bytes)) or not isinstance(chapters, (list, tuple))
                                 or not all(isinstance(c, str) for c in chapters)):
        raise ValueError(f"chapters must be a list of chapter names, got {checks._short(chapters)}")
    project = _project()
    names = _chapter_names(root)
    if chapters:
        unknown = sorted(set(chapters) - set(names))
        if unknown:
            raise ValueError(f"not chapters of this book: {unknown}")
        names = [n for n in names if n in chapters]
    folder = out / PACK
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "full").mkdir(parents=True)
    (folder / "student").mkdir()
    full = {}
    for name in names:
        text = (root / "chapters" / f"{name}.md").read_text(encoding="utf-8")
        full[name] = _notebook(text, root, name)
        nbformat.write(full[name], folder / "full" / f"{name}.ipynb")
    with tempfile.TemporaryDirectory() as tmp:
        released = _generate_student({n: _source_notebook(nb) for n, nb in full.items()}, Path(tmp) / "course")
        for name, path in released.items():
            nb = nbformat.read(path, as_version=4)
            text = json.dumps(nb)
            if _edition.BEGIN_ANSWER in text or "{solution-start}" in text:
                raise RuntimeError(f"{name}: a solution is left in the student notebook")
            shutil.copy2(path, folder / "student" / f"{name}.ipynb")
    wheel = _wheel(project, folder / "wheels")
    pins = _requirements()
    (folder / "requirements.txt").write_text(
        "# Every package the notebooks and the grader need, at the versions the book is tested with;\n"
        "# then the book's own package. Install with: .venv/bin/pip install -r requirements.txt\n"
        + "\n".join(pins) + f"\n./wheels/{wheel.name}\n")
    title = _config(root).get("title", "the book")
    version = wheel.name.split("-")[1]
    (folder / "README.md").write_text(README.format(title=title, version=version))
    archive = out / f"{PACK}.zip"
    if archive.exists():
        archive.unlink()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(out))
    return archive


def main(argv=None) -> int:
    """``python -m gradnoise.site.pack [--root .] [--out DIR] [CHAPTER ...]``: build the course pack."""
    p = argparse.ArgumentParser(prog="python -m gradnoise.site.pack", description=__doc__.split("\n")[0])
    p.add_argument("--root", default=".", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("chapters", nargs="*")
    checks.argv(argv)
    args = p.parse_args(argv)
    try:
        archive = build(args.root, args.out, args.chapters or None)
    except ValueError as e:
        p.error(str(e))
    n = len(list((archive.parent / PACK / "student").glob("*.ipynb")))
    print(f"course pack: {archive.parent / PACK} ({n} chapters) and {archive} ({archive.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
