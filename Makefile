# dbward: two commands on a fresh machine.
#   make up     installs what is needed and starts dbward on its embedded defaults
#   make test   installs what is needed and runs the whole test suite (what CI runs)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml setup.py src/dbward/wire/_speedups.c src/dbward/audit/_syncer.c | sha1sum | cut -c1-12)
DATA   ?= .dbward

.PHONY: up test install services test-tools lint typecheck pytest bench demo clean docs

install: $(STAMP)

$(STAMP): pyproject.toml setup.py src/dbward/wire/_speedups.c src/dbward/audit/_syncer.c
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "dbward needs Python 3.11 or newer; found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,demo]'
	@rm -f $(VENV)/.installed-*
	@touch $@

up: install
	@test -f $(DATA)/secret.key || $(BIN)/dbward init --data-dir $(DATA)
	$(BIN)/dbward up --data-dir $(DATA)

demo: install
	$(BIN)/dbward demo

services:
	@bash scripts/ensure-services.sh

test-tools:
	@bash scripts/ensure-test-tools.sh

test: install services test-tools
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

docs: install
	$(BIN)/python -m dbward.audit.catalogue_docs > docs/audit-events.md
	$(BIN)/python -m dbward.api.openapi > docs/openapi.json

bench: install services
	@bash bench/run.sh $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
