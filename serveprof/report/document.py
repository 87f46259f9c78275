"""``reports/report.md``: provenance first, then the tables, then what was not profiled."""

from __future__ import annotations

from collections import defaultdict

import pandas as pd

from serveprof.report.device_section import device_section
from serveprof.report.markdown import Table, escape, markdown_table
from serveprof.report.results import Run
from serveprof.report.style import display_names
from serveprof.report.tables import not_profiled_table, result_tables

RANDOM_WARNING = "⚠ random"
FIGURES = (
    ("latency", "Latency against batch size"),
    ("throughput", "Throughput against batch size"),
    ("coldstart", "Cold start"),
    ("resources", "Server memory and CPU"),
)


def _shared(run: Run, key: str, render=str) -> str:
    """One value if every model agrees; otherwise each value with the models it holds for."""
    by_value: dict[str, list[str]] = defaultdict(list)
    for model in run.profiled:
        value = run.provenance[model].get(key)
        by_value["none" if value is None or value == "" else render(value)].append(model)
    if len(by_value) <= 1:
        return next(iter(by_value), "unknown")
    return "; ".join(f"{value} ({', '.join(models)})" for value, models in by_value.items())


def _revision(value) -> str:
    """A short revision; a mixed or dirty state shows, so numbers from uncommitted code are visible."""
    return "; ".join(part.strip()[:12] for part in str(value).split(";"))


def weights_of(run: Run, model: str) -> str:
    """The weights a profiled model ran with (its provenance, else its acquisition status)."""
    return str(run.provenance.get(model, {}).get("weights") or run.statuses[model].get("weights") or "unknown")


def random_weight_models(run: Run) -> list[str]:
    return [model for model in run.profiled if weights_of(run, model) == "random"]


def random_weights_reason(run: Run, model: str) -> tuple[str, str]:
    """Why ``model`` ran with random weights, and how to profile it with ImageNet weights.

    The acquisition status says which: a fallback (the ImageNet weights could not be
    fetched and ``allow_random_weights`` let the run go on) records a ``reason`` and a
    ``fix`` naming the weights file and where to put it; a config that asks for
    ``weights: random`` records neither.
    """
    status = run.statuses[model]
    if status.get("reason"):
        fix = status.get("fix") or "put the ImageNet weights file into ~/.keras/models/ (docs/models.md, Staging)"
        return (
            f"offline fallback: {status['reason']}",
            f"{fix}; then rerun the workflow, which acquires and measures the model again",
        )
    return (
        "chosen in the config (`weights: random`)",
        f"set `weights: imagenet` (the default) in the `{model}` entry under `models:` and rerun the workflow;"
        " the machine that acquires models needs network, or the weights file staged in ~/.keras/models/ (docs/models.md)",
    )


