"""gradnoise.course (the exercises' self-checks), the answer files of the book, and the student
edition's answer stubs."""
import json
import re
from pathlib import Path

import pytest
import sympy as sp

from gradnoise import course
from gradnoise.site import edition

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.md"))
CHECK = re.compile(r"""course\.check\(\s*["']([A-Za-z0-9_\-]+)["']""")


@pytest.fixture
def answers(tmp_path):
    course.register("ex-f", "formula", "15*c/(7*k**2)", symbols={"c": None, "k": (2, 100)}, powers=["k"],
                    expects="a formula in c and k", root=tmp_path)
    course.register("ex-n", "number", 0.3183, digits=3, rtol=0.005, root=tmp_path)
    course.register("ex-c", "choice", "Above", choices=["above", "below"], root=tmp_path)
    return tmp_path


def test_right_answers_in_any_equal_form(answers, capsys):
    c, k = sp.symbols("c k")
    for a in ("15*c/(7*k**2)", "(15/7)*c*k**-2", sp.Rational(15, 7) * c / k**2, "c*15/(k*7*k)"):
        assert course.check("ex-f", a, root=answers)
    assert course.check("ex-n", 1 / 3.1416, root=answers) and course.check("ex-c", " ABOVE ", root=answers)
    assert "right: ex-f" in capsys.readouterr().out


@pytest.mark.parametrize("answer, message", [
    ("-15*c/(7*k**2)", "wrong sign"),
    ("15*c/(14*k**2)", "the right answer is 2 times yours"),
    ("15*c/(7*k)", "wrong power of k: the right answer is yours times k^-1"),
    ("15*c/(7*k**(5/2))", "yours times k^1/2"),
    ("c + x", "may use only c, k"),
    ("c**(", "SymPy cannot read"),
    (..., "no answer yet: set `answer` (a formula in c and k)"),
    ([1, 2], "must be a formula"),
    ("15*c/(8*k**2)", "not the right formula"),
])
def test_wrong_formulas_say_what_is_wrong_in_one_line(answers, answer, message):
    with pytest.raises(course.WrongAnswer) as e:
        course.check("ex-f", answer, root=answers)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert e.value._render_traceback_() == [f"WrongAnswer: {e.value}"]     # Jupyter shows one line


@pytest.mark.parametrize("answer, message", [(-0.3183, "wrong sign"), (0.159, "the right answer is 2 times yours"),
                                             (0.35, "not the right number"), ("abc", "must be a number"),
                                             (float("nan"), "finite"), (True, "bool")])
def test_wrong_numbers(answers, answer, message):
    with pytest.raises(course.WrongAnswer, match=message):
        course.check("ex-n", answer, root=answers)


def test_wrong_choice(answers):
    with pytest.raises(course.WrongAnswer, match="one of above, below"):
        course.check("ex-c", "below", root=answers)


def test_an_answer_file_holds_a_fingerprint_not_the_answer(answers):
    text = (answers / "ex-f.json").read_text()
    assert "15" not in text.replace(json.loads(text)["fingerprint"], "") and "c/(7" not in text
    assert course.fingerprint("ex-f", "formula", "15*c/(7*k**2)", {"c": None, "k": (2, 100)}) == json.loads(text)["fingerprint"]
    # salted by exercise: the same answer to another exercise has another fingerprint
    assert course.fingerprint("ex-g", "formula", "15*c/(7*k**2)", {"c": None, "k": (2, 100)}) != json.loads(text)["fingerprint"]


def test_register_refuses_a_formula_with_no_value_at_the_points(tmp_path):
    with pytest.raises(ValueError, match="no finite value"):
        course.register("ex-bad", "formula", "1/(k - k)", symbols={"k": None}, root=tmp_path)


def test_cli_register_then_check(tmp_path, capsys):
    assert course.main(["register", "ex-cli", "formula", "b/k", "--symbol", "b", "--symbol", "k=2:50", "--power", "k",
                        "--root", str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(course.WrongAnswer, match="yours times k\\^1"):
        course.check("ex-cli", "b/k**2", root=tmp_path)


def test_every_check_in_the_book_has_an_answer_file_and_every_file_a_check():
    used = {m for path in CHAPTERS for m in CHECK.findall(path.read_text(encoding="utf-8"))}
    files = {p.stem for p in course.ANSWERS.glob("*.json")}
    assert used <= files, f"checks without an answer file: {sorted(used - files)}"
    assert files <= used, f"answer files no chapter checks: {sorted(files - used)}"
    for name in files:
        course.load(name)


def test_every_answer_cell_is_stubbed_in_the_student_edition():
    for path in CHAPTERS:
        text = path.read_text(encoding="utf-8")
        student = edition.strip_solutions(text)
        markers = lambda s: [l for l in s.splitlines() if l.strip() in (edition.BEGIN_ANSWER, edition.END_ANSWER)]
        assert not markers(student), path.name
        assert student.count(edition.STUB) == len(markers(text)) // 2, path.name
        # each check follows an answer cell
        for ex in CHECK.findall(text):
            before = text[: text.index(f'course.check("{ex}"')]
            assert before.rfind(edition.END_ANSWER) > before.rfind("course.check("), f"{path.name}: {ex} has no answer cell before it"


def test_stub_answers():
    text = "a\n    ### BEGIN SOLUTION\n    answer = 1\n    ### END SOLUTION\nb\n"
    assert edition.stub_answers(text) == f"a\n    {edition.STUB}\nb\n"
    with pytest.raises(ValueError, match="no ### END SOLUTION"):
        edition.stub_answers("### BEGIN SOLUTION\nanswer = 1\n")
