# Two entry points a fresh machine needs: `make demo` (the main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow lint docs bench

$(BIN)/osmo: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/osmo

demo: $(BIN)/osmo
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

test: $(BIN)/osmo
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q

test-slow: $(BIN)/osmo
	$(BIN)/pytest -q --runslow

docs: $(BIN)/osmo
	$(BIN)/python -m osmo_store.cli.docgen > docs/cli.md

bench: $(BIN)/osmo
	$(BIN)/python bench/bench_store.py
