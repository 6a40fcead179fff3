"""Bad input at every public function of ``gradnoise`` (issue 19): no crash, no hang, no memory blow-up,
nothing deleted outside a given root, no silent answer, and at least 95 % clean errors.

**What is called.** The test enumerates the public API itself: every callable defined in a module of
``gradnoise`` (``gradnoise.*``, ``gradnoise.site.*``, ``gradnoise.networks.*``; public = no leading
underscore, defined in that module, in ``__all__`` where the module has one). Dataclasses, named tuples,
exceptions and docutils/Sphinx node and directive classes are not called; any other class is. A function
without an entry in ``tests/bad_input_cases.py``, or an entry whose kinds do not name exactly the
function's parameters, fails :func:`test_every_public_function_has_cases`, so a function (or a
parameter) added later must be given its cases before the suite passes again.

For each function: the entry's valid call (its documented domain), then one call per bad value of each
argument, the others kept valid. The bad values come from the argument's *kind* (see the case module):
an explicit enumeration of every class the issue lists (0, -1, 2.5, True, "3", None, 10**12; NaN, inf,
the excluded ends, complex, strings; wrong dtype and ndim, empty, NaN/inf entries, non-tensors,
mismatched partners; ``None`` and int seeds for generators; ``..``, absolute and symlinked escapes for
paths), plus, for every count and every bounded real, two out-of-domain numbers drawn by Hypothesis
(``derandomize=True``, generation phase only, no database: the same values on every run, biased to the
boundaries of the domain, such as ``1.0`` for a momentum or ``-0.0``-adjacent tiny negatives). An
explicit enumeration is the core because the classes are few and categorical (each must be tried once,
which random sampling does not promise) and because each call runs in a child process with a time limit,
which Hypothesis's in-process loop and shrinking (which would re-run a hang) do not fit; Hypothesis
supplies the part it is made for, boundary-biased numbers. Garbage environment variables
(``GRADNOISE_SCALE``, ``_DEVICE``, ``_SEED``, ``_EVIDENCE``, ``_EDITION``) are a table of their own.
About 4,400 calls in all.

**How.** A worker factory (``python tests/bad_input_cases.py --zygote``) imports ``gradnoise`` once and
forks workers; two workers (one per core, at most two) make the calls one at a time each, with a few jobs
queued ahead in their pipes, under ``RLIMIT_AS`` = 6 GiB (a blow-up becomes a ``MemoryError``) and with
``GRADNOISE_DEVICE=cpu``. A call that does not answer within its limit, counted in the worker's CPU
seconds (so that a loaded machine does not turn a slow call into a hang; a call that blocks is stopped at
12 times the limit in wall-clock seconds), is a **hang**: 10 s (a refusal takes milliseconds and the
slowest valid call about a second), 60 s for a function's first call in a worker (it may import or
compile what it needs), 90 s for the notebook runners of ``site.mutation`` and ``site.scale``; a worker that dies is a **crash**; either way the worker and its children are killed
and a fresh one is forked in milliseconds. Each worker has its own scratch book ``root`` beside a
``victim`` folder (and a symlink ``root/link -> victim``), the current directory of every call; a file of
``victim`` that disappears during a call is a **deletion** (the worker checks after every call).
:func:`test_harness_tells_the_outcomes_apart` shows, with one synthetic call per class, that each outcome
is recognised.

**Outcomes** of a bad call: *clean* (``ValueError``/``TypeError`` raised inside ``gradnoise``, one line,
naming the argument — or, for a command-line ``main``, a non-zero exit status), *deep* (another exception,
raised elsewhere, several lines, or not naming the argument), *silent* (it returned), *hang*, *crash*,
*blow-up* (``MemoryError`` or a failed allocation), *deletion*. Set ``GRADNOISE_BAD_INPUT_REPORT`` to a
path to get the full list in Markdown there; ``GRADNOISE_BAD_INPUT_ONLY=SUBSTRING`` runs only the functions
whose qualified name contains it (for debugging).
"""
from __future__ import annotations

