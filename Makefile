# The two commands of the README's Quick start, and a few helpers.
# `make run` and `make test` create .venv themselves on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint install bench peer fuzz settings-table clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Set everything up and start the whole bot on SQLite with demo data.
run: $(STAMP)
	$(BIN)/renewdesk run --demo

## Lint (ruff) and types (mypy, on the modules held to it so far), as configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## Lint and types first, then every test, on SQLite and on a PostgreSQL the tests start themselves.
test: lint
	$(BIN)/python -m pytest

## Run every benchmark and write the figures into docs/benchmarks.md (BENCH_ARGS=--quick: a short check run).
bench: $(STAMP)
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

## Rewrite the README's settings table from handlers/settings.py.
settings-table: $(STAMP)
	$(BIN)/python -m renewdesk.docs_settings

## The django-helpdesk virtualenv (.peer/venv) that bench.ingest compares against.
peer:
	bench/setup_peer.sh

## The property tests of the mail pipeline and its doors, over 50,000 examples in all (about 20 minutes);
## the statistics at the end say how many each test ran (docs/fuzzing.md).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -p no:cacheprovider --hypothesis-show-statistics \
		tests/mail_ingest/test_fuzz.py tests/mail_ingest/test_fuzz_doors.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
