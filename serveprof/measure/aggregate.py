"""One model's per-batch stats JSONs -> ``<model>.csv``, ``summary.csv``, ``provenance.json``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from serveprof.errors import ServeprofError
from serveprof.measure.device_result import device_provenance, fits
from serveprof.measure.provenance import build_provenance
from serveprof.measure.result_files import (
    read_coldstart,
    read_json,
    read_latencies,
    write_durations,
    write_json,
    write_summary,
)
from serveprof.measure.retry import disturbance_columns

STAT_KEYS = (
    "count",
    "mean_ms",
    "std_ms",
    "min_ms",
    "max_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "throughput_per_s",
    "low_sample_percentiles",
)
RESOURCE_KEYS = ("cpu_util_pct", "rss_peak_mb", "rss_mean_mb", "gpu_util_pct", "gpu_mem_mb")
JOB_KEYS = (
    "batch_size",
    "first_init_ms",
    "first_aot_ms",
    "requests_target",
    "truncated",
    "truncated_reason",
    "protocol",
)


# The server's own latency of the timed requests (stats JSON ``server_latency``), as server_<key>.
SERVER_LATENCY_KEYS = ("count", "mean_ms", "p50_ms", "p99_ms")


def summary_row(doc: Mapping) -> dict:
    server = doc.get("server") or {}
    row = {"model": doc["model"], "backend": server.get("backend"), "serialization": server.get("serialization")}
    row.update({key: doc.get(key) for key in JOB_KEYS})
    row.update({key: doc["stats"].get(key) for key in STAT_KEYS})
    row.update({key: (doc.get("resources") or {}).get(key) for key in RESOURCE_KEYS})
    row.update(disturbance_columns(doc.get("disturbance")))
    row.update({f"server_{key}": (doc.get("server_latency") or {}).get(key) for key in SERVER_LATENCY_KEYS})
    return row


def load_stats(model: str, paths: Sequence[Path]) -> list[dict]:
    docs, seen = [], {}
    for path in paths:
        doc = read_json(path, "stats file")
        if not isinstance(doc, dict) or "stats" not in doc or "batch_size" not in doc:
            raise ServeprofError(
                f"{path} is not a serveprof stats file (no batch_size/stats)",
                "delete it and rerun `serveprof measure` for that batch size",
            )
        if doc.get("model") != model:
            raise ServeprofError(
                f"{path} holds results for model {doc.get('model')!r}, not {model!r}",
                "pass only that model's stats files",
            )
        if doc["batch_size"] in seen:
            raise ServeprofError(
                f"{path} and {seen[doc['batch_size']]} both hold batch size {doc['batch_size']}",
                "pass one stats file per batch size",
            )
        seen[doc["batch_size"]] = path
        docs.append(doc)
    return sorted(docs, key=lambda doc: doc["batch_size"])


def check_latencies(docs: Sequence[Mapping], latency_paths: Sequence[Path]) -> None:
    """Each ``<model>-b<N>.csv`` must hold the series its stats describe.

    A latency file cut short or replaced by hand would otherwise sit beside a summary
    computed from different numbers, both looking valid.
    """
    by_batch = {doc["batch_size"]: doc for doc in docs}
    for path in latency_paths:
        found = re.search(r"-b(\d+)\.csv$", path.name)
        doc = by_batch.get(int(found.group(1))) if found else None
        if doc is None:
            raise ServeprofError(
                f"{path} matches no stats file's batch size", "pass the <model>-b<N>.csv files of the stats files given"
            )
        count = len(read_latencies(path))
        if count != doc["stats"]["count"]:
            raise ServeprofError(
                f"{path} holds {count} latencies, but its stats file counted {doc['stats']['count']}",
                f"delete {path} and rerun, so that batch size is measured again",
            )


def aggregate(
    model: str,
    stats_paths: Sequence[Path],
    coldstart: Path | None,
    acquired: Path,
    config_hash: str,
    out_dir: Path,
    latency_paths: Sequence[Path] = (),
) -> dict:
    docs = load_stats(model, stats_paths)
    check_latencies(docs, latency_paths)
    if coldstart is not None:
        read_coldstart(coldstart)  # refuse a damaged file before writing anything
    provenance = build_provenance(model, read_json(acquired, "acquisition status"), docs, config_hash)
    provenance.update(device_provenance(docs))
    # A batch size that does not fit in its device's memory has no duration: provenance says why.
    measured = [doc for doc in docs if fits(doc)]
    write_durations(out_dir / f"{model}.csv", [(doc["batch_size"], doc["stats"]["mean_ms"]) for doc in measured])
    write_summary(out_dir / "summary.csv", [summary_row(doc) for doc in measured])
    write_json(out_dir / "provenance.json", provenance)
    return provenance
