"""The build's own guarantees: a stale site is impossible, and a missing device is one line."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import torch

from gradnoise.site import cache

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _book(tmp_path):
    (tmp_path / "lib" / "pkg").mkdir(parents=True)
    (tmp_path / "lib" / "pkg" / "mod.py").write_text("x = 1\n")
    for name in ("pyproject.toml", "requirements.txt", "requirements.lock", "_config.yml"):
        (tmp_path / name).write_text(f"# {name}\n")
    return tmp_path


def _fill(build):
    for name in cache.DERIVED:
        (build / name).mkdir(parents=True, exist_ok=True)
        (build / name / "stale").write_text("old output")


@pytest.mark.parametrize("changed", ["lib/pkg/mod.py", "pyproject.toml", "requirements.txt", "requirements.lock",
                                     "_config.yml"])
def test_any_input_change_drops_every_executed_chapter(tmp_path, changed):
    root = _book(tmp_path)
    assert cache.refresh(root)                        # first build: nothing to keep
    _fill(root / "_build")
    assert not cache.refresh(root)                    # unchanged inputs: the cache stays
    assert all((root / "_build" / name / "stale").exists() for name in cache.DERIVED)
    with (root / changed).open("a") as fh:
        fh.write("# changed\n")
    assert cache.refresh(root)                        # changed: the execution cache AND the doctrees go
    assert not any((root / "_build" / name).exists() for name in cache.DERIVED)
    assert not cache.refresh(root)


def test_chapter_sources_are_not_inputs(tmp_path):
    """A chapter's own change is MyST-NB's business (its cache is keyed on the code cells)."""
    root = _book(tmp_path)
    cache.refresh(root)
    (root / "chapters").mkdir()
    (root / "chapters" / "x.md").write_text("# a chapter\n")
    assert not cache.refresh(root)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_stops_pytest_and_the_device_check_with_one_line(tmp_path):
    env = dict(os.environ, GRADNOISE_DEVICE="cuda")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                          str(ROOT / "tests" / "test_stats.py")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "GRADNOISE_DEVICE='cuda' asks for CUDA" in out and "Traceback" not in out
    assert len(out.strip().splitlines()) <= 3, out
    check = subprocess.run([sys.executable, "-c", "import sys, gradnoise.device as d; sys.exit(d.main())"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert check.returncode == 2 and len(check.stderr.strip().splitlines()) == 1 and not check.stdout
