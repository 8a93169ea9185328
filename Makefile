# The README's commands. `make drill` and `make test` do all the set-up on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install drill test lint lab benchmark sandbox-up sandbox-down notebooks clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,sandbox]'
	touch $@

install: $(BIN)/.installed

## Start the sandbox, run the database-loss drill, stop the sandbox; prints where the report is.
drill: install
	$(BIN)/drlib sandbox up
	$(BIN)/drlib drill run postgres_database_loss; status=$$?; $(BIN)/drlib sandbox down; exit $$status

## The whole test suite on two workers (each starts its own PostgreSQL, Redis, S3 endpoint and API on free ports).
test: install
	$(BIN)/pytest -n 2

lint: install
	$(BIN)/ruff check drlib tests benchmarks
	$(BIN)/ruff format --check drlib tests benchmarks
	$(BIN)/mypy

## JupyterLab on the runbook notebooks, against the sandbox.
lab: install
	$(BIN)/python -m pip install -q -e '.[lab]'
	$(BIN)/drlib sandbox up
	$(BIN)/drlib lab

## Benchmarks against the raw tools: `drlib restore database` on a 1 GB database of five tables, and storage
## (20,000 files, 2 GiB); minutes each.
benchmark: install
	$(BIN)/python benchmarks/database_restore_command.py --size-mb 1024 --repeat 5
	$(BIN)/python benchmarks/database_restore_command.py --size-mb 4096 --repeat 3
	$(BIN)/python benchmarks/storage_benchmark.py

sandbox-up: install
	$(BIN)/drlib sandbox up

sandbox-down: install
	$(BIN)/drlib sandbox down

## Regenerate the notebooks from the scenario model (drlib/scenarios/) (committed without outputs).
notebooks: install
	$(BIN)/python -m drlib.notebooks

clean:
	rm -rf $(VENV) .drlib .pytest_cache .mypy_cache .ruff_cache
