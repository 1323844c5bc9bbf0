# Two entry points for a fresh machine with Python 3.11+ and make:
#   make run   -- create .venv, install cobox (only what the daemon needs), run it
#   make test  -- also install the test and bench extras and the system packages the tests need
#                 (.ci/deps: Debian's chromium), then lint and run the suite on every core (pytest-xdist)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# One stamp per install: the daemon's dependencies, then the test/bench extras on top.
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test deps lint bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "cobox needs Python 3.11 or newer; set PYTHON=python3.11 (or newer)" or 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

deps:
	bash .ci/deps

run: $(RUN_STAMP)
	$(BIN)/cobox daemon

test: deps $(TEST_STAMP)
	$(BIN)/ruff check cobox networker storage tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n auto --dist worksteal -m 'not slow and not alone'
	$(BIN)/python -m pytest -q -m 'alone and not slow'

lint: $(TEST_STAMP)
	$(BIN)/ruff check cobox networker storage tests bench

bench: $(TEST_STAMP)
	$(BIN)/python bench/append.py
	$(BIN)/python bench/verify.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
