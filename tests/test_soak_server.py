"""Half a minute of 32 concurrent clients (half gRPC, half REST) against one embedded server.

Runs benchmarks/soak_server.py as a subprocess, the way its figures for
docs/reliability.md were produced, and holds it to: not one failed or wrong answer,
both protocols really served, and the server's RSS grew by less than
``RSS_GROWTH_BOUND_MIB`` between the end of a 5 s warm-up and the end of the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 32
SECONDS = 30  # docs/reliability.md has the minute-long run
WARMUP_S = 5
RSS_GROWTH_BOUND_MIB = 50


def test_half_a_minute_of_32_mixed_clients_without_an_error_or_a_leak(tmp_path):
    out = tmp_path / "soak.json"
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "soak_server.py"),
        "--clients",
        str(CLIENTS),
        "--seconds",
        str(SECONDS),
        "--warmup",
        str(WARMUP_S),
        "--json",
        str(out),
    ]
    run = subprocess.run(
        command,
        cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=SECONDS + 360,
    )
    assert out.is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    print("\nsoak:", json.dumps(result))
    assert result["errors"] == 0, result["error_samples"]
    assert run.returncode == 0, run.stderr[-3000:]
    assert result["clients"] == CLIENTS and result["grpc_clients"] == result["rest_clients"] == CLIENTS // 2
    assert result["seconds"] >= SECONDS
    # No client starved: each one got answers (speed itself is the benchmark's business).
    assert result["requests_min_per_client"] > 0, result
    assert result["rss_growth_mib"] < RSS_GROWTH_BOUND_MIB, result
