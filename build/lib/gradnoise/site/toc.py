"""The book's table of contents (``_toc.yml``), read once for every part of the plumbing that needs it."""
from __future__ import annotations

import pathlib


def files(root) -> list[str]:
    """Every ``file:`` of ``ROOT/_toc.yml`` in order, as written (no suffix); ``[]`` without a ``_toc.yml``."""
    import yaml

    from .. import checks

    toc = checks.path(root, "root", "dir") / "_toc.yml"
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.append(str(node["file"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(toc.read_text()) if toc.exists() else {})
    return found
