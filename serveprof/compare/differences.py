"""What differs between two runs' provenance: the things that could explain a change.

Every provenance key is compared, so keys a later version records (device limits,
variants) show without a change here; ``EXPLAINS`` only puts the usual suspects first.
Series that the disturbance sampler flagged in either run are listed apart.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from serveprof.compare.trees import ResultTree, Series

# Shown first, in this order: the likeliest causes of a latency change.
EXPLAINS = (
    "backend", "backend_version", "tensorflow_version", "image", "image_digest", "cpu_model", "cpu_count", "gpu",
    "gpu_used", "keep_awake", "hostname", "config_hash", "weights", "source", "git_revision", "git_dirty", "protocol",
    "client_transport", "serialization", "server_notes", "variant_status", "variant_format", "variant_server_flags",
    "variant_size_bytes", "variant_notes", "serveprof_version", "python_version",
)  # fmt: skip
# Different in every run by nature: never an explanation.
IGNORED = {"model", "started_at"}


def _text(value) -> str:
    if value is None or value == "":
        return "none"
    if isinstance(value, (list, tuple)):
        return "; ".join(map(str, value)) or "none"
    return str(value)


def _order(key: str) -> tuple[int, str]:
    return (EXPLAINS.index(key), key) if key in EXPLAINS else (len(EXPLAINS), key)


def provenance_differences(base: ResultTree, new: ResultTree) -> list[dict]:
    """One row per (key, base value, new value): ``{"key", "base", "new", "models"}``.

    Models are compared where both runs have them; models that share a difference are
    listed on one row.
    """
    base_docs = _by_model(base.series.values())
    new_docs = _by_model(new.series.values())
    grouped: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for model in base_docs.keys() & new_docs.keys():
        before, after = base_docs[model], new_docs[model]
        for key in sorted((before.keys() | after.keys()) - IGNORED, key=_order):
            if _text(before.get(key)) != _text(after.get(key)):
                grouped[(key, _text(before.get(key)), _text(after.get(key)))].append(model)
    rows = [
        {"key": key, "base": old, "new": value, "models": sorted(models)}
        for (key, old, value), models in grouped.items()
    ]
    return sorted(rows, key=lambda row: (_order(row["key"]), row["base"], row["new"]))


def _by_model(series: Iterable[Series]) -> dict[str, dict]:
    docs = {}
    for one in series:
        group = " ".join(f"{name}={value}" for name, value in one.dims.items() if name not in ("model", "batch"))
        docs[(group + " " + one.dims.get("model", "")).strip()] = one.provenance
    return docs


def disturbed(tree: ResultTree) -> dict[tuple, list[str]]:
    """Series the disturbance sampler flagged while they were measured, with its reasons."""
    flagged = {}
    for key, one in tree.series.items():
        record = one.disturbance or {}
        if record.get("flagged"):
            flagged[key] = list(record.get("reasons") or ["flagged as disturbed"])
    return flagged
