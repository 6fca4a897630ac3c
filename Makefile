# Konvergo mail. Two commands for a new user: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench sandbox clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

## Start the product on SQLite (var/) at http://127.0.0.1:8069, with the background worker.
run: install
	$(BIN)/konvergo migrate --no-input
	$(BIN)/konvergo firstrun
	$(BIN)/konvergo serve

## Run the whole test suite (KONVERGO_DATABASE_URL=postgresql://... to run it on PostgreSQL).
test: install
	tools/install-test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy konvergo
	KONVERGO_VAR_DIR=$(CURDIR)/var/test $(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy konvergo

## Benchmarks (not part of the tests): outgoing queue and incoming fetch.
bench: install
	KONVERGO_VAR_DIR=$(CURDIR)/var/bench $(BIN)/python bench/outbox.py
	KONVERGO_VAR_DIR=$(CURDIR)/var/bench $(BIN)/python bench/intake.py --runs 5

## Start the local Microsoft 365 sandbox (identity platform, SMTP, IMAP).
sandbox: install
	$(BIN)/konvergo sandbox

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
