"""A cell's repeats folded into its one series: ``<model>-b<N>.csv`` and ``stats/b<N>.json``.

With ``measure.repeats`` R > 1, each repeat of a (device, model, batch size) is a job of
its own on a fresh server, writing ``repeats/r<R>/<model>-b<N>.csv`` and
``repeats/r<R>/stats/b<N>.json`` (serveprof/layout.py). The fold writes the cell's
files in the same formats as a single series:

- ``<model>-b<N>.csv`` is every repeat's latencies, concatenated in repeat order: the
  requests of R fresh servers, so its percentiles are those a user of any such server
  sees, and ``<model>.csv``'s duration stays the mean of the file beside it;
- ``stats/b<N>.json`` holds the statistics of those latencies, and a ``repeats`` block:
  each repeat's count, mean and p50, the mean and standard deviation of the repeats'
  means, their coefficient of variation (CV), the p50s' CV, the 95 % confidence
  interval of the mean over repeats (Student's t), and ``flagged`` when the CV is above
  ``measure.max_cv_pct``.

A cell where any repeat's server was killed by its device's memory cap does not fit.
The cell's ``disturbance`` is flagged when any repeat stayed disturbed (after its own
``measure.retry_disturbed``), so the report marks the pooled series as it would that repeat.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from serveprof.errors import ServeprofError
from serveprof.measure.device_result import fits, unfit_document
from serveprof.measure.stats import latency_stats

CONFIDENCE = 0.95


def _mean(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return math.fsum(present) / len(present) if present else None


def _max(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return max(present) if present else None


def variation(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation, CV (%) and the t-interval of the mean of ``values`` (one per repeat)."""
    count = len(values)
    mean = math.fsum(values) / count
    if count < 2:
        return {"mean_ms": mean, "std_ms": None, "cv_pct": None, "ci_low_ms": None, "ci_high_ms": None}
    from scipy.stats import t

    std = statistics.stdev(values)
    half = t.ppf(0.5 + CONFIDENCE / 2, count - 1) * std / math.sqrt(count)
    return {
        "mean_ms": mean,
        "std_ms": std,
        "cv_pct": 100.0 * std / mean if mean > 0 else None,
        "ci_low_ms": mean - half,
        "ci_high_ms": mean + half,
    }


def repeats_block(documents: Sequence[Mapping], max_cv_pct: float) -> dict:
    """The folded stats JSON's ``repeats`` block (see the module's docstring)."""
    series = []
    for document in documents:
        stats = document.get("stats") or {}
        series.append(
            {
                "repeat": document.get("repeat"),
                "count": stats.get("count"),
                "mean_ms": stats.get("mean_ms"),
                "p50_ms": stats.get("p50_ms"),
                "p99_ms": stats.get("p99_ms"),
                "rss_peak_mb": (document.get("resources") or {}).get("rss_peak_mb"),
                "truncated": document.get("truncated"),
                "disturbed": (document.get("disturbance") or {}).get("flagged"),
                "fits": fits(document),
            }
        )
    block: dict = {"count": len(series), "max_cv_pct": max_cv_pct, "confidence": CONFIDENCE, "series": series}
    means = [one["mean_ms"] for one in series if one["fits"] and one["mean_ms"] is not None]
    if len(means) == len(series) and means:
        block.update(variation(means))
        p50 = variation([one["p50_ms"] for one in series])
        block["p50_mean_ms"], block["p50_cv_pct"] = p50["mean_ms"], p50["cv_pct"]
        block["flagged"] = block["cv_pct"] is not None and block["cv_pct"] > max_cv_pct
    else:
        block.update(
            dict.fromkeys(("mean_ms", "std_ms", "cv_pct", "ci_low_ms", "ci_high_ms", "p50_mean_ms", "p50_cv_pct"))
        )
        block["flagged"] = False
    return block


def check_repeats(documents: Sequence[Mapping], latencies: Sequence[Sequence[float]]) -> None:
    if not documents:
        raise ServeprofError("no repeats to fold", "pass each repeat's stats JSON with --stats")
    if len(latencies) != len(documents):
        raise ServeprofError(
            f"{len(documents)} stats files but {len(latencies)} latency files",
            "pass one latency file per stats file, in the same order",
        )
    cells = {(document.get("model"), document.get("batch_size")) for document in documents}
    if len(cells) != 1:
        raise ServeprofError(
            f"the repeats hold different cells: {sorted(map(str, cells))}",
            "fold the repeats of one (model, batch size) at a time",
        )
    numbers = [document.get("repeat") for document in documents]
    if len(set(numbers)) != len(numbers):
        raise ServeprofError(
            f"repeat numbers {numbers} are not distinct", "pass each repeat's files once; rerun the repeats"
        )
    for document, values in zip(documents, latencies, strict=True):
        count = (document.get("stats") or {}).get("count")
        if count != len(values):
            raise ServeprofError(
                f"repeat {document.get('repeat')} counted {count} latencies but its file holds {len(values)}",
                "delete that repeat's files and rerun it",
            )


