"""The size knob reaches every chapter, and the scale test's report is built right.

1. **The knob test.** ``GRADNOISE_SCALE`` multiplies every Monte-Carlo size through ``gn.trials``. A chapter
   that draws a trial count, a number of chains or seeds, or a step count the knob does not reach makes a
   scale run repeat the same sample. :func:`gradnoise.site.scale.unscaled_sizes` finds those statically (its
   module explains the rules); every one must either be marked in the chapter with a comment
   ``# not scaled: <reason>`` on its line, or stand in ``ALLOWED`` below with the reason it is fixed. An
   entry of ``ALLOWED`` that no longer matches an unscaled size fails too, so the list never goes stale.
2. The scanner on small made-up chapters: what counts as scaled, what as a size, where a finding points.
3. The helpers of ``make test-scale`` (``gradnoise.site.scale``): summarizing evidence records, the table,
   the Markdown and JSON report, and a run of a toy book with the chapter runner replaced.
"""
from __future__ import annotations

import functools
import json
import math
import pathlib
import textwrap

import pytest

from gradnoise.site import mutation, scale
from toy_chapter import FRONT_MATTER

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHAPTERS = mutation.chapters(ROOT)

# Sizes the knob does not reach, each with why it is fixed: (chapter, name, a fragment of its line) -> reason.
# `name` is what the finding calls it (a constant's name, or the parameter: steps, trials, range, size of
# torch.randn, ...); the fragment must occur in the line the finding points at. Entries marked TO REVIEW are
# Monte-Carlo sizes of a z-test or of a printed number that the knob arguably should reach: the chapter's
# owner (or the lead) either scales them or moves the reason into the chapter as `# not scaled: <reason>`.
# Prefer the marker in the chapter to an entry here.
HORIZON = "a horizon: the claim is about the state after this many steps, so more steps change the claim, not its precision"
ALLOWED = {
    ('sgd-sde', 'steps', 'eta0, 60, gen'): 'burn-in to stationarity from theta=0 ((1-eta h)^120 of the start left); the chains are scaled',
    ('sgd-sde', 'steps', 'round(T / e), gen'): "the SDE's time horizon T in steps of size e: the weak-error claim is at time T",
    ('sgd-sde', 'burn2', 'eta2, burn2, keep2'): 'burn-in of each chain towards stationarity; the chains (N // 2) are scaled',
    ('sgd-sde', 'keep2', 'eta2, burn2, keep2'): 'the averaging window, part of the exact prediction C(1 - (1 - eta h)^2k) averaged over it; the chains are scaled',
    ('sgd-sde', 'steps', 'sgd_chains(state, grad_q, eta2, 1, gen)'): "one step per pass of the averaging loop (the loop's count is keep2)",
    ('sgd-sde', 'burn3', 'N2, burn3, keep3'): 'burn-in of each chain towards stationarity; the chains (N2) are scaled',
    ('sgd-sde', 'keep3', 'N2, burn3, keep3'): 'the averaging window of each chain; the chains (N2) are scaled',
    ('sgd-sde', 'steps', 'sgd_chains(th2, grad2, eta3, 1, gen)'): "one step per pass of the averaging loop (the loop's count is keep3)",
    ('sgd-sde', 'range', 'for _ in range(2))'): 'the two Brownian increments of one coarse step (the 2 dt chain steps with their sum)',
    ('jackknife', 'size of torch.randn', 'u = torch.randn(30_000'): 'draws for the histogram of the limit law in a figure',
}


@functools.lru_cache(maxsize=None)
def _found(name: str) -> tuple:
    return tuple(scale.unscaled_sizes(ROOT / "chapters" / f"{name}.md"))


def _allowed(u) -> bool:
    return any(c == u.chapter and n == u.name and frag in u.code for (c, n, frag) in ALLOWED)


@pytest.mark.parametrize("name", CHAPTERS)
def test_knob_reaches_every_size(name):
    bad = [str(u) for u in _found(name) if not _allowed(u)]
    assert not bad, ("sizes GRADNOISE_SCALE does not reach (use gn.trials(...), or say why with "
                     "`# not scaled: <reason>` on that line):\n" + "\n".join(bad))


