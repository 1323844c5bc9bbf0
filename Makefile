# Two entry points for a fresh machine with Python 3.11+ and make:
#   make run   -- create .venv, install cobox, run it
#   make test  -- create .venv, install cobox with its test extra, run the suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cobox daemon

test: $(STAMP)
	$(BIN)/ruff check cobox networker storage tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/append.py
	$(BIN)/python bench/verify.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
