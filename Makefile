# Two entry points a fresh machine needs: `make demo` (the main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow test-browser browser lint docs bench

$(BIN)/osmo: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/osmo

demo: $(BIN)/osmo
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

# The report's browser test drives Debian's chromium (playwright's own browser download is
# not used): installed here when missing, as root or through sudo.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@[ -x $(CHROMIUM) ] || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

test: $(BIN)/osmo browser
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q

test-slow: $(BIN)/osmo browser
	$(BIN)/pytest -q --runslow

test-browser: $(BIN)/osmo browser
	$(BIN)/pytest -q --runslow tests/test_eval_report.py

docs: $(BIN)/osmo
	$(BIN)/python -m osmo_store.cli.docgen > docs/cli.md

bench: $(BIN)/osmo
	$(BIN)/python bench/bench_store.py
