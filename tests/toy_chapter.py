"""The front matter that makes a Markdown file a MyST notebook (jupytext), for the toy chapters of the tests."""

FRONT_MATTER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""