def disturbance_of(documents: Sequence[Mapping]) -> dict | None:
    """The cell's disturbance record from its repeats': flagged if any was, with that repeat's reasons,
    the highest foreign CPU and steal of any, and every attempt counted (None where no repeat has one)."""
    records = [(document.get("repeat"), document.get("disturbance")) for document in documents]
    records = [(number, record) for number, record in records if record]
    if not records:
        return None
    return {
        "flagged": any(record.get("flagged") for _, record in records),
        "reasons": [
            f"repeat {number}: {reason}" for number, record in records if record.get("flagged")
            for reason in record.get("reasons") or ["flagged as disturbed"]
        ],
        "foreign_cpu_pct": _max([record.get("foreign_cpu_pct") for _, record in records]),
        "steal_pct": _max([record.get("steal_pct") for _, record in records]),
        "attempts": sum(record.get("attempts") or 1 for _, record in records),
        "repeats": [{"repeat": number, **record} for number, record in records],
    }  # fmt: skip


def fold(
    documents: Sequence[Mapping], latencies: Sequence[Sequence[float]], max_cv_pct: float
) -> tuple[list[float], dict]:
    """The cell's latencies and stats JSON from its repeats' (in any order)."""
    check_repeats(documents, latencies)
    order = sorted(range(len(documents)), key=lambda index: documents[index].get("repeat") or 0)
    documents = [documents[index] for index in order]
    latencies = [list(latencies[index]) for index in order]
    first = documents[0]
    block = repeats_block(documents, max_cv_pct)
    base = {key: value for key, value in first.items() if key not in ("repeat", "stats", "resources", "disturbance")}
    if (disturbance := disturbance_of(documents)) is not None:
        base["disturbance"] = disturbance
    base["started_at"] = min((doc.get("started_at") for doc in documents if doc.get("started_at")), default=None)
    base["finished_at"] = max((doc.get("finished_at") for doc in documents if doc.get("finished_at")), default=None)
    unfit = [document for document in documents if not fits(document)]
    if unfit:
        killed = {**unfit[0]["does_not_fit"], "repeats_killed": len(unfit), "repeats": len(documents)}
        return [], {**unfit_document(base, killed, unfit[0].get("limits")), "repeats": block}
    pooled = [value for values in latencies for value in values]
    resources = [document.get("resources") or {} for document in documents]
    folded = dict(base)
    folded.update(
        {
            "first_init_ms": _mean([doc.get("first_init_ms") for doc in documents]),
            "first_aot_ms": _mean([doc.get("first_aot_ms") for doc in documents]),
            "warmup_requests": sum(doc.get("warmup_requests") or 0 for doc in documents),
            "truncated": any(doc.get("truncated") for doc in documents),
            "truncated_reason": "; ".join(
                f"repeat {doc.get('repeat')}: {doc['truncated_reason']}"
                for doc in documents
                if doc.get("truncated_reason")
            )
            or None,
            "timed_seconds": math.fsum(doc.get("timed_seconds") or 0.0 for doc in documents),
            "stats": latency_stats(pooled, first["batch_size"]),
            "resources": {
                "cpu_util_pct": _mean([one.get("cpu_util_pct") for one in resources]),
                "rss_peak_mb": _max([one.get("rss_peak_mb") for one in resources]),
                "rss_mean_mb": _mean([one.get("rss_mean_mb") for one in resources]),
                "gpu_util_pct": _mean([one.get("gpu_util_pct") for one in resources]),
                "gpu_mem_mb": _max([one.get("gpu_mem_mb") for one in resources]),
                "samples": sum(one.get("samples") or 0 for one in resources),
                "interval_s": resources[0].get("interval_s"),
            },
            "repeats": block,
        }
    )
    if first.get("limits"):
        folded["limits"] = {
            **first["limits"],
            "memory_peak_bytes": _max([(doc.get("limits") or {}).get("memory_peak_bytes") for doc in documents]),
        }
    return pooled, folded
