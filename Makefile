# moesaic: `make run` (the main job) and `make test` (the tests). Both set up .venv when needed.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
TORCH_SPEC ?= torch==2.13.0
DEBS := espeak-ng chromium

LOCK := requirements/lock.txt

.PHONY: setup run test test-fast test-compat lock upgrade-deps quality-study quality-study-real clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile $(LOCK)
	@command -v $(PY) >/dev/null || { echo "moesaic needs Python 3.11 ($(PY) not found); set PY=/path/to/python3.11"; exit 1; }
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi; \
	else echo "not root: skipping Debian packages ($(DEBS)); install them for speech output and browser tests"; fi
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" "uv>=0.5"
	@# every other package at the version the test suite passed on (requirements/lock.txt; make upgrade-deps moves it)
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -r $(LOCK)
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@$(BIN)/python scripts/check_deps.py all dev || { \
	  echo "requirements/lock.txt does not satisfy pyproject.toml: run 'make lock' (keeps pins) or 'make upgrade-deps'"; exit 1; }
	touch $(STAMP)

run: setup
	$(BIN)/moesaic demo

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

# the transformers-facing tests against each transformers release of the supported range (a table; see the script)
test-compat: setup
	$(BIN)/python scripts/test_compat.py $(VERSIONS)

# add what pyproject.toml gained to the lock, keeping every existing pin
lock: setup
	bash scripts/lock_deps.sh $(LOCK)

# re-resolve to the newest versions pyproject.toml allows in a throw-away venv, run the suite there, and write
# requirements/lock.txt only when it passes
upgrade-deps:
	bash scripts/upgrade_deps.sh "$(PY)" "$(TORCH_SPEC)" "$(LOCK)"

# the merged-model quality study (benchmarks/moe_quality.py; 2-11 min on 2 CPU cores), results in runs/quality
quality-study: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python benchmarks/moe_quality.py --out runs/quality

# the real-decoder quality study, Phase A (benchmarks/moe_quality_real.py): SmolLM2-135M experts, merges, mergekit
# peers; validation grid -> selection file -> test rows. The test stage scores only when the selection file is
# committed unmodified (a first run stops there: commit it, run again).
quality-study-real: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python benchmarks/moe_quality_real.py --out runs/quality_real

clean:
	rm -rf $(VENV) build *.egg-info