import collections
import dataclasses
import importlib
import inspect
import json
import math
import os
import pathlib
import pkgutil
import re
import select
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import bad_input_cases as cases  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIMIT = 10.0                 # CPU seconds per call (cases may raise it)
BACKSTOP = 12                # ... and at most this many times the limit in wall-clock seconds
VALID_LIMIT = 60.0           # CPU seconds for a function's first call in a worker (it may import or compile)
START_LIMIT = 120.0          # seconds for a fresh worker to import gradnoise
DRAWS = 2                    # Hypothesis draws per count / bounded real
WORKERS = max(1, min(2, os.cpu_count() or 1))
CLEAN_SHARE = 0.95
BAD = ("deep", "silent", "hang", "crash", "blow-up", "deletion")
NEVER = ("crash", "hang", "blow-up", "deletion", "silent")


# --- the public API ----------------------------------------------------------------------------------------

def _skipped_class(obj) -> bool:
    if issubclass(obj, BaseException) or dataclasses.is_dataclass(obj):
        return True
    if issubclass(obj, tuple) and hasattr(obj, "_fields"):
        return True
    try:
        from docutils import nodes
        from docutils.parsers.rst import Directive
        return issubclass(obj, (nodes.Node, Directive))
    except ImportError:
        return False


def public_api() -> dict[str, object]:
    """Every public callable of every module of gradnoise, by qualified name."""
    import gradnoise

    names = ["gradnoise"] + sorted(m.name for m in pkgutil.walk_packages(gradnoise.__path__, "gradnoise."))
    found = {}
    for modname in names:
        module = importlib.import_module(modname)
        listed = getattr(module, "__all__", None)
        for name, obj in vars(module).items():
            if name.startswith("_") or (listed is not None and name not in listed):
                continue
            if getattr(obj, "__module__", None) != modname or not callable(obj):
                continue
            if inspect.isclass(obj) and _skipped_class(obj):
                continue
            found[f"{modname}.{name}"] = obj
    return found


