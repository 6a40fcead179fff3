"""The course pack and the class grader, tried as a student and an instructor would.

One pack of two chapters is built (the same code builds all of them in `make pack`), installed into a
fresh virtual environment outside the repository by the two commands of its README, and two of its
student notebooks are executed there: with each answer filled in from the full edition's solution (every
check passes) and with one answer wrong (its check says what is wrong, in one line). The grader then
grades synthetic submissions: right, blank, one wrong answer, one that raises, one that loops, one with
an edited check cell and one with a deleted check cell.
"""
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from gradnoise import grade
from gradnoise.site import edition, pack

ROOT = Path(__file__).resolve().parents[1]
# Two fast chapters with checked exercises: a formula answer and a number answer.
CHAPTERS = ["staleness", "ortho-bias-order"]


def _answers(nb):
    """The solution of each answer cell of a full notebook, in order."""
    out = []
    for cell in nb.cells:
        if cell.cell_type == "code" and edition.BEGIN_ANSWER in cell.source:
            inner = cell.source.split(edition.BEGIN_ANSWER, 1)[1].split(edition.END_ANSWER, 1)[0]
            out.append(inner.strip("\n"))
    return out


def _fill(student, answers, wrong=None):
    """The student notebook with its stubs replaced by `answers` (the i-th by `wrong[1]` if wrong=(i, text))."""
    nb = nbformat.from_dict(json.loads(json.dumps(student)))
    stubs = [c for c in nb.cells if c.cell_type == "code" and c.source.strip() == edition.STUB]
    assert len(stubs) == len(answers) > 0
    for i, (cell, text) in enumerate(zip(stubs, answers)):
        cell.source = wrong[1] if wrong and wrong[0] == i else text
    return nb


def _wrong(answer_line):
    """The nearest wrong answer to `answer = <x>`: twice it (as a formula string where x is one)."""
    value = answer_line.split("=", 1)[1].strip()
    if value[0] in "\"'":
        return f"answer = '2*(' + {value} + ')'"
    return f"answer = 2 * ({value})"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("pack")
    archive = pack.build(ROOT, out, CHAPTERS)
    return out / pack.PACK, archive


def test_the_pack_holds_what_its_readme_says(built):
    folder, archive = built
    names = {p.name for p in folder.iterdir()}
    assert {"README.md", "requirements.txt", "student", "full", "wheels"} <= names
    assert sorted(p.stem for p in (folder / "student").glob("*.ipynb")) == sorted(CHAPTERS)
    assert sorted(p.stem for p in (folder / "full").glob("*.ipynb")) == sorted(CHAPTERS)
    with zipfile.ZipFile(archive) as z:
        assert f"{pack.PACK}/README.md" in z.namelist() and any(n.endswith(".whl") for n in z.namelist())
    readme = (folder / "README.md").read_text()
    commands = re.findall(r"```\n(.*?)```", readme, re.S)[0].strip().splitlines()
    assert len(commands) == 2
    reqs = (folder / "requirements.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", reqs, re.M) and re.search(r"^nbgrader==", reqs, re.M)
    assert re.search(r"^\./wheels/gradnoise-.*\.whl$", reqs, re.M)


def test_student_notebooks_carry_no_solutions_and_no_outputs(built):
    folder, _ = built
    for name in CHAPTERS:
        full = nbformat.read(folder / "full" / f"{name}.ipynb", as_version=4)
        student = nbformat.read(folder / "student" / f"{name}.ipynb", as_version=4)
        text = json.dumps(student)
        assert "{solution-start}" not in text and edition.BEGIN_ANSWER not in text
        for answer in _answers(full):                 # no answer line, and no answer file with the answer
            assert answer not in text and json.dumps(answer)[1:-1] not in text
        assert all(not c.get("outputs") for c in student.cells + full.cells if c.cell_type == "code")
        assert student.cells[1].source == pack.GUARD
        # the answer files in the wheel hold fingerprints only
    with zipfile.ZipFile(next((folder / "wheels").glob("*.whl"))) as z:
        blobs = " ".join(z.read(n).decode() for n in z.namelist() if "/answers/" in n)
    for name in CHAPTERS:
        for answer in _answers(nbformat.read(folder / "full" / f"{name}.ipynb", as_version=4)):
            value = answer.split("=", 1)[1].strip().strip("\"'")
            assert f'"{value}"' not in blobs and f": {value}," not in blobs


def _run(venv, nb, path):
    nbformat.write(nb, path)
    return subprocess.run([str(venv / "bin" / "jupyter"), "nbconvert", "--to", "notebook", "--execute", "--allow-errors",
                           "--ExecutePreprocessor.timeout=600", str(path), "--output", path.name],
                          cwd=path.parent, capture_output=True, text=True, timeout=900)


def _errors(path):
    nb = nbformat.read(path, as_version=4)
    return [(o.ename, o.evalue) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.output_type == "error"]


