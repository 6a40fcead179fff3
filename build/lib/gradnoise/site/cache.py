"""When the book's executed chapters are stale, and dropping them.

MyST-NB caches executed chapters keyed on their code cells alone, and Sphinx keeps its own environment
(``_build/.doctrees``) that decides which pages are out of date. Neither knows that a chapter's outputs
also depend on the ``gradnoise`` package, the pinned tools, ``pyproject.toml`` and ``_config.yml``. So
the build keeps a fingerprint of those inputs in ``_build/.inputs-hash``; when it differs, everything
derived from an execution is dropped — the execution cache, the doctrees, the executed notebooks, the
evidence records and the HTML — and every chapter is executed again.

``python -m gradnoise.site.cache [ROOT]`` does this check (the Makefile runs it before every build and
test run) and prints one line when it drops the cache.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import sys

INPUT_GLOBS = ("lib/**/*.py", "pyproject.toml", "requirements*.txt", "requirements*.lock", "_config.yml")
DERIVED = (".jupyter_cache", ".doctrees", "jupyter_execute", "html", "evidence", "student")
STAMP = ".inputs-hash"


def fingerprint(root) -> str:
    """A hash of every file that a chapter's outputs depend on besides its own source."""
    from .. import checks

    root = checks.path(root, "root", "dir")
    digest = hashlib.sha256()
    files = sorted({p for pattern in INPUT_GLOBS for p in root.glob(pattern) if p.is_file()})
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def refresh(root, build: str = "_build") -> bool:
    """Drop the derived build state of ``root`` if its inputs changed; return whether it was dropped."""
    from .. import checks

    root = checks.path(root, "root", "dir").resolve()
    if isinstance(build, bool) or not isinstance(build, (str, os.PathLike)):
        raise ValueError(f"build must be a path inside root, got {build!r}")
    out = (root / build).resolve()
    if out == root or root not in out.parents:
        raise ValueError(f"build must be a folder inside root {root}, got {build!r} (resolves to {out}): "
                         "the cache deletes what it finds there")
    stamp = out / STAMP
    now = fingerprint(root)
    if stamp.exists() and stamp.read_text().strip() == now:
        return False
    for name in DERIVED:
        shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(now + "\n")
    return True


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not isinstance(args, (list, tuple)) or len(args) > 1 or not all(isinstance(a, str) for a in args):
        print("usage: python -m gradnoise.site.cache [ROOT]", file=sys.stderr)
        return 2
    root = pathlib.Path(args[0] if args else ".")
    if not root.is_dir():
        print(f"gradnoise.site.cache: {str(root)!r} is not a folder", file=sys.stderr)
        return 2
    if refresh(root):
        print("gradnoise.site.cache: the package, the pins or _config.yml changed: every chapter will be executed again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
