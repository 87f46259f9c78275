"""``serveprof aggregate`` on fixture stats JSONs: exact file formats, provenance, refusals."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SUMMARY_HEADER = (
    "model,batch_size,count,mean_ms,std_ms,min_ms,max_ms,p50_ms,p90_ms,p95_ms,p99_ms,throughput_per_s,"
    "first_init_ms,first_aot_ms,requests_target,truncated,truncated_reason,low_sample_percentiles,"
    "cpu_util_pct,rss_peak_mb,rss_mean_mb,gpu_util_pct,gpu_mem_mb,protocol,backend,"
    # Added later, after the contract's first columns.
    "disturbed,foreign_cpu_pct,steal_pct,attempts,disturbance_reasons,"
    "server_count,server_mean_ms,server_p50_ms,server_p99_ms,serialization"
)
PROVENANCE_KEYS = {
    "model",
    "source",
    "weights",
    "backend",
    "backend_version",
    "tensorflow_version",
    "serveprof_version",
    "python_version",
    "cpu_model",
    "cpu_count",
    "gpu",
    "hostname",
    "config_hash",
    "git_revision",
    "started_at",
}


def stats_doc(batch: int, mean: float, started_at: str, truncated: bool = False, model: str = "tiny") -> dict:
    return {
        "model": model,
        "batch_size": batch,
        "protocol": "grpc",
        "first_init_ms": 100.0 + batch,
        "first_aot_ms": 50.0 + batch,
        "warmup_requests": 10,
        "requests_target": 20,
        "truncated": truncated,
        "truncated_reason": "max_seconds (0.5 s) reached after 7 requests" if truncated else None,
        "stats": {
            "count": 7 if truncated else 20,
            "mean_ms": mean,
            "std_ms": 0.5,
            "min_ms": mean - 1,
            "max_ms": mean + 2,
            "p50_ms": mean,
            "p90_ms": mean + 1,
            "p95_ms": mean + 1.5,
            "p99_ms": mean + 2,
            "throughput_per_s": batch * 1000 / mean,
            "low_sample_percentiles": ["p90", "p95", "p99"],
        },
        "resources": {
            "cpu_util_pct": 150.0,
            "rss_peak_mb": 300.0,
            "rss_mean_mb": 290.0,
            "gpu_util_pct": None,
            "gpu_mem_mb": None,
            "samples": 12,
            "interval_s": 0.2,
        },
        "server": {"backend": "embedded", "version": "0.1.0", "command": ["serveprof", "serve"]},
        "input": {"kind": "random", "seed": 0, "shapes": {"images": [batch, 8, 8, 3]}},
        "provenance": {
            "hostname": "node7",
            "cpu_model": "Example CPU @ 2.0GHz",
            "cpu_count": 2,
            "gpu": None,
            "python_version": "3.11.9",
            "serveprof_version": "0.1.0",
            "git_revision": "abc123",
            "git_dirty": False,
        },
        "started_at": started_at,
        "finished_at": started_at,
    }


@pytest.fixture
def inputs(tmp_path: Path) -> dict:
    stats_dir = tmp_path / "stats"
    stats_dir.mkdir()
    # Batch 4 started first; files are passed out of order to check the sorting.
    docs = {
        4: stats_doc(4, 20.12346, "2026-11-25T10:00:00+00:00", truncated=True),
        1: stats_doc(1, 5.5, "2026-11-25T10:05:00+00:00"),
    }
    # Batch 4 as serveprof measure writes it now; batch 1 as before the disturbance sampler and the
    # server's metrics (a kept run's stats), whose new columns stay empty.
    docs[4]["disturbance"] = {"flagged": True, "reasons": ["other processes used 97 % of a core (limit 25 %)",
                              "the hypervisor stole 12.0 % of the CPU time (limit 10 %)"],
                              "foreign_cpu_pct": 97.0, "steal_pct": 12.0, "attempts": 3}  # fmt: skip
    docs[4]["server_latency"] = {"count": 7, "mean_ms": 18.5, "p50_ms": 18.0, "p99_ms": 25.0}
    docs[4]["server"]["serialization"] = "tensor_content"
    for batch, doc in docs.items():
        (stats_dir / f"b{batch}.json").write_text(json.dumps(doc))
    (tmp_path / "coldstart.csv").write_text(
        "model,load_ms,first_infer_ms,backend,backend_version\ntiny,1500.0000,80.0000,embedded,0.1.0\n"
    )
    (tmp_path / "acquired.json").write_text(
        json.dumps({"model": "tiny", "status": "ok", "source": "keras", "weights": "random"})
    )
    return {"stats": [stats_dir / "b4.json", stats_dir / "b1.json"], "dir": tmp_path}


def aggregate(inputs: dict, out: Path, model: str = "tiny", stats=None, extra=()) -> subprocess.CompletedProcess:
    args = [
        "--model",
        model,
        "--stats",
        *map(str, stats or inputs["stats"]),
        "--coldstart",
        str(inputs["dir"] / "coldstart.csv"),
        "--acquired",
        str(inputs["dir"] / "acquired.json"),
        "--config-hash",
        "0123456789abcdef",
        "--out-dir",
        str(out),
        *extra,
    ]
    return subprocess.run(
        [sys.executable, "-m", "serveprof", "aggregate", *args], capture_output=True, text=True, timeout=120
    )


def test_aggregate_writes_the_three_files(inputs, tmp_path):
    out = tmp_path / "out"
    done = aggregate(inputs, out)
    assert done.returncode == 0, done.stderr
    # Exactly the contract's bytes: ", " between fields, sorted by batch size, 4 decimals.
    assert (out / "tiny.csv").read_bytes() == b"batch_size, duration\n1, 5.5000\n4, 20.1235\n"

    summary_text = (out / "summary.csv").read_text()
    assert summary_text.splitlines()[0] == SUMMARY_HEADER
    summary = pd.read_csv(out / "summary.csv")
    assert summary["batch_size"].tolist() == [1, 4]
    assert summary["mean_ms"].tolist() == [5.5, 20.1235]
    assert summary["truncated"].tolist() == [False, True]
    assert summary["truncated_reason"].isna().tolist() == [True, False]
    assert summary.loc[1, "low_sample_percentiles"] == "p90;p95;p99"
    assert summary["first_init_ms"].tolist() == [101.0, 104.0]
    assert summary["gpu_util_pct"].isna().all()
    assert summary["backend"].tolist() == ["embedded", "embedded"]
    assert summary["disturbed"].isna().tolist() == [True, False] and bool(summary.loc[1, "disturbed"])
    assert summary.loc[1, ["foreign_cpu_pct", "steal_pct", "attempts"]].tolist() == [97.0, 12.0, 3]
    assert summary.loc[1, "disturbance_reasons"].count("; ") == 1
    assert summary.loc[1, ["server_count", "server_mean_ms", "server_p50_ms", "server_p99_ms"]].tolist() == [
        7,
        18.5,
        18.0,
        25.0,
    ]
    assert summary["serialization"].tolist()[1] == "tensor_content" and summary["server_mean_ms"].isna()[0]

    provenance = json.loads((out / "provenance.json").read_text())
    assert PROVENANCE_KEYS <= set(provenance)
    assert (provenance["source"], provenance["weights"]) == ("keras", "random")
    assert provenance["backend"] == "embedded"
    # The embedded server runs the installed TF; its version comes from metadata, not an import.
    assert provenance["tensorflow_version"] == importlib.metadata.version("tensorflow")
    assert (provenance["cpu_model"], provenance["cpu_count"], provenance["hostname"]) == (
        "Example CPU @ 2.0GHz",
        2,
        "node7",
    )
    assert provenance["started_at"] == "2026-11-25T10:00:00+00:00"  # the earliest job
    assert (provenance["config_hash"], provenance["git_revision"]) == ("0123456789abcdef", "abc123")


def test_aggregate_never_imports_tensorflow(inputs, tmp_path):
    # It runs as a local rule on the head node: the TF version must come from metadata.
    args = [
        "aggregate",
        "--model",
        "tiny",
        "--stats",
        *map(str, inputs["stats"]),
        "--acquired",
        str(inputs["dir"] / "acquired.json"),
        "--config-hash",
        "h",
        "--out-dir",
        str(tmp_path / "out"),
    ]
    code = f"import sys; from serveprof.cli import main; assert main({args!r}) == 0; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_jobs_on_different_hosts_are_all_named(inputs, tmp_path):
    doc = json.loads(inputs["stats"][0].read_text())
    doc["provenance"]["hostname"] = "node8"
    inputs["stats"][0].write_text(json.dumps(doc))
    assert aggregate(inputs, tmp_path / "out").returncode == 0
    assert (
        json.loads((tmp_path / "out" / "provenance.json").read_text())["hostname"] == "node7; node8"
    )  # in batch-size order (b1 on node7, b4 on node8)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("other model", "holds results for model 'other', not 'tiny'"),
        ("duplicate batch", "both hold batch size 1"),
        ("not json", "is not valid JSON"),
        ("missing", "does not exist"),
    ],
)
def test_bad_stats_are_refused_and_nothing_is_written(inputs, tmp_path, damage, message):
    stats = list(inputs["stats"])
    if damage == "other model":
        stats[1].write_text(json.dumps(stats_doc(1, 5.5, "2026-11-25T10:05:00+00:00", model="other")))
    elif damage == "duplicate batch":
        stats.append(stats[1])
    elif damage == "not json":
        stats[0].write_text('{"model": "tiny", "batch')
    else:
        stats.append(tmp_path / "stats" / "b8.json")
    out = tmp_path / "out"
    done = aggregate(inputs, out, stats=stats)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists() or not any(out.iterdir())


def test_latency_files_must_match_their_stats(inputs, tmp_path):
    latencies = inputs["dir"] / "tiny-b1.csv"
    latencies.write_text("".join(f"{5.5:.4f}\n" for _ in range(20)))
    out = tmp_path / "out"
    good = aggregate(inputs, out, extra=["--latencies", str(latencies)])
    assert good.returncode == 0, good.stderr

    latencies.write_text("5.5000\n" * 19)  # one line lost, e.g. a file cut short by hand
    out_bad = tmp_path / "out_bad"
    bad = aggregate(inputs, out_bad, extra=["--latencies", str(latencies)])
    assert bad.returncode == 1
    assert "holds 19 latencies, but its stats file counted 20" in bad.stderr
    assert "delete" in bad.stderr and not out_bad.exists()