def test_allow_list_is_not_stale():
    stale = [f"{c}: {n} on a line with {frag!r}" for (c, n, frag) in ALLOWED
             if c not in CHAPTERS or not any(u.name == n and frag in u.code for u in _found(c))]
    assert not stale, "ALLOWED entries that match no unscaled size any more (remove them):\n" + "\n".join(stale)
    assert all(len(reason) > 20 for reason in ALLOWED.values())


# --- the scanner on made-up chapters ---------------------------------------------------------------------

HEADER = FRONT_MATTER + """
# A toy chapter

Some prose.
"""


def _scan(tmp_path, *cells, name="toy"):
    text = HEADER + "".join(f"\n```{{code-cell}} ipython3\n{textwrap.dedent(c).strip()}\n```\n\nMore prose.\n" for c in cells)
    path = tmp_path / f"{name}.md"
    path.write_text(text)
    return [(u.line, u.name, u.code) for u in scale.unscaled_sizes(path)], text.split("\n")


PRELUDE = """
import torch
import gradnoise as gn
from gradnoise import sampling, nqm, minibatch as mb
gen = gn.chapter("toy")
"""


def test_scaled_sizes_pass(tmp_path):
    found, _ = _scan(tmp_path, PRELUDE, """
        TRIALS = gn.trials(1000)
        X = sampling.block_means(G, 0.1, gen, TRIALS, 2, 8)
        Y = sampling.block_means(G, 0.1, gen, 3 * TRIALS, 2, 8)         # arithmetic on a scaled name
        Z = torch.randn(TRIALS, 4, 6, generator=gen)                     # one scaled dimension is enough
        W = torch.randn(X.shape[0], 500, generator=gen)                  # through a tensor drawn at a scaled size
        for n, trials in ((2, TRIALS), (4, 8 * TRIALS)):                 # loop over literal tuples
            sampling.block_means(G, 0.1, gen, trials, 1, n)
        T_SS = int(gn.device.scale() * 500)
        x = nqm.simulate(1.0, 1.0, 0.1, trials=T_SS, steps=T_SS, generator=gen)
        """)
    assert found == []


def test_unscaled_sizes_point_at_the_number(tmp_path):
    found, lines = _scan(tmp_path, PRELUDE, """
        TRIALS = 2000
        X = sampling.block_means(G, 0.1, gen, TRIALS, 2, 8)
        Y = sampling.block_means(G, 0.1, gen, 500, 2, 8)
        x = nqm.simulate(1.0, 1.0, 0.1, steps=50, trials=gn.trials(100), generator=gen)
        y = nqm.simulate(1.0, 1.0, 0.1, steps=gn.trials(50), generator=gen)
        """)
    named = {(name, lines[line - 1].strip()) for line, name, _ in found}
    assert named == {
        ("TRIALS", "TRIALS = 2000"),                                    # at its assignment, once
        ("trials", "Y = sampling.block_means(G, 0.1, gen, 500, 2, 8)"),  # a positional argument
        ("steps", "x = nqm.simulate(1.0, 1.0, 0.1, steps=50, trials=gn.trials(100), generator=gen)"),
        ("trials (default 2)", "y = nqm.simulate(1.0, 1.0, 0.1, steps=gn.trials(50), generator=gen)"),
    }
    # the line numbers are those of the .md file
    assert all(lines[line - 1].strip() == code for line, _, code in found)


def test_draw_shapes_need_a_large_constant(tmp_path):
    found, _ = _scan(tmp_path, PRELUDE, """
        G = torch.randn(4, 6, generator=gen)                          # the model's own shape
        E = torch.randn(32, 4, 6, generator=gen)                      # below COUNT_MIN: a design
        D = torch.randn(10_000, 4, 6, generator=gen)                  # a sample
        idx = torch.multinomial(p, 5000, replacement=True, generator=gen)
        U = sampling.random_orthogonal(4, gen, batch=(300,))
        plain = torch.randn(10_000, 4)                                # no generator: not the chapter's draw
        """)
    assert [name for _, name, _ in found] == ["size of torch.randn", "size of torch.multinomial", "batch"]


