"""The student edition strips every solution, and nothing else."""
import jupytext
import pytest

from conftest import chapter_sources
from gradnoise.site import edition

SAMPLE = """Intro.

:::{exercise}
:label: ex-a
Do it.
:::

```{solution-start} ex-a
:class: dropdown
```
The answer.

```{code-cell} ipython3
print(42)
```
```{solution-end}
```

After.
"""


def test_strip_solutions_keeps_the_exercise_and_drops_the_solution():
    out = edition.strip_solutions(SAMPLE)
    assert "Do it." in out and "Intro." in out and "After." in out
    assert "solution" not in out and "The answer." not in out and "print(42)" not in out


def test_unclosed_solution_is_an_error():
    with pytest.raises(ValueError, match="no {solution-end}"):
        edition.strip_solutions(SAMPLE.split("```{solution-end}")[0])


@pytest.mark.parametrize("path", chapter_sources(), ids=lambda p: p.stem)
def test_every_chapter_loses_its_solutions_in_both_forms(path):
    text = path.read_text()
    stripped = edition.strip_solutions(text)
    assert "{solution-start}" not in stripped and "{solution-end}" not in stripped
    assert "{exercise}" in stripped, f"{path.stem} has no exercise"
    nb = edition.strip_notebook(jupytext.read(path))
    joined = "\n".join(c.source for c in nb.cells)
    assert "{solution-start}" not in joined and "{solution-end}" not in joined and "{exercise}" in joined
    # every code cell of the notebook that is not part of a solution survives
    kept = [c.source for c in jupytext.reads(stripped, fmt="md:myst").cells if c.cell_type == "code"]
    assert [c.source for c in nb.cells if c.cell_type == "code"] == kept


def test_edition_variable(monkeypatch):
    monkeypatch.delenv(edition.ENV_VAR, raising=False)
    assert edition.edition() == "full"
    monkeypatch.setenv(edition.ENV_VAR, "student")
    assert edition.edition() == "student"
    monkeypatch.setenv(edition.ENV_VAR, "teacher")
    with pytest.raises(ValueError, match="GRADNOISE_EDITION"):
        edition.edition()
