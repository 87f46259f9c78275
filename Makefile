# Two entry points for a fresh machine (see README):
#   make run    profile the workload (creates the environment on first use)
#   make test   run the linters, then the test suite
VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-stamp
# The venv's tools first, so rules and tests find `serveprof` and `snakemake`.
export PATH := $(BIN):$(PATH)

.PHONY: run test lint env perf

env: $(STAMP)

# serveprof with its `workflow` extra (Snakemake and the SLURM plugin: what runs the
# workflow) and `test` extra (pytest, the linters).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[workflow,test]'
	touch $(STAMP)

run: $(STAMP)
	snakemake --cores 1 workload/profiling/all

lint: $(STAMP)
	ruff check
	ruff format --check
	snakemake --lint
	snakefmt --check Snakefile rules

test: lint
	pytest

# Triton's perf_analyzer for benchmarks/bench_perf_analyzer.py (not needed by the tests): the `perf` extra
# puts it in the venv's bin/, and it links Debian's libb64-0d.
perf: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[perf]'
	@ldconfig -p | grep -q libb64.so.0d || { echo "perf_analyzer needs libb64-0d: apt-get install -y libb64-0d"; exit 1; }
