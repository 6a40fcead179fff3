"""Mutation testing: every chapter's checks are shown able to fail, and the record of that is never stale.

For every chapter: its list ``mutations/NAME.yml`` holds at least six mutations that each occur once in
the chapter and leave every assertion's threshold alone; its record ``mutations/results/NAME.json`` was
made from the chapter and the list as they are now (SHA-256 of both), with a passing control run, every
mutation run, none broken; and every mutation that survived is named in the chapter's prose ("mutation
`ID`") where the chapter says why its checks cannot tell it apart. ``make mutate`` refreshes a record.

The runner itself (:mod:`gradnoise.site.mutation`) is tested on a toy book of one chapter.
"""
from __future__ import annotations

import json
import pathlib
import re
import textwrap

import pytest

from gradnoise.site import mutation
from toy_chapter import FRONT_MATTER

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHAPTERS = mutation.chapters(ROOT)


def _prose(path: pathlib.Path) -> str:
    return re.sub(r"```\{code-cell\}.*?```", "", path.read_text(), flags=re.S)


def test_every_chapter_is_covered():
    assert len(CHAPTERS) >= 20
    lists = sorted(p.stem for p in (ROOT / mutation.MUTATIONS).glob("*.yml"))
    assert sorted(CHAPTERS) == lists, "every chapter has one list of mutations, and every list a chapter"


@pytest.mark.parametrize("name", CHAPTERS)
def test_list_is_valid(name):
    text = (ROOT / "chapters" / f"{name}.md").read_text()
    mutations = mutation.load(mutation.list_path(ROOT, name))
    assert len(mutations) >= mutation.MIN_MUTATIONS, (
        f"{name}: {len(mutations)} mutations; every chapter needs at least {mutation.MIN_MUTATIONS}")
    for m in mutations:
        mutation.validate(m, text)


@pytest.mark.parametrize("name", CHAPTERS)
def test_record_is_fresh_and_complete(name):
    record = mutation.read_result(ROOT, name)
    assert record is not None, f"{name}: no mutation record; run `make mutate CHAPTERS={name}`"
    assert mutation.state(ROOT, name, record) == "fresh", (
        f"{name}: the chapter or its list of mutations changed after the record was made; "
        f"run `make mutate CHAPTERS={name}`")
    assert record["control"]["status"] == "passed"
    listed = [m.id for m in mutation.load(mutation.list_path(ROOT, name))]
    assert [row["id"] for row in record["mutations"]] == listed
    broken = [f"{row['id']} ({row['outcome']}: {row['message']})" for row in record["mutations"]
              if row["outcome"] in ("error", "timeout")]
    assert not broken, f"{name}: mutations that break the code instead of the claim: {broken}"


@pytest.mark.parametrize("name", CHAPTERS)
def test_every_survivor_is_explained_in_its_chapter(name):
    record = mutation.read_result(ROOT, name)
    if record is None:
        pytest.fail(f"{name}: no mutation record")
    prose = _prose(ROOT / "chapters" / f"{name}.md")
    unexplained = [row["id"] for row in record["mutations"]
                   if row["outcome"] == "survived" and f"mutation `{row['id']}`" not in prose]
    assert not unexplained, (f"{name}: surviving mutations not explained in the chapter's prose "
                             f"(a paragraph naming \"mutation `ID`\" and why the checks cannot tell it apart): "
                             f"{unexplained}")


# --- the runner, on a toy book ---------------------------------------------------------------------

TOY = FRONT_MATTER + textwrap.dedent('''\
    # Toy

    ```{code-cell} ipython3
    x = 2 + 2
    ```

    ```{code-cell} ipython3
    assert abs(x - 4) <= 0, "arithmetic"
    y = 1
    ```
    ''')


def _toy(tmp_path, mutations: str) -> pathlib.Path:
    (tmp_path / "chapters").mkdir()
    (tmp_path / "mutations").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n- file: chapters/toy\n")
    (tmp_path / "chapters" / "toy.md").write_text(TOY)
    (tmp_path / "mutations" / "toy.yml").write_text("chapter: toy\nmutations:\n" + textwrap.dedent(mutations))
    return tmp_path


def test_runner_outcomes_and_staleness(tmp_path):
    root = _toy(tmp_path, '''\
        - {id: five, kind: prediction, old: "x = 2 + 2", new: "x = 2 + 3", why: "one more than the truth"}
        - {id: unchecked, kind: design, old: "y = 1", new: "y = 2", why: "nothing checks y at all"}
        - {id: broken, kind: design, old: "x = 2 + 2", new: "x = 2 + nothing", why: "a name error, not a claim"}
        ''')
    assert mutation.chapters(root) == ["toy"]
    assert mutation.state(root, "toy") == "missing"
    assert mutation.main(["--root", str(root), "--jobs", "2", "toy"]) == 1      # a broken mutation fails the run
    record = json.loads(mutation.result_path(root, "toy").read_text())
    assert [r["outcome"] for r in record["mutations"]] == ["caught", "survived", "error"]
    assert record["mutations"][0]["cell"] == 2 and "arithmetic" in record["mutations"][0]["message"]
    assert mutation.summary(record) == {"total": 3, "caught": 1, "survived": 1, "error": 1, "timeout": 0}
    assert mutation.state(root, "toy") == "fresh"
    (root / "chapters" / "toy.md").write_text(TOY + "\nA sentence more.\n")
    assert mutation.state(root, "toy") == "stale"