def test_chapter_functions_are_checked_at_their_calls(tmp_path):
    found, lines = _scan(tmp_path, PRELUDE, """
        TRIALS = gn.trials(100)

        def inner(k, count):
            return sampling.block_means(G, 0.1, gen, count, 1, k)

        def outer(k, trials=TRIALS):
            return inner(k, trials)

        a = outer(4)                      # the default: scaled
        b = outer(4, trials=TRIALS // 2)  # scaled
        c = outer(4, 700)                 # not: found at this call, two functions up
        d = inner(8, 3)                   # not
        draw = lambda size: torch.multinomial(p, size, generator=gen)
        e = draw(TRIALS)
        f = draw(5000)
        """)
    assert sorted((lines[line - 1].strip(), name) for line, name, _ in found) == [
        ("c = outer(4, 700)                 # not: found at this call, two functions up", "trials"),
        ("d = inner(8, 3)                   # not", "count"),
        ("f = draw(5000)", "size"),
    ]


def test_loops_that_draw_and_size_constants(tmp_path):
    found, _ = _scan(tmp_path, PRELUDE, """
        CHAINS, STEPS, LR = gn.trials(12), 200, 0.1
        T_steps = 60
        CHECKPOINT_STEPS = (10, 50, 400)  # a set of settings, not a size
        for _ in range(CHAINS):
            sampling.token_noise((4, 6), 0.1, gen)
        for t in range(STEPS):            # STEPS is already reported at its assignment
            sampling.token_noise((4, 6), 0.1, gen)
        for i in range(3):                # no draw in the loop: not a size
            print(i)
        xs = [sampling.token_noise((4, 6), 0.1, gen) for _ in range(7)]
        KS = [2, 4, 8]
        for i in range(len(KS)):          # a loop over settings, not a count
            sampling.token_noise((4, 6), 0.1 / KS[i], gen)
        """)
    assert sorted(name for _, name, _ in found) == ["STEPS", "T_steps", "range"]


def test_marker_says_why(tmp_path):
    found, _ = _scan(tmp_path, PRELUDE, """
        TRIALS = 2000   # not scaled: random matrices for a bound asserted on each
        STEPS = 300     # not scaled:
        x = nqm.simulate(1.0, 1.0, 0.1,
                         steps=50,
                         trials=TRIALS, generator=gen)   # not scaled: the horizon t = 50 is the claim
        """)
    assert [name for _, name, _ in found] == ["STEPS"]     # a marker needs a reason


def test_code_in_prose_does_not_move_the_cells(tmp_path):
    path = tmp_path / "toy.md"
    path.write_text(HEADER + "\nThe code below does `TRIALS = 2000` and\n\n    TRIALS = 2000\n\n"
                    "```{code-cell} ipython3\nimport gradnoise as gn\n```\n\n```{code-cell} ipython3\n"
                    "TRIALS = 2000\n```\n")
    lines = path.read_text().split("\n")
    [u] = scale.unscaled_sizes(path)
    assert u.line == len(lines) - 2 and lines[u.line - 2] == "```{code-cell} ipython3"


def test_code_lines_keep_the_md_line_numbers():
    text = (ROOT / "chapters" / f"{CHAPTERS[0]}.md").read_text()
    source, lines = scale.code_lines(text).split("\n"), text.split("\n")
    assert len(source) == len(lines)
    assert all(s == "" or s == l or s == "# " + l for s, l in zip(source, lines))
    assert "gn.chapter(" in "\n".join(source)


# --- the report of make test-scale -------------------------------------------------------------------------

RECORDS = [
    {"chapter": "a", "claim": "000-C1", "what": "mean", "kind": "agrees", "entries": 4, "worst": 1.2, "bound": 5.0, "resolution": 0.01},
    {"chapter": "a", "claim": "000-C1", "what": "mean", "kind": "agrees", "entries": 4, "worst": 3.1, "bound": 5.0, "resolution": 0.02},
    {"chapter": "a", "claim": "000-C1", "what": "mean", "kind": "rejects", "entries": 4, "worst": 40.0, "bound": 10.0, "resolution": None},
    {"chapter": "a", "claim": "000-C1", "what": "mean", "kind": "rejects", "entries": 4, "worst": 12.0, "bound": 10.0, "resolution": None},
    {"chapter": "a", "claim": None, "what": "bias | k", "kind": "agrees", "entries": 1, "worst": 0.4, "bound": 3.0, "resolution": None},
    {"chapter": "a", "claim": None, "what": "identity", "kind": "exact", "entries": 9, "worst": 1e-14, "bound": 1e-10, "resolution": None},
    {"chapter": "a", "claim": None, "what": "gap", "kind": "differs", "entries": 1, "worst": 0.5, "bound": 1e-6, "resolution": None},
]


