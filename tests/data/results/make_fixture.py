"""Write the report tests' fake run: result files exactly as docs/ARCHITECTURE.md fixes them.

Three profiled models and one that could not be obtained, on four batch sizes:
ssd_mobilenet (zoo weights, complete), inception (imagenet weights, batch 8 cut short
by the time cap) and nasnet (random weights, batches 4 and 8 cut short, batch 8 at six
requests); efficient is "unavailable". The statistics and the file formats come from
the measurement package's own code (``latency_stats``, ``result_files``), so the fake
run is what a real one looks like. Latencies are seeded; running this again rewrites
the same bytes:

    .venv/bin/python tests/data/results/make_fixture.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from serveprof.measure.result_files import latencies_text, write_coldstart, write_durations, write_summary
from serveprof.measure.stats import latency_stats

HERE = Path(__file__).resolve().parent
PROFILING = HERE / "profiling"
ACQUIRED = HERE / "acquired"
BATCHES = (1, 2, 4, 8)
TARGET = 700
MAX_SECONDS = 20

MODELS = {
    # key: (source, type, weights, base ms at batch 1, growth exponent, {batch: count}, load s, first s)
    "ssd_mobilenet": ("tf2_zoo", "detection", "zoo", 69.0, 0.95, {}, 3.4, 8.9),
    "inception": ("keras", "classification", "imagenet", 34.0, 0.75, {8: 150}, 5.5, 4.6),
    "nasnet": ("keras", "classification", "random", 45.0, 0.85, {4: 100, 8: 6}, 9.0, 8.3),
}
UNAVAILABLE = {
    "efficient": (
        "keras",
        "classification",
        "the EfficientNetB7 imagenet weights could not be downloaded (storage.googleapis.com is unreachable)",
        "put efficientnetb7.h5 into ~/.keras/models/, or set allow_random_weights: true to profile with random weights",
    )
}
CONFIG_HASH = {"ssd_mobilenet": "3f1c9a0b7d2e4c11", "inception": "a94b02c7e5d1f380", "nasnet": "0d7e6b5a4c3b2a19"}


def batch_row(model: str, batch: int, latencies: np.ndarray, rng: np.random.Generator) -> dict:
    stats = latency_stats(latencies, batch)
    count = stats["count"]
    truncated = count < TARGET
    return {
        "model": model,
        "batch_size": batch,
        **stats,
        "first_init_ms": round(float(stats["mean_ms"] * rng.uniform(4, 9)), 4),
        "first_aot_ms": round(float(stats["mean_ms"] * rng.uniform(1.02, 1.2)), 4),
        "requests_target": TARGET,
        "truncated": truncated,
        "truncated_reason": f"max_seconds ({MAX_SECONDS} s) reached after {count} requests" if truncated else None,
        "cpu_util_pct": round(float(rng.uniform(140, 195)), 1),
        "rss_peak_mb": round(float(700 + 60 * batch + rng.uniform(0, 40)), 1),
        "rss_mean_mb": round(float(650 + 45 * batch + rng.uniform(0, 30)), 1),
        "gpu_util_pct": None,
        "gpu_mem_mb": None,
        "protocol": "grpc",
        "backend": "embedded",
    }


def write_model(model: str, spec: tuple, rng: np.random.Generator) -> None:
    source, kind, weights, base, growth, counts, load_s, first_s = spec
    folder = PROFILING / model
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for batch in BATCHES:
        count = counts.get(batch, TARGET)
        typical = base * batch**growth
        latencies = np.round(typical * rng.lognormal(0.0, 0.08, count) + rng.exponential(typical * 0.02, count), 4)
        (folder / f"{model}-b{batch}.csv").write_text(latencies_text(latencies))
        rows.append(batch_row(model, batch, latencies, rng))
    write_summary(folder / "summary.csv", rows)
    write_durations(folder / f"{model}.csv", [(row["batch_size"], row["mean_ms"]) for row in rows])
    backend_version = "serveprof 0.1.0 (TensorFlow 2.21.0)"
    write_coldstart(folder / "coldstart.csv", {"model": model, "load_ms": load_s * 1000 + 12.3456,
                    "first_infer_ms": first_s * 1000 + 7.891, "backend": "embedded", "backend_version": backend_version})  # fmt: skip
    provenance = {
        "model": model, "source": source, "weights": weights, "backend": "embedded",
        "backend_version": backend_version, "tensorflow_version": "2.21.0",
        "serveprof_version": "0.1.0", "python_version": "3.11.2",
        "cpu_model": "Intel(R) Xeon(R) CPU @ 2.20GHz", "cpu_count": 2, "gpu": None,
        "hostname": "bench-01", "config_hash": CONFIG_HASH[model],
        "git_revision": "05c4221d3b8e9f0a1b2c3d4e5f60718293a4b5c6", "git_dirty": model == "nasnet",
        "started_at": f"2026-11-25T14:{10 + 7 * list(MODELS).index(model):02d}:00+00:00",
    }  # fmt: skip
    (folder / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    status = {
        "model": model, "status": "ok", "source": source, "type": kind,
        "artifact": f"data/model/download/{model}.tar.gz" if source == "tf2_zoo" else None,
        "weights": weights, "reason": None, "fix": None, "sha256": None,
        "acquired_at": "2026-11-25T14:00:00+00:00",
    }  # fmt: skip
    (ACQUIRED / f"{model}.json").write_text(json.dumps(status, indent=2) + "\n")


def main() -> None:
    ACQUIRED.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261125)
    for model, spec in MODELS.items():
        write_model(model, spec, rng)
    for model, (source, kind, reason, fix) in UNAVAILABLE.items():
        status = {
            "model": model, "status": "unavailable", "source": source, "type": kind, "artifact": None,
            "weights": None, "reason": reason, "fix": fix, "sha256": None, "acquired_at": "2026-11-25T14:00:00+00:00",
        }  # fmt: skip
        (ACQUIRED / f"{model}.json").write_text(json.dumps(status, indent=2) + "\n")


if __name__ == "__main__":
    main()
