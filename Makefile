# Two entry points for a fresh machine (see README):
#   make run    profile the workload (creates the environment on first use)
#   make test   run the test suite, snakemake --lint and snakefmt --check
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-stamp
# The venv's tools first, so rules and tests find `serveprof` and `snakemake`.
export PATH := $(BIN):$(PATH)

.PHONY: run test lint env

env: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	snakemake --cores 1 workload/profiling/all

lint: $(STAMP)
	snakemake --lint
	snakefmt --check Snakefile rules

test: lint
	pytest