def test_a_failing_chapter_is_not_mutated(tmp_path):
    root = _toy(tmp_path, '- {id: five, kind: prediction, old: "x = 2 + 2", new: "x = 2 + 3", why: "one more than the truth"}\n')
    (root / "chapters" / "toy.md").write_text(TOY.replace("x = 2 + 2", "x = 2 + 1"))
    (root / "mutations" / "toy.yml").write_text((root / "mutations" / "toy.yml").read_text().replace("2 + 2", "2 + 1"))
    with pytest.raises(RuntimeError, match="the chapter itself fails"):
        mutation.run_chapter(root, "toy", jobs=1, log=lambda *_: None)


def test_a_mutant_that_runs_too_long_is_a_timeout():
    text = TOY.replace("x = 2 + 2", "import time; time.sleep(30); x = 4")
    assert mutation.run_text(text, "toy", timeout=3)["status"] == "timeout"


@pytest.mark.parametrize("old, new, message", [
    ("x = 5", "x = 3", "occurs 0 times"),
    ("2", "3", "occurs 2 times"),
    ("<= 0, \"arithmetic\"", "<= 1, \"arithmetic\"", None),
])
def test_validate_occurrences(old, new, message):
    m = mutation.Mutation("m", "prediction", old, new, "the nearest wrong one")
    if message is None:
        mutation.validate(m, TOY.replace("x = 2 + 2", "x = 4"))
    else:
        with pytest.raises(ValueError, match=message):
            mutation.validate(m, TOY)


@pytest.mark.parametrize("old, new, refused", [
    ("stats.assert_agrees(est, se, 1.0, z=5.0, what='m')", "stats.assert_agrees(est, se, 1.0, z=50.0, what='m')", True),
    ("assert_close(a, b, rtol=1e-12)", "assert_close(a, b, rtol=1e-1)", True),
    ("assert_differs(a, b, atol=1e-9)", "assert_differs(a, b)", True),
    ("stats.assert_agrees(est, se, 1.0, z=5.0, what='m')", "stats.assert_agrees(est, se, 2.0, z=5.0, what='m')", False),
    ("pred = sigma2 / (n - 1)", "pred = sigma2 / n", False),
])
def test_a_threshold_is_never_mutated(old, new, refused):
    m = mutation.Mutation("m", "prediction", old, new, "the nearest wrong one")
    if refused:
        with pytest.raises(ValueError, match="threshold"):
            mutation.validate(m, "a\n" + old + "\nb\n")
    else:
        assert mutation.apply(m, "a\n" + old + "\nb\n") == "a\n" + new + "\nb\n"


@pytest.mark.parametrize("body, message", [
    ("- {id: a, kind: prediction, old: x, new: y}\n", "exactly the keys"),
    ("- {id: a, kind: guess, old: x, new: y, why: because it is near}\n", "kind must be"),
    ("- {id: a, kind: design, old: x, new: x, why: because it is near}\n", "differ"),
    ("- {id: a, kind: design, old: x, new: y, why: near}\n", "say why"),
    ("- {id: a, kind: design, old: x, new: y, why: because it is near}\n"
     "- {id: a, kind: design, old: z, new: y, why: because it is near}\n", "unique"),
    ("- {id: a, kind: design, old: x, new: 2, why: because it is near}\n", "string"),
])
def test_bad_lists_are_refused(tmp_path, body, message):
    path = tmp_path / "toy.yml"
    path.write_text("chapter: toy\nmutations:\n" + body)
    with pytest.raises(ValueError, match=message):
        mutation.load(path)
    path.write_text("chapter: other\nmutations: []\n")
    with pytest.raises(ValueError, match="'chapter:' must be 'toy'"):
        mutation.load(path)


def test_unknown_chapter_is_one_line(tmp_path, capsys):
    root = _toy(tmp_path, '- {id: five, kind: prediction, old: "x = 2 + 2", new: "x = 2 + 3", why: "one more than the truth"}\n')
    assert mutation.main(["--root", str(root), "nochapter"]) == 2
    assert "no chapter nochapter" in capsys.readouterr().err


def test_a_refused_exercise_answer_is_caught():
    """An exercise's self-check refusing a mutated answer (gradnoise.course.WrongAnswer) is a caught mutant."""
    failed = {"status": "failed", "cell": 3, "ename": "WrongAnswer", "message": "wrong sign", "seconds": 1.0}
    assert mutation.outcome(failed) == "caught"
    assert mutation.outcome(failed | {"ename": "NameError"}) == "error"