def test_summarize_checks_keeps_the_closest_call():
    rows = {(r["kind"], r["what"]): r for r in scale.summarize_checks(RECORDS)}
    assert list(rows) == [("agrees", "mean"), ("rejects", "mean"), ("agrees", "bias | k"), ("exact", "identity"),
                          ("differs", "gap")]
    agree, reject = rows["agrees", "mean"], rows["rejects", "mean"]
    assert (agree["worst"], agree["bound"], agree["times"], agree["entries"], agree["resolution"]) == (3.1, 5.0, 2, 8, 0.02)
    assert (reject["worst"], reject["times"]) == (12.0, 2)              # a rejection: the smallest |z|
    assert reject["margin"] == pytest.approx(1.2) and agree["margin"] == pytest.approx(0.62)
    # a margin compares records held to different bounds
    mixed = scale.summarize_checks([dict(RECORDS[0], worst=2.0, bound=5.0), dict(RECORDS[0], worst=1.5, bound=3.0)])
    assert (mixed[0]["worst"], mixed[0]["bound"]) == (1.5, 3.0)      # 1.5/3 is nearer its bound than 2/5


def test_summary_reads_json_infinities():
    rows = scale.summarize_checks([dict(RECORDS[0], worst=None)])
    assert math.isinf(rows[0]["worst"])


def test_read_records(tmp_path):
    path = tmp_path / "a.jsonl"
    assert scale.read_records(path) == []
    path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")
    assert scale.read_records(path) == RECORDS
    path.write_text('{"kind": "agrees"}\n')
    with pytest.raises(ValueError, match="a.jsonl:1"):
        scale.read_records(path)


def _rows():
    ok = scale.chapter_row("a", {"status": "passed", "seconds": 12.34, "cell": None, "ename": None, "message": ""}, RECORDS)
    bad = scale.chapter_row("b", {"status": "failed", "seconds": 3.0, "cell": 7, "ename": "AssertionError",
                                  "message": "bias disagrees with the prediction: z = +6.10"}, RECORDS[:1])
    slow = scale.chapter_row("c", {"status": "timeout", "seconds": 99.0, "cell": None, "ename": None,
                                   "message": "no result in 60 s"}, [])
    return [ok, bad, slow]


def test_chapter_rows_and_totals():
    ok, bad, slow = _rows()
    assert ok["worst_agrees"]["what"] == "mean" and ok["weakest_rejects"]["worst"] == 12.0
    assert len(ok["checks"]) == 5 and ok["records"] == 7
    assert bad["weakest_rejects"] is None and slow["worst_agrees"] is None
    t = scale.totals([ok, bad, slow], wall=120.04)
    assert (t["chapters"], t["passed"], t["failed"], t["timeout"], t["checks"], t["seconds"], t["wall"]) == \
        (3, 1, 1, 1, 6, 114.3, 120.0)


def test_table_and_markdown():
    rows = _rows()
    text = scale.table(rows)
    lines = text.split("\n")
    assert lines[2].split()[:4] == ["a", "passed", "12.3", "5"] and "3.1/5" in lines[2] and "12/10" in lines[2]
    assert "cell 7: AssertionError: bias disagrees" in text
    report = {"scale": "10", "seed": "0", "device": "cpu", "jobs": 1, "recorded": "now",
              "totals": scale.totals(rows), "chapters": rows}
    md = scale.markdown(report)
    assert md.startswith("# Scale test at GRADNOISE_SCALE=10")
    assert "**1 of 3 chapters passed** (1 failed, 1 timed out)" in md
    assert "| a | passed | 12.3 | 5 | 3.1/5 (mean) | 12/10 (mean) |" in md
    assert "bias \\| k" in md                       # a | in a label does not break the table
    assert "Code cell 7: `AssertionError`" in md and "No check recorded." in md


