"""What a measurement on a device adds to its stats JSON, and the result of one that does not fit.

On the unconstrained host nothing is added: its stats JSON is the reference workload's.
On a device the stats JSON gets ``device`` (the settings) and ``limits`` (what the
server ran under, read back; serveprof/launch/limits.py). A server killed by the
device's memory cap leaves a result too, so the run goes on and the report can say
"does not fit in <memory>": an empty latency file and a stats JSON whose ``stats``
count 0 requests and whose ``does_not_fit`` block says when and at what peak.
"""

from __future__ import annotations

from collections.abc import Mapping

from serveprof.launch.device import DeviceSettings
from serveprof.measure.stats import PERCENTILES

EMPTY_STATS_KEYS = ("mean_ms", "std_ms", "min_ms", "max_ms", *(f"p{p}_ms" for p in PERCENTILES), "throughput_per_s")


def device_fields(device: DeviceSettings | None, limits: Mapping | None, repeat: int | None) -> dict:
    """The stats JSON's ``device``, ``limits`` and ``repeat`` keys; none of them on the host with one repeat."""
    fields: dict = {}
    if device is not None and device.constrained:
        fields["device"] = device.to_json()
        fields["limits"] = dict(limits) if limits else None
    if repeat is not None:
        fields["repeat"] = repeat
    return fields


def empty_stats() -> dict:
    """The ``stats`` of a series with no request: count 0, every figure null."""
    return {"count": 0, **dict.fromkeys(EMPTY_STATS_KEYS), "low_sample_percentiles": []}


def unfit_document(base: Mapping, does_not_fit: Mapping, limits: Mapping | None) -> dict:
    """The stats JSON of a (model, batch) whose server the memory cap killed."""
    document = dict(base)
    document.update(
        {
            "stats": empty_stats(),
            "resources": None,
            "does_not_fit": dict(does_not_fit),
        }
    )
    if "limits" in document or limits is not None:
        document["limits"] = dict(limits) if limits else document.get("limits")
    return document


def fits(document: Mapping) -> bool:
    """Whether a stats JSON holds a measured series (not one that did not fit in its device's memory)."""
    return not document.get("does_not_fit")


def _agreed(values) -> object:
    distinct = list(dict.fromkeys(value for value in values if value is not None))
    return distinct[0] if len(distinct) == 1 else (distinct or None)


def device_provenance(documents: list[Mapping]) -> dict:
    """What provenance.json adds on a device, or with repeats: the device, the limits the servers ran
    under (as read back; one value where every series agrees), what did not fit, the repeats."""
    added: dict = {}
    if any("device" in document for document in documents):
        limits = [document.get("limits") or {} for document in documents]
        seen = [one.get("seen") or {} for one in limits]
        added["device"] = _agreed([(document.get("device") or {}).get("name") for document in documents])
        added["limits"] = {
            "cpus": _agreed([one.get("cpus") for one in limits]),
            "memory": _agreed([one.get("memory") for one in limits]),
            "intra_op_threads": _agreed([one.get("intra_op_threads") for one in limits]),
            "inter_op_threads": _agreed([one.get("inter_op_threads") for one in limits]),
            "mechanism": _agreed([one.get("mechanism") for one in limits]),
            "cpus_allowed": _agreed([one.get("cpus_allowed") for one in seen]),
            "cpu_quota_cpus": _agreed([one.get("cpu_quota_cpus") for one in seen]),
            "memory_limit_bytes": _agreed([one.get("memory_limit_bytes") for one in seen]),
            # enforced only if it was on every server whose limits were read back
            "cpu_enforced": _all([one.get("cpu_enforced") for one in limits]),
            "memory_enforced": _all([one.get("memory_enforced") for one in limits]),
            "memory_peak_bytes": max((one.get("memory_peak_bytes") or 0 for one in limits), default=0) or None,
            "notes": list(dict.fromkeys(note for one in limits for note in one.get("notes") or [])),
        }
        added["does_not_fit"] = [
            {"batch_size": document["batch_size"], **document["does_not_fit"]}
            for document in documents
            if not fits(document)
        ]
    if any("repeats" in document for document in documents):
        added["repeats"] = max(document.get("repeats", {}).get("count", 1) for document in documents)
        added["repeat_cells"] = [repeat_cell(document) for document in documents if "repeats" in document]
    return added


REPEAT_CELL_KEYS = ("count", "mean_ms", "std_ms", "cv_pct", "ci_low_ms", "ci_high_ms", "p50_mean_ms", "p50_cv_pct")


def repeat_cell(document: Mapping) -> dict:
    """One (model, batch)'s repeats as provenance keeps them: their spread, the flag, each repeat's mean and p50."""
    block = document["repeats"]
    return {
        "batch_size": document["batch_size"],
        **{key: block.get(key) for key in REPEAT_CELL_KEYS},
        "flagged": block.get("flagged"),
        "max_cv_pct": block.get("max_cv_pct"),
        "means_ms": [one.get("mean_ms") for one in block.get("series", [])],
        "p50s_ms": [one.get("p50_ms") for one in block.get("series", [])],
        "disturbed_repeats": [one.get("repeat") for one in block.get("series", []) if one.get("disturbed")],
    }


def _all(values) -> bool | None:
    known = [value for value in values if value is not None]
    return all(known) if known else None
