# Two commands do all the set-up on a fresh machine:
#   make demo   -> builds .venv, installs prefect-beamline, runs `prefect-beamline demo`
#   make test   -> builds .venv, installs with test extras, runs lint, types and tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd ext/include/*.h)

$(BIN)/.installed: $(SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

.PHONY: install demo test lint bench
install: $(BIN)/.installed

demo: install
	$(BIN)/prefect-beamline demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy prefect_beamline flows blocks ext benchmarks

test: lint
	$(BIN)/python -m pytest -ra

bench: install
	$(BIN)/python benchmarks/run.py all