def test_scale_label_and_names():
    assert scale.scale_label(10) == "10" and scale.scale_label(0.5) == "0.5" and scale.scale_label(100.0) == "100"
    for bad in (0, -1, math.inf):
        with pytest.raises(ValueError):
            scale.scale_label(bad)
    assert scale.parse_names([], ["a", "b"]) == ["a", "b"]
    assert scale.parse_names(["b a"], ["a", "b"]) == ["b", "a"]
    with pytest.raises(ValueError, match="no chapter c"):
        scale.parse_names(["a c"], ["a", "b"])


def test_run_writes_the_report(tmp_path, monkeypatch):
    """``run`` on a toy book, the chapter runner replaced by one that records evidence as a chapter would."""
    (tmp_path / "chapters").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n"
                                       "  - file: chapters/one\n  - file: chapters/two\n")
    for name in ("one", "two"):
        (tmp_path / "chapters" / f"{name}.md").write_text(HEADER)
    seen = {}

    def fake_run_text(text, name, timeout=900, env=None, evidence_dir=None):
        seen[name] = (env["GRADNOISE_SCALE"], pathlib.Path(evidence_dir))
        recs = [dict(r, chapter=name) for r in RECORDS[:3]]
        (pathlib.Path(evidence_dir) / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        if name == "two":
            return {"status": "failed", "cell": 2, "ename": "AssertionError", "message": "z = 9", "seconds": 1.0}
        return {"status": "passed", "cell": None, "ename": None, "message": "", "seconds": 2.0}

    monkeypatch.setattr(scale, "run_text", fake_run_text)
    stale = scale.out_dir(tmp_path, 10) / "evidence" / "old"
    stale.mkdir(parents=True)
    report = scale.run(tmp_path, 10.0, ["one", "two"], jobs=2, log=lambda *_: None)
    where = tmp_path / "_build" / "scale" / "10"
    assert not stale.exists()                                  # each run starts afresh
    assert seen == {n: ("10", where / "evidence" / n) for n in ("one", "two")}
    assert [r["chapter"] for r in report["chapters"]] == ["one", "two"]
    back = scale.load_report(where / "report.json")
    assert back["totals"]["passed"] == 1 and back["totals"]["failed"] == 1
    assert back["chapters"][0]["worst_agrees"]["worst"] == 3.1
    assert (where / "report.md").read_text() == scale.markdown(report)
    # two scales side by side
    ten, hundred = dict(back, scale="10"), dict(back, scale="100", chapters=back["chapters"][:1])
    table = scale.compare([ten, hundred]).split("\n")
    assert table[0].startswith("| chapter | 10×: s | 10×: worst agreement")
    assert table[2] == "| one | 2.0 | 3.1/5 | 2.0 | 3.1/5 |"
    assert table[3] == "| two | 1.0 | 3.1/5 **failed** (cell 2) |  |  |"
    assert scale.main(["--root", str(tmp_path), "--compare", "10"]) == 0
    assert scale.main(["--root", str(tmp_path), "--compare", "10", "3"]) == 2        # no report at 3x


def test_entry_points_refuse_bad_input(tmp_path):
    (tmp_path / "chapters").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: chapters/one\n")
    (tmp_path / "chapters" / "one.md").write_text(HEADER)
    for bad in (dict(root=None), dict(root=tmp_path / "missing"), dict(scale=0), dict(scale="3"), dict(scale=True),
                dict(names=["nope"]), dict(names="one"), dict(names=[]), dict(jobs=0), dict(timeout=10**12),
                dict(log=3)):
        kw = dict(root=tmp_path, scale=10, names=["one"], jobs=1, timeout=60, log=print) | bad
        with pytest.raises(ValueError, match=next(iter(bad))):      # the message names the argument
            scale.run(**kw)
    for bad in (None, 3, tmp_path, tmp_path / "missing.md", tmp_path / "_toc.yml"):
        with pytest.raises(ValueError, match="path"):
            scale.unscaled_sizes(bad)
    (tmp_path / "broken.md").write_text(HEADER + "\n```{code-cell} ipython3\ndef (:\n```\n")
    with pytest.raises(ValueError, match="cannot be read"):
        scale.unscaled_sizes(tmp_path / "broken.md")
    assert scale.main(["--scale", "nan", "--root", str(tmp_path)]) == 2
    assert scale.main(["--scale", "10", "--root", str(tmp_path), "nope"]) == 2
    assert scale.main(["--jobs", "2"]) == 2            # --scale is required
    assert scale.main(3) == 2
    (tmp_path / "chapters" / "one.md").write_text(HEADER + "\n```{code-cell} ipython3\nSTEPS = 300\n```\n")
    assert scale.main(["--unscaled", "--root", str(tmp_path)]) == 0


def test_chains_of_diffusion_are_the_rows_of_theta0(tmp_path):
    found, _ = _scan(tmp_path, PRELUDE, """
        from gradnoise import diffusion
        N = gn.trials(1000)
        a = diffusion.sgd_chains(torch.zeros(N, 1), grad, 0.1, gn.trials(60), gen)
        b = diffusion.sgd_chains(torch.zeros(5000, 1), grad, 0.1, gn.trials(60), gen)
        c = nqm.simulate(1.0, 1.0, 0.1, theta0=500.0, steps=gn.trials(9), trials=N, generator=gen)
        """)
    assert [name for _, name, _ in found] == ["theta0"]


def test_main_fails_when_a_chapter_fails(tmp_path, monkeypatch, capsys):
    (tmp_path / "chapters").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: chapters/one\n  - file: chapters/two\n")
    for name in ("one", "two"):
        (tmp_path / "chapters" / f"{name}.md").write_text(HEADER)
    outcome = {"one": "passed", "two": "passed"}

    def fake_run_text(text, name, timeout=900, env=None, evidence_dir=None):
        failed = outcome[name] != "passed"
        return {"status": outcome[name], "cell": 3 if failed else None, "ename": "AssertionError" if failed else None,
                "message": "z = +7.2" if failed else "", "seconds": 0.5}

    monkeypatch.setattr(scale, "run_text", fake_run_text)
    assert scale.main(["--scale", "10", "--root", str(tmp_path)]) == 0
    assert "2/2 passed" in capsys.readouterr().out
    outcome["two"] = "failed"
    assert scale.main(["--scale", "10", "--root", str(tmp_path), "two"]) == 1
    out = capsys.readouterr().out
    assert "0/1 passed, 1 failed" in out and "cell 3: AssertionError: z = +7.2" in out


def test_odd_code_does_not_break_the_scan(tmp_path):
    found, _ = _scan(tmp_path, PRELUDE, """
        %matplotlib inline
        x = x + 1 if "x" in dir() else 0                   # a name defined by itself
        def rec(n, trials):
            return rec(n - 1, trials) if n else sampling.block_means(G, 0.1, gen, trials, 1, 1)
        def star(*args, **kw):
            return sampling.block_means(*args, **kw)
        class Box:
            SIZE = 3
            def draw(self, trials=500):
                return sampling.block_means(G, 0.1, gen, trials, 1, 1)
        rec(3, gn.trials(10))
        star(G, 0.1, gen, 600, 1, 1)
        f = lambda *a, trials=gn.trials(5): sampling.block_means(G, 0.1, gen, trials, 1, 1)
        async def later():
            async with lock:
                pass
        if (n := gn.trials(7)) > 2:
            sampling.block_means(G, 0.1, gen, n, 1, 1)
        """)
    # what cannot be followed (a class's methods, *args) is not reported; nothing else is unscaled
    assert found == []


def test_generator_parameters():
    import inspect

    import torch

    def train(data, steps: int, draws: torch.Generator, trials: int = 2):
        ...

    def simulate(h, steps=1, trials=2, generator=None):
        ...

    assert scale._generator_params(inspect.signature(train)) == {"draws"}      # not a count, the generator
    assert scale._generator_params(inspect.signature(simulate)) == {"generator"}
    assert scale._generator_params(inspect.signature(lambda x, n: x)) == set()
