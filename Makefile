# Set-up and main commands.  `make quickstart` and `make test` work on a fresh clone:
# each creates .venv when missing and installs tfrec into it first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TFREC_DATA_DIR ?= $(abspath ../shared/data)
PYTEST_ARGS ?=

.PHONY: quickstart test test-fast venv clean benchmarks

venv: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/tfrec quickstart

# The whole suite, on TEST_WORKERS processes (pytest-xdist; each file's tests stay on one worker,
# so its fixtures are built once); pytest exits non-zero (5) if it collects nothing.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Skips tests marked slow.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

benchmarks: $(STAMP)
	$(PY) benchmarks/data_prepare.py
	$(PY) benchmarks/input_pipeline.py

clean:
	rm -rf $(VENV) artifacts .pytest_cache
