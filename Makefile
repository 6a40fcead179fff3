# Two commands for a fresh machine (see README.md):
#   make book   build the website into _build/html (executes every chapter the cache lacks)
#   make test   unit tests and every chapter of _toc.yml as an nbval test (one pytest session, which
#               hands each passing chapter's outputs to the book's execution cache), then the book
#               build (which takes the chapters from that cache instead of executing them again), then
#               the real-browser test of the built site (headless Chromium)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every check a chapter makes is recorded here (gradnoise.evidence); the evidence page is built from it.
export GRADNOISE_EVIDENCE := $(CURDIR)/_build/evidence
DEVICE_CHECK = $(BIN)/python -c "import sys, gradnoise.device as d; sys.exit(d.main())"
PYTEST = $(BIN)/python -m pytest --nbval-lax --nbval-current-env

.PHONY: book test test-seeds test-scale student mutate pdf pack lock clean

# A venv whose creation was interrupted (no working pip inside) is made again, not reused.
$(STAMP): requirements.lock pyproject.toml
	@if ! $(BIN)/python -m pip --version >/dev/null 2>&1; then rm -rf $(VENV); $(PYTHON) -m venv $(VENV); fi
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# Before any build or test: the device must exist (one line if not), and a change in lib/, the pins,
# pyproject.toml or _config.yml drops every executed chapter (gradnoise.site.cache).
.PHONY: inputs
inputs: $(STAMP)
	@$(DEVICE_CHECK) >/dev/null
	@$(BIN)/python -m gradnoise.site.cache .

book: inputs
	$(BIN)/jupyter-book build . -n -W --keep-going

test: inputs
	GRADNOISE_CACHE=$(CURDIR)/_build/.jupyter_cache $(PYTEST) --durations=15 tests --ignore=tests/test_site.py --ignore=tests/test_pdf.py
	$(BIN)/python -m gradnoise.site.pack
	$(BIN)/jupyter-book build . -n -W --keep-going
	GRADNOISE_EDITION=student $(BIN)/jupyter-book build . -n -W --keep-going --path-output _build/student
	$(BIN)/python -m pytest tests/test_site.py

# The student edition: every exercise's solution (text and code) left out of the pages and of the
# downloadable notebooks; built into _build/student/html.
student: inputs
	GRADNOISE_EDITION=student $(BIN)/jupyter-book build . -n -W --keep-going --path-output _build/student

# The course pack (see chapters/instructors.md): every chapter as a notebook in the student and the full
# edition, the gradnoise wheel, pinned requirements and a README, in _build/pack/gradnoise-course/ and
# its zip (which the instructors page offers for download). `make test` builds it before the website.
pack: inputs
	$(BIN)/python -m gradnoise.site.pack

# The book as a PDF, both editions (Jupyter Book's LaTeX builder, XeLaTeX), from the chapters that make test
# executed (a chapter the cache lacks is executed first); then both sites again, which now link their PDFs
# (the student site only its own); then the PDFs read back (tests/test_pdf.py). Needs Debian's TeX Live
# (texlive-latex-extra, texlive-xetex, latexmk, fonts-freefont-otf) and poppler-utils; .ci/run installs them.
pdf: inputs
	$(BIN)/jupyter-book build . -n -W --keep-going --builder pdflatex
	GRADNOISE_EDITION=student $(BIN)/jupyter-book build . -n -W --keep-going --builder pdflatex --path-output _build/student
	$(BIN)/jupyter-book build . -n -W --keep-going
	GRADNOISE_EDITION=student $(BIN)/jupyter-book build . -n -W --keep-going --path-output _build/student
	$(BIN)/python -m pytest tests/test_pdf.py

# Every chapter and unit test under base seeds 1..20, JOBS seeds at a time (one torch thread each), each
# with its own evidence folder so that the evidence tests run for every seed too. Slow; not part of CI.
SEEDS ?= $(shell seq 1 20)
JOBS ?= 2
test-seeds: inputs
	@mkdir -p _build/seeds
	@echo $(SEEDS) | tr ' ' '\n' | xargs -P $(JOBS) -I{} sh -c '\
		GRADNOISE_SEED={} OMP_NUM_THREADS=1 GRADNOISE_EVIDENCE=$(CURDIR)/_build/seeds/evidence-{} \
		$(PYTEST) -q tests --ignore=tests/test_site.py --ignore=tests/test_pdf.py > _build/seeds/seed-{}.log 2>&1 \
		&& echo "seed {}: $$(tail -n 1 _build/seeds/seed-{}.log)" \
		|| { echo "seed {}: FAILED (_build/seeds/seed-{}.log)"; grep -E "^(FAILED|ERROR)" _build/seeds/seed-{}.log; exit 255; }'

# The scale test (not part of make test): every chapter of _toc.yml (or CHAPTERS="a b") under
# GRADNOISE_SCALE=SCALE, JOBS at a time (default 1 here), each in a child process with its own evidence
# folder; writes _build/scale/SCALE/report.md and report.json (per chapter: pass/fail, seconds, each
# check's worst |z|), prints the per-chapter table, and fails when a chapter fails. TIMEOUT: seconds per
# chapter. Slow: SCALE=10 is ten times every chapter's Monte Carlo.
SCALE ?= 10
TIMEOUT ?= 3600
test-scale: inputs
	$(BIN)/python -m gradnoise.site.scale --scale $(SCALE) --jobs $(if $(filter-out file,$(origin JOBS)),$(JOBS),1) --timeout $(TIMEOUT) $(CHAPTERS)

# Mutation testing (not part of make test): each chapter run once as it is and once per mutation of
# mutations/NAME.yml, in scratch copies, JOBS at a time; the outcomes go to mutations/results/NAME.json
# (committed; tests/test_mutations.py fails when a chapter or its list changed after its record).
# Default: every chapter whose record is stale or missing; CHAPTERS="a b" names some, ALL=1 runs every one.
CHAPTERS ?=
mutate: inputs
	$(BIN)/python -m gradnoise.site.mutation --jobs $(JOBS) $(if $(ALL),--all) $(CHAPTERS)

# Refresh requirements.lock from requirements.txt (uv's resolver, in a throw-away venv). It resolves from
# scratch (not preferring the old pins) and, where this machine offers the CPU build of torch in
# /opt/wheels, from that build's metadata, so the lock holds no CUDA packages; the local label (+cpu) is
# dropped so that `torch==X` matches whichever build of X the machine has.
lock:
	rm -rf _build/uv && $(PYTHON) -m venv _build/uv && _build/uv/bin/python -m pip install --quiet uv
	_build/uv/bin/uv pip compile requirements.txt --python-version 3.11 --custom-compile-command "make lock" \
		$$(test -d /opt/wheels && echo --find-links /opt/wheels) -o _build/uv/requirements.lock
	sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/' _build/uv/requirements.lock > requirements.lock
	! grep -n -i -E '^(nvidia-|cuda-|triton==)' requirements.lock

clean:
	rm -rf _build tests/_notebooks
