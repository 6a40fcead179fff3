# Two commands for a fresh machine (see README.md):
#   make book   build the website into _build/html (executes every chapter)
#   make test   builds the site, then one pytest run: unit tests of gradnoise, every chapter of _toc.yml
#               as an nbval test, and the real-browser test of the built site (headless Chromium)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: book test test-seeds clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -e .
	touch $@

# MyST-NB caches executed chapters by cell source only; a change in lib/ must re-execute them, so the
# cache is dropped whenever the hash of lib/ differs from the one it was built with.
book: $(STAMP)
	@mkdir -p _build
	@h=$$(cat pyproject.toml $$(find lib -name '*.py' | sort) | sha256sum | cut -c1-16); \
	if [ "$$(cat _build/.lib-hash 2>/dev/null)" != "$$h" ]; then \
		echo "lib/ changed: dropping the execution cache"; rm -rf _build/.jupyter_cache; \
	fi; \
	$(BIN)/jupyter-book build . -n -W --keep-going && echo "$$h" > _build/.lib-hash

test: book
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env --durations=15 tests

# Every chapter (and unit test) under base seeds 1..5 (slow; not part of CI).
test-seeds: $(STAMP)
	for s in 1 2 3 4 5; do echo "== GRADNOISE_SEED=$$s"; \
		GRADNOISE_SEED=$$s $(BIN)/python -m pytest -q --nbval-lax --nbval-current-env tests --ignore=tests/test_site.py || exit 1; done

clean:
	rm -rf _build tests/_notebooks