def _parameters(obj) -> list[str]:
    sig = inspect.signature(obj)
    return [p.name for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def test_every_public_function_has_cases():
    api = public_api()
    problems = []
    for qualname, obj in sorted(api.items()):
        entry = cases.CASES.get(qualname)
        if entry is None:
            problems.append(f"no bad-input cases for {qualname}: add them to tests/bad_input_cases.py")
            continue
        want, have = set(_parameters(obj)), set(entry.kinds)
        if want != have:
            problems.append(f"{qualname}: the cases name the parameters {sorted(have)}, the function has {sorted(want)}")
    for qualname in sorted(set(cases.CASES) - set(api)):
        problems.append(f"{qualname} has cases but is not a public function of gradnoise (renamed or removed?)")
    assert not problems, "\n".join(problems)


# --- the jobs -----------------------------------------------------------------------------------------------

def _hypothesis_values(kind) -> list:
    """``DRAWS`` out-of-domain numbers for a count or bounded real, drawn by Hypothesis (derandomized)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    key = kind.strategy_key
    if key is None:
        return []
    if key[0] == "count":
        _, lo, hi = key
        strategy = st.integers(max_value=lo - 1)
        if hi is not None:
            strategy = strategy | st.integers(min_value=hi + 1)
    else:
        if kind.lo is None and kind.hi is None:
            return []
        strategy = st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not kind.inside(x))
    found: list = []

    @settings(derandomize=True, database=None, max_examples=30, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value):
        if len(found) < DRAWS and repr(value) not in {repr(v) for v in found}:
            found.append(value)

    collect()
    return found


_DRAWN: dict = {}


def jobs() -> list[dict]:
    """Every call: ``case``, ``arg`` (None for the valid call), ``label``, and ``raw`` for a drawn number."""
    out = []
    for qualname, entry in cases.CASES.items():
        out.append({"case": qualname, "arg": None, "label": "valid call"})
        for arg, kind in entry.kinds.items():
            seen = set()
            for label, _ in kind.bad():
                if label not in seen:
                    seen.add(label)
                    out.append({"case": qualname, "arg": arg, "label": label})
            if kind.strategy_key is not None:
                if kind.strategy_key not in _DRAWN:
                    _DRAWN[kind.strategy_key] = _hypothesis_values(kind)
                for value in _DRAWN[kind.strategy_key]:
                    out.append({"case": qualname, "arg": arg, "label": f"{value!r} (Hypothesis)", "raw": value})
    for var, value, qualname, kwargs in cases.ENV_CASES:
        out.append({"case": qualname, "arg": var, "label": f"{var}={value}", "env": [var, value, qualname, kwargs]})
    only = os.environ.get("GRADNOISE_BAD_INPUT_ONLY")          # a substring of qualified names, for debugging
    return [j for j in out if only is None or only in j["case"]]


# --- the workers --------------------------------------------------------------------------------------------

class Zygote:
    """``python tests/bad_input_cases.py --zygote``: imports gradnoise once and forks workers on request."""

    def __init__(self, tmp: pathlib.Path):
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRADNOISE_")}
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GRADNOISE_DEVICE="cpu", PYTHONHASHSEED="0",
                   GRADNOISE_EVIDENCE=str(tmp / "evidence"),
                   PYTHONPATH=os.pathsep.join([str(ROOT / "lib"), env.get("PYTHONPATH", "")]))
        self.log = open(tmp / "workers.log", "w")
        self.proc = subprocess.Popen([sys.executable, str(pathlib.Path(cases.__file__)), "--zygote"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     cwd=tmp, env=env, start_new_session=True, text=True, bufsize=1)
        ready, _, _ = select.select([self.proc.stdout], [], [], START_LIMIT)
        if not ready or not json.loads(self.proc.stdout.readline() or "{}").get("ready"):
            self.stop()
            raise RuntimeError(f"the bad-input worker factory did not start; see {self.log.name}")

    def fork(self, jobs: pathlib.Path, results: pathlib.Path, tmp: pathlib.Path) -> int:
        self.proc.stdin.write(json.dumps({"jobs": str(jobs), "results": str(results), "tmp": str(tmp)}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["pid"]

    def stop(self):
        _kill_tree(self.proc.pid)
        self.proc.wait()
        self.log.close()


def _kill_tree(pid: int) -> None:
    """Kill ``pid`` and every process it started (children in sessions of their own too)."""
    import psutil

    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)


class Worker:
    """One forked worker with its own workspace (``root``, ``victim`` ...) and a pair of FIFOs."""

    def __init__(self, zygote: Zygote, tmp: pathlib.Path):
        self.zygote, self.tmp, self.pid, self.starts = zygote, tmp, None, 0
        self.W = cases.Workspace(tmp)
        self.W.make()
        self.inflight = collections.deque()          # (job, limit), oldest first
        self.deadline = math.inf
        self.seen: set = set()                       # functions called since this worker was forked

    def start(self):
        jobs, results = self.tmp / f"jobs-{self.starts}", self.tmp / f"results-{self.starts}"
        os.mkfifo(jobs)
        os.mkfifo(results)
        self.starts += 1
        self.pid = self.zygote.fork(jobs, results, self.tmp)
        self.seen = set()
        self.jobs = open(jobs, "w", buffering=1)          # blocks until the worker opens its end
        self.fd = os.open(results, os.O_RDONLY)
        self.buffer = b""
        deadline = time.monotonic() + START_LIMIT
        while True:
            line = self.line()
            if line is not None:
                break
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0] or not self.fill():
                raise RuntimeError("a bad-input worker did not start")
        if not line.get("ready"):
            raise RuntimeError(f"a bad-input worker did not start: {line}")

    def send(self, job, limit):
        if self.pid is None:
            self.start()
        if job["case"] not in self.seen:               # a function's first call in a fresh worker may import
            self.seen.add(job["case"])                  # or compile what it needs: it gets the valid call's limit
            limit = max(limit, VALID_LIMIT)
        self.jobs.write(json.dumps(job) + "\n")
        if not self.inflight:
            self.begin(limit)
        self.inflight.append((job, limit))

    def begin(self, limit, cpu=None):
        """The oldest queued job starts now: its wall-clock deadline, and the worker's CPU time at its start."""
        self.started = time.monotonic()
        self.deadline = self.started + limit
        self.cpu0 = cpu if cpu is not None else self.cpu()

    def cpu(self) -> float:
        import psutil
        try:
            t = psutil.Process(self.pid).cpu_times()
            return t.user + t.system
        except psutil.NoSuchProcess:
            return math.inf

    def hung(self, limit) -> bool:
        """Past the limit in CPU seconds (a loop that runs for ever), or in wall-clock seconds ``BACKSTOP``
        times over (a call that blocks): a loaded machine slows a call down but does not make it burn more CPU."""
        now = time.monotonic()
        if now < self.deadline:
            return False
        return self.cpu() - self.cpu0 > limit or now - self.started > BACKSTOP * limit

    def fill(self) -> bool:
        """Read what the worker wrote; False at end of file (the worker died)."""
        chunk = os.read(self.fd, 1 << 16)
        self.buffer += chunk
        return bool(chunk)

    def line(self):
        if b"\n" not in self.buffer:
            return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def stop(self):
        if self.pid is None:
            return
        _kill_tree(self.pid)
        try:
            self.jobs.close()
        except OSError:
            pass
        os.close(self.fd)
        self.pid = None


DEPTH = 8                    # jobs queued ahead in a worker's pipe (results still come one per job)


def run_all(job_list, tmp: pathlib.Path, workers: int):
    """Every job, on ``workers`` workers; yields ``(job, answer, worker)`` in completion order.

    Each worker has up to ``DEPTH`` jobs queued, so it never waits for this process between calls; the
    time limit runs for the oldest job from when the one before it answered. When a worker hangs or dies,
    the oldest job gets that outcome and the jobs queued behind it go to a fresh worker."""
    zygote = Zygote(tmp)
    pool = [Worker(zygote, tmp / f"w{i}") for i in range(workers)]
    pending = collections.deque(job_list)
    try:
        while pending or any(w.inflight for w in pool):
            for w in pool:
                while pending and len(w.inflight) < DEPTH:
                    job = pending.popleft()
                    entry = cases.CASES.get(job["case"])
                    limit = job.get("limit") or max(LIMIT, (entry.limit or 0) if entry is not None and "env" not in job else 0,
                                                    VALID_LIMIT if job["arg"] is None else 0)
                    try:
                        w.send(job, limit)
                    except BrokenPipeError:
                        pending.appendleft(job)
                        break
            busy = [w for w in pool if w.inflight]
            wait = min(1.0, max(0.0, min(w.deadline for w in busy) - time.monotonic()))
            ready, _, _ = select.select([w.fd for w in busy], [], [], wait)
            for w in busy:
                answers, dead = [], False
                if w.fd in ready:
                    dead = not w.fill()
                    while (res := w.line()) is not None:
                        answers.append(res)
                for res in answers:
                    job, _ = w.inflight.popleft()
                    if w.inflight:
                        w.begin(w.inflight[0][1], res.get("worker_cpu"))
                    yield job, res, w
                if not w.inflight:
                    continue
                if dead or w.hung(w.inflight[0][1]):
                    job, limit = w.inflight.popleft()
                    res = {"crash": "the worker died (killed by a signal, or exited)"} if dead else \
                        {"hang": f"no answer after {limit:.0f} s of CPU (or {BACKSTOP * limit:.0f} s)"}
                    w.stop()
                    if not w.W.victim_intact():
                        res["deleted"] = True
                        w.W.make_victim()
                    pending.extendleft(reversed([j for j, _ in w.inflight]))
                    w.inflight.clear()
                    yield job, res, w
    finally:
        for w in pool:
            w.stop()
        zygote.stop()


# --- outcomes -----------------------------------------------------------------------------------------------

def _names(job) -> tuple[str, ...]:
    if "probe" in job:
        return ("x",)
    if "env" in job:
        var, _, qualname, kwargs = job["env"]
        return (var,) + ((kwargs["name"],) if "name" in kwargs and qualname.endswith("allocation") else ())
    entry = cases.CASES[job["case"]]
    kind = entry.kinds[job["arg"]]
    out = (job["arg"],) + kind.names
    maker = dict(kind.bad()).get(job["label"])
    if maker is not None and getattr(maker, "__defaults__", None):
        value = maker.__defaults__[-1]
        if isinstance(value, cases.Replace):
            out += tuple(value)
    return out


def _names_argument(message: str, names) -> bool:
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", message) for n in names)


def classify(job, res, entry) -> tuple[str, str]:
    """``(outcome, detail)`` of one bad call."""
    if "hang" in res:
        return "hang", res["hang"]
    if "crash" in res:
        return "crash", res["crash"]
    if "returned" in res:
        if entry is not None and entry.cli and re.fullmatch(r"[1-9]\d*", res["returned"] or ""):
            return "clean", f"exit status {res['returned']}"
        return "silent", f"returned {res['returned']}"
    name, message, where = res["raised"], res["message"], res["where"]
    detail = f"{name}: {message.strip()}"
    if name == "MemoryError" or (name in ("RuntimeError", "OutOfMemoryError") and re.search(r"alloc|out of memory", message, re.I)):
        return "blow-up", detail
    if name == "SystemExit":
        if entry is not None and entry.cli and res.get("exit") not in (0, None):
            return "clean", f"exit status {res['exit']}"
        return "deep", detail
    mro = set(res["mro"])
    allowed = {"ValueError", "TypeError"} | ({"DeviceUnavailable"} if "env" in job else set())
    inside = f"{os.sep}gradnoise{os.sep}" in where
    one_line = "\n" not in message.strip() and message.strip() != ""
    if "probe" in job:
        inside = True
    if mro & allowed and inside and one_line and _names_argument(message, _names(job)):
        return "clean", detail
    why = [w for w, bad in (("not ValueError/TypeError", not mro & allowed), ("raised outside gradnoise", not inside),
                            ("several lines", not one_line), ("does not name the argument", not _names_argument(message, _names(job))))
           if bad]
    return "deep", f"{detail} [{'; '.join(why)}]"


def _short(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


@pytest.fixture(scope="module")
def results():
    """Run every job once; a list of ``(job, outcome, detail)``."""
    rows = []
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gradnoise-bad-input-") as tmp:
        starts, cpu, worker_cpu = 0, 0.0, {}
        workers = WORKERS
        for job, res, w in run_all(jobs(), pathlib.Path(tmp), workers):
            entry = cases.CASES.get(job["case"])
            if "table_error" in res:
                outcome, detail = "table-error", res["table_error"]
            elif job["arg"] is None:
                outcome = "valid-ok" if "returned" in res else "valid-raised"
                detail = res.get("returned") or res.get("hang") or res.get("crash") or f"{res.get('raised')}: {res.get('message')}"
            else:
                outcome, detail = classify(job, res, entry)
            if res.get("deleted"):
                outcome, detail = "deletion", f"files of victim/ deleted ({outcome}: {detail})"
            rows.append((job, outcome, _short(detail)))
            cpu += res.get("cpu", 0.0)
            if "worker_cpu" in res:
                worker_cpu[(id(w), w.pid)] = res["worker_cpu"]
            starts = max(starts, w.starts)
    _report(rows, time.monotonic() - start, cpu, workers, sum(worker_cpu.values()))
    return rows


def _module(qualname: str) -> str:
    return qualname.rsplit(".", 1)[0]


def _report(rows, seconds, cpu, workers, worker_cpu=0.0):
    bad_rows = [r for r in rows if r[0]["arg"] is not None and r[1] not in ("table-error",)]
    per_module = collections.defaultdict(collections.Counter)
    for job, outcome, _ in bad_rows:
        per_module["environment" if "env" in job else _module(job["case"])][outcome] += 1
    cols = ("clean",) + BAD
    lines = [f"# Bad-input probe of gradnoise: {len(rows)} calls ({len(rows) - len(bad_rows)} valid), "
             f"{seconds:.0f} s wall with {workers} worker(s); CPU: {cpu:.0f} s in the calls, {worker_cpu:.0f} s in the "
             "workers (the notebook kernels that site.mutation and site.scale start are not counted)", "",
             "| module | calls | " + " | ".join(cols) + " | clean % |", "|---|---:|" + "---:|" * (len(cols) + 1)]
    total = collections.Counter()
    for module in sorted(per_module):
        c = per_module[module]
        total.update(c)
        n = sum(c.values())
        lines.append(f"| {module} | {n} | " + " | ".join(str(c[k]) for k in cols) + f" | {100 * c['clean'] / n:.1f} |")
    n = sum(total.values()) or 1
    lines.append(f"| **all** | {n} | " + " | ".join(str(total[k]) for k in cols) + f" | {100 * total['clean'] / n:.1f} |")
    odd = [r for r in rows if r[1] in ("valid-raised", "table-error")]
    if odd:
        lines += ["", "## Valid calls that raised, and case-table errors", ""]
        lines += [f"- `{j['case']}` {j['label'] if j['arg'] else ''}: **{o}** {d}" for j, o, d in odd]
    lines += ["", "## Every non-clean bad call, by module", ""]
    by_module = collections.defaultdict(list)
    for job, outcome, detail in bad_rows:
        if outcome != "clean":
            by_module["environment" if "env" in job else _module(job["case"])].append((job, outcome, detail))
    order = {k: i for i, k in enumerate(("deletion", "crash", "hang", "blow-up", "silent", "deep"))}
    for module in sorted(by_module):
        lines += [f"### {module}", ""]
        for job, outcome, detail in sorted(by_module[module], key=lambda r: (order[r[1]], r[0]["case"])):
            func = job["case"].rsplit(".", 1)[1]
            lines.append(f"- **{outcome}** `{func}` {job['arg']} = {job['label']}: {detail}")
        lines.append("")
    text = "\n".join(lines)
    print("\n" + text)
    where = os.environ.get("GRADNOISE_BAD_INPUT_REPORT")
    if where:
        pathlib.Path(where).write_text(text + "\n")


def _listing(rows, outcomes):
    hits = [r for r in rows if r[1] in outcomes]
    return f"{len(hits)} call(s):\n" + "\n".join(
        f"  {o}: {j['case']}({j['arg']} = {j['label']}): {d}" for j, o, d in hits[:60])


PROBES = {"clean": "clean", "deep": "deep", "silent": "silent", "hang": "hang", "crash": "crash",
          "blowup": "blow-up", "deletion": "deletion"}


def test_harness_tells_the_outcomes_apart():
    """One synthetic call per outcome class (``probe_*`` in the case module): each is classified as such,
    and the calls after a hang and a crash still run (a fresh worker is forked)."""
    job_list = [{"case": "probe", "arg": "x", "label": name, "probe": name, "limit": 1.0} for name in PROBES]
    job_list += [dict(job_list[0], label="after the others")]
    got = {}
    with tempfile.TemporaryDirectory(prefix="gradnoise-bad-input-probe-") as tmp:
        for job, res, w in run_all(job_list, pathlib.Path(tmp), 1):
            outcome, detail = classify(job, res, None)
            if res.get("deleted"):
                outcome = "deletion"
            got[job["label"]] = (outcome, detail)
    want = dict(PROBES, **{"after the others": "clean"})
    assert {k: v[0] for k, v in got.items()} == want, got


def test_valid_calls_and_table(results):
    """Every valid call returns (else the case table is wrong, or the function is broken on its domain)."""
    assert not any(o in ("valid-raised", "table-error") for _, o, _ in results), \
        _listing(results, ("valid-raised", "table-error"))


@pytest.mark.parametrize("outcome", NEVER)
def test_never(results, outcome):
    """No crash, hang, memory blow-up, deletion outside the root, or silent answer."""
    assert not any(o == outcome for _, o, _ in results), _listing(results, (outcome,))


def test_clean_share(results):
    bad = [o for j, o, _ in results if j["arg"] is not None and o != "table-error"]
    share = sum(o == "clean" for o in bad) / len(bad)
    assert share >= CLEAN_SHARE, (f"{100 * share:.1f} % of {len(bad)} bad calls end in a clean one-line error "
                                  f"naming the argument (need {100 * CLEAN_SHARE:.0f} %); " + _listing(results, ("deep",)))