@pytest.mark.skipif(shutil.which("python3") is None, reason="needs python3 to make a venv")
def test_a_student_outside_the_repository(built, tmp_path):
    folder, _ = built
    work = tmp_path / "course"
    shutil.copytree(folder, work)
    readme = (work / "README.md").read_text()
    setup = re.findall(r"```\n(.*?)```", readme, re.S)[0].strip().splitlines()[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env["PIP_NO_COMPILE"] = "1"     # the README's command as it is; bytecode is compiled on first import instead
    done = subprocess.run(setup, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    venv = work / ".venv"
    # where gradnoise is missing, the first cell says so in one line
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    probe = subprocess.run([str(bare / "bin" / "python"), "-c", pack.GUARD], capture_output=True, text=True)
    assert probe.returncode != 0 and "gradnoise is not installed" in probe.stderr and "requirements.txt" in probe.stderr
    for name in CHAPTERS:
        full = nbformat.read(work / "full" / f"{name}.ipynb", as_version=4)
        student = nbformat.read(work / "student" / f"{name}.ipynb", as_version=4)
        answers = _answers(full)
        right = work / "student" / f"{name}-right.ipynb"
        done = _run(venv, _fill(student, answers), right)
        assert done.returncode == 0, done.stderr[-2000:]
        assert _errors(right) == [], f"{name}: {_errors(right)}"
        executed = json.dumps(nbformat.read(right, as_version=4))
        assert executed.count("right: ") == len(answers)
        if name != CHAPTERS[0]:
            continue
        wrong = work / "student" / f"{name}-wrong.ipynb"
        done = _run(venv, _fill(student, answers, (0, _wrong(answers[0]))), wrong)
        assert done.returncode == 0, done.stderr[-2000:]
        errors = _errors(wrong)
        assert len(errors) == 1 and errors[0][0] == "WrongAnswer", errors
        assert "the right answer is 1/2 times yours" in errors[0][1]


def test_grading_a_class(built, tmp_path):
    folder, _ = built
    name = CHAPTERS[0]
    full = nbformat.read(folder / "full" / f"{name}.ipynb", as_version=4)
    student = nbformat.read(folder / "student" / f"{name}.ipynb", as_version=4)
    answers = _answers(full)
    n = len(answers)
    subs = tmp_path / "submissions"

    def hand_in(who, nb):
        (subs / who).mkdir(parents=True)
        nbformat.write(nb, subs / who / f"{name}.ipynb")

    hand_in("all-right", _fill(student, answers))
    hand_in("blank", student)
    hand_in("one-wrong", _fill(student, answers, (0, _wrong(answers[0]))))
    hand_in("raises", _fill(student, answers, (0, "raise RuntimeError('my bug')")))
    hand_in("loops", _fill(student, answers, (0, "while True:\n    pass")))
    edited = _fill(student, answers, (0, _wrong(answers[0])))
    first_check = next(c for c in edited.cells if "grade" in c.metadata.get("nbgrader", {}) and c.metadata["nbgrader"]["grade"])
    first_check.source = "print('right')"
    hand_in("edits-check", edited)
    deleted = _fill(student, answers)
    deleted.cells = [c for c in deleted.cells if c is not next(
        d for d in deleted.cells if d.metadata.get("nbgrader", {}).get("grade"))]
    hand_in("deletes-check", deleted)
    (subs / "not-json").mkdir()
    (subs / "not-json" / f"{name}.ipynb").write_text("{ not json")
    rows = grade.grade(subs, folder, tmp_path / "grades", timeout=10)
    by = {r["student"]: r for r in rows}
    got = {s: (sum(r["scores"].values()), r["status"]) for s, r in by.items()}
    assert got == {"all-right": (n, "graded"), "blank": (0, "graded"), "one-wrong": (n - 1, "graded"),
                   "raises": (n - 1, "graded"), "loops": (n - 1, "timed out"), "edits-check": (n - 1, "tampered"),
                   "deletes-check": (n - 1, "tampered"), "not-json": (0, "did not run")}, got
    first = next(iter(by["one-wrong"]["scores"]))
    assert "1/2 times yours" in by["one-wrong"]["reasons"][first]
    assert "no answer yet" in by["blank"]["reasons"][first]
    assert "my bug" in by["raises"]["reasons"][first]
    assert "timed out" in by["loops"]["reasons"][first]
    assert "edited" in by["edits-check"]["note"] and "1/2 times yours" in by["edits-check"]["reasons"][first]
    assert "deleted" in by["deletes-check"]["note"] and by["deletes-check"]["reasons"][first] == "check cell deleted"
    with open(tmp_path / "grades" / "grades.csv") as f:
        table = {r["student"]: r for r in csv.DictReader(f)}
    assert float(table["all-right"]["total"]) == n and float(table["blank"]["total"]) == 0
    page = (tmp_path / "grades" / "grades.html").read_text()
    assert "all-right" in page and "timed out" in page and "1/2 times yours" in page


def test_the_set_up_cell_is_one_line_in_jupyter(capsys):
    """Where gradnoise is missing, IPython (Jupyter's kernel) shows the set-up cell's message alone."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    result = shell.run_cell(pack.GUARD.replace('find_spec("gradnoise")', 'find_spec("gradnoise_is_not_here")'))
    assert not result.success
    out = capsys.readouterr()
    lines = [line for line in (out.out + out.err).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("GradnoiseMissing: gradnoise is not installed"), lines
    assert "pip install -r requirements.txt" in lines[0]
