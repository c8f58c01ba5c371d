# Two commands do all the set-up on a fresh machine:
#   make demo   -> builds .venv, installs prefect-beamline, runs `prefect-beamline demo`
#   make test   -> builds .venv, installs with test extras, runs lint, types and tests,
#                  then builds the wheel and tests it installed in a fresh virtualenv
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd ext/include/*.h)

$(BIN)/.installed: $(SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

.PHONY: install demo test lint wheel-check bench
install: $(BIN)/.installed

demo: install
	$(BIN)/prefect-beamline demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy prefect_beamline flows blocks ext benchmarks

test: lint
	$(BIN)/python -m pytest -ra
	$(MAKE) wheel-check

# The wheel as a facility installs it: built, installed (not editable) in a fresh
# virtualenv, demo and installed-package tests run outside the checkout.
wheel-check: install
	PYTHON=$(PYTHON) .ci/wheel-check

bench: install
	$(BIN)/python benchmarks/run.py all
