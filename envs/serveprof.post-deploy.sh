#!/usr/bin/env bash
# Run by Snakemake inside the freshly created envs/serveprof.yaml environment
# (`--sdm conda`): install serveprof from the workflow's checkout, editable, so jobs
# run the checkout's code. The dependencies are already there (the yaml's pip list).
set -euo pipefail
if [ -z "${SERVEPROF_SOURCE:-}" ] || [ ! -f "${SERVEPROF_SOURCE}/pyproject.toml" ]; then
    echo "serveprof post-deploy: SERVEPROF_SOURCE='${SERVEPROF_SOURCE:-}' is not a serveprof checkout;" \
        "run snakemake with this repository's Snakefile (it sets SERVEPROF_SOURCE), or export" \
        "SERVEPROF_SOURCE=/path/to/serveprof before snakemake" >&2
    exit 1
fi
python -m pip install --no-deps --editable "${SERVEPROF_SOURCE}"