def provenance_section(run: Run) -> str:
    machine = _shared(run, "cpu_model")
    cores = _shared(run, "cpu_count")
    backend = "; ".join(
        sorted(
            {f"{p.get('backend', 'unknown')} {p.get('backend_version') or ''}".strip() for p in run.provenance.values()}
        )
    )
    dirty = [model for model in run.profiled if run.provenance[model].get("git_dirty") in (True, "True", "true")]
    started = sorted(str(p["started_at"]) for p in run.provenance.values() if p.get("started_at"))
    measured = (started[0] if started[0] == started[-1] else f"{started[0]} to {started[-1]}") if started else "unknown"
    rows = [
        ["machine", f"{machine}, {cores} cores (host {_shared(run, 'hostname')})"],
        ["GPU", _shared(run, "gpu")],
        ["backend", backend or "unknown"],
        ["TensorFlow", _shared(run, "tensorflow_version")],
        ["serveprof / Python", f"{_shared(run, 'serveprof_version')} / {_shared(run, 'python_version')}"],
        ["git revision", _shared(run, "git_revision", _revision)],
        ["measured", measured],
        ["protocol / client transport", f"{_shared(run, 'protocol')} / {_shared(run, 'client_transport')}"],
        # Predict answers in typed fields (TF Serving's default) or tensor_content: part of what was timed.
        ["response serialization", _shared(run, "serialization")],
    ]
    if dirty:
        rows[5][1] += f" with uncommitted changes ({', '.join(dirty)})"
    text = markdown_table(["run", ""], rows, [False, False])
    models = []
    for model in run.profiled:
        weights = weights_of(run, model)
        provenance = run.provenance[model]
        models.append([
            model,
            str(run.statuses[model].get("type") or "unknown"),
            str(provenance.get("source") or run.statuses[model].get("source") or "unknown"),
            f"**{RANDOM_WARNING}**" if weights == "random" else weights,
            f"`{provenance.get('config_hash') or 'unknown'}`",
            str(provenance.get("started_at") or "unknown"),
        ])  # fmt: skip
    text += "\n" + markdown_table(
        ["model", "type", "source", "weights", "config hash", "measured at"], models, [False] * 6
    )
    random = random_weight_models(run)
    if random:
        text += (
            f"\n> **{RANDOM_WARNING.split()[0]} Random weights:** {', '.join(random)} ran with random weights. Their latency,"
            " throughput and resource figures are valid (the same computation runs); any accuracy or output quality is not.\n\n"
        )
        rows = [[model, *random_weights_reason(run, model)] for model in random]
        text += markdown_table(["model", "why random weights", "to profile with ImageNet weights"], rows, [False] * 3)
    return text


def _section(table: Table, level: str = "##") -> str:
    return f"{level} {table.title}\n\n{table.to_markdown()}"


def build_report(run: Run, results_label: str) -> str:
    parts = [f"# serveprof report\n\nResults read from `{escape(results_label)}`.\n"]
    if run.profiled:
        parts.append("## Provenance\n\n" + provenance_section(run))
        devices = device_section(run)  # None on the unconstrained host with one series per cell
        if devices:
            parts.append(devices)
        parts.extend(_section(table) for table in result_tables(run))
        figures = "\n".join(f"![{title}](figures/{name}.png)" for name, title in FIGURES)
        per_model = ", ".join(f"[{model}](figures/{model}/distribution.png)" for model in run.profiled)
        names = display_names(run.statuses)
        shortened = [f"`{names[model]}` is `{model}`" for model in run.profiled if names[model] != model]
        legend = f"\n\nThe figures shorten long model keys: {'; '.join(shortened)}." if shortened else ""
        parts.append(
            "## Figures\n\nDrawn from the same CSV files by `serveprof plot` (docs/reports.md says how to read them)."
            f"{legend}\n\n{figures}\n\nLatency distribution per model: {per_model}\n"
        )
    else:
        parts.append("No model was profiled, so there are no measurements to report.\n")
    missing = not_profiled_table(run)
    if missing.rows:
        parts.append(
            "## Not profiled\n\nThese configured models could not be obtained, so they have no results.\n\n"
            + missing.to_markdown()
        )
    else:
        parts.append("## Not profiled\n\nEvery configured model was profiled.\n")
    return "\n".join(parts)


def models_frame(run: Run) -> pd.DataFrame:
    """One row per configured model: status, weights and provenance (``tables/models.csv``)."""
    keys = ("source", "backend", "backend_version", "tensorflow_version", "config_hash", "git_revision", "started_at")
    records = []
    for model, status in run.statuses.items():
        provenance = run.provenance.get(model, {})
        records.append({
            "model": model,
            "status": status["status"],
            "type": status.get("type"),
            "weights": weights_of(run, model) if model in run.profiled else status.get("weights"),
            # Why a model is unavailable or ran with random weights, and the fix (from its status).
            "reason": status.get("reason"),
            "fix": status.get("fix"),
            **{key: provenance.get(key) for key in keys},
        })  # fmt: skip
    return pd.DataFrame(records, columns=["model", "status", "type", "weights", "reason", "fix", *keys])
