"""The report's device section: the limits the servers ran under, what did not fit, and the repeats' spread.

Read from provenance.json only (serveprof/measure/device_result.py writes its
``device``, ``limits``, ``does_not_fit`` and ``repeat_cells``). On the unconstrained
host with one series per cell there is nothing to say and the report is as before.
"""

from __future__ import annotations

from serveprof.launch.device import memory_text
from serveprof.report.markdown import markdown_table
from serveprof.report.results import Run


def _number(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _text(value) -> str:
    return "–" if value is None else str(value)


def _enforced(value) -> str:
    return {True: "yes", False: "NO", None: "–"}[value]


def _cap(cap, limits) -> str:
    if isinstance(cap, int):
        return memory_text(cap)
    # nothing read back (the server died loading), or read back and no cap found
    return "not read back" if limits.get("cpus_allowed") is None else "not capped"


def limits_table(run: Run) -> tuple[str, list[str], list[list[str]]]:
    rows = []
    for model in run.profiled:
        provenance = run.provenance[model]
        limits = provenance.get("limits")
        if not limits:
            continue
        cap = limits.get("memory_limit_bytes")
        peak = limits.get("memory_peak_bytes")
        rows.append([
            model, str(provenance.get("device")), str(limits.get("mechanism")), _number(limits.get("cpus"), 2),
            _text(limits.get("cpus_allowed")), _number(limits.get("cpu_quota_cpus"), 2), _enforced(limits.get("cpu_enforced")),
            _text(limits.get("memory")), _cap(cap, limits), _enforced(limits.get("memory_enforced")),
            memory_text(peak) if peak else "–",
            f"{_text(limits.get('intra_op_threads'))}/{_text(limits.get('inter_op_threads'))}",
            "; ".join(limits.get("notes") or []),
        ])  # fmt: skip
    return (
        "Limits the servers ran under, as read back from each server process",
        [
            "model",
            "device",
            "mechanism",
            "cpus",
            "CPUs allowed",
            "CPU quota",
            "CPU enforced",
            "memory",
            "memory cap seen",
            "memory enforced",
            "peak",
            "intra/inter threads",
            "notes",
        ],  # fmt: skip
        rows,
    )


def unfit_table(run: Run) -> tuple[str, list[str], list[list[str]]]:
    rows = []
    for model in run.profiled:
        for unfit in run.provenance[model].get("does_not_fit") or []:
            peak = unfit.get("peak_mb")
            rows.append([
                model, str(unfit["batch_size"]), f"does not fit in {unfit['memory']}",
                "–" if peak is None else f"{peak:.0f} MiB", str(unfit.get("during")),
            ])  # fmt: skip
    return (
        "Killed by the device's memory cap: no timings for these cells",
        ["model", "batch_size", "result", "peak seen", "while"],
        rows,
    )


def _flags(cell: dict) -> str:
    """Why a cell's repeats need care: their spread, and the repeats measured on a busy machine."""
    flags = [f"CV above {cell.get('max_cv_pct'):g} %"] if cell.get("flagged") else []
    busy = cell.get("disturbed_repeats") or []
    if busy:
        flags.append(f"disturbed: repeat {', '.join(map(str, busy))}")
    return "; ".join(flags)


def repeats_table(run: Run) -> tuple[str, list[str], list[list[str]]]:
    rows = []
    for model in run.profiled:
        for cell in run.provenance[model].get("repeat_cells") or []:
            means = ", ".join(_number(value) for value in cell.get("means_ms") or [])
            interval = (
                f"{_number(cell['ci_low_ms'])}–{_number(cell['ci_high_ms'])}"
                if cell.get("ci_low_ms") is not None
                else "–"
            )
            rows.append([
                model, str(cell["batch_size"]), str(cell.get("count")), means, _number(cell.get("mean_ms")), interval,
                _number(cell.get("cv_pct")), _number(cell.get("p50_cv_pct")),
                _flags(cell),
            ])  # fmt: skip
    return (
        "Repeats on fresh servers: each repeat's mean, the mean of means with its 95 % interval, and their spread",
        ["model", "batch_size", "repeats", "means (ms)", "mean (ms)", "95 % interval", "CV %", "p50 CV %", "flag"],
        rows,
    )


def device_section(run: Run) -> str | None:
    """Markdown for the report, or None when nothing ran under limits or repeated."""
    tables = [table for table in (limits_table(run), unfit_table(run), repeats_table(run)) if table[2]]
    if not tables:
        return None
    devices = sorted(
        {str(run.provenance[model].get("device")) for model in run.profiled if "device" in run.provenance[model]}
    )
    head = f"## Device\n\nProfiled under the limits of device {', '.join(devices)}.\n" if devices else "## Repeats\n"
    return head + "".join(
        f"\n### {title}\n\n{markdown_table(header, rows, [False] * len(header))}" for title, header, rows in tables
    )
