"""The comparison as a report section, in markdown and in HTML, from one list of blocks.

Both renderings hold the same headings, sentences and tables, so a CI log (markdown)
and a browser (HTML, the figure embedded) tell the same story.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from serveprof.compare.changes import IMPROVEMENT, METRICS, NOISE, REGRESSION, TOO_FEW
from serveprof.compare.comparison import Comparison
from serveprof.report.markdown import escape, markdown_table
from serveprof.report.numbers import MISSING, significant


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str  # may hold `code` and **bold**


@dataclass(frozen=True)
class Grid:
    header: list[str]
    rows: list[list[str]]
    numeric: list[bool]


@dataclass(frozen=True)
class Image:
    path: str  # relative to the document
    alt: str
    png: bytes | None = None  # embedded in the HTML when given


def signed(value) -> str:
    if value is None or not np.isfinite(value):
        return MISSING
    return ("+" if value > 0 else "") + significant(value, 2) if abs(value) < 10 else f"{value:+.0f}"


def change_text(change, low, high) -> str:
    """``+7.2 % [+5.1, +9.4]``; the interval is left out where none could be drawn."""
    text = f"{signed(change)} %"
    if low is not None and high is not None and np.isfinite(low) and np.isfinite(high):
        text += f" [{signed(low)}, {signed(high)}]"
    return text


def _verdict_cell(verdict: str) -> str:
    return f"**{verdict}**" if verdict in (REGRESSION, IMPROVEMENT) else verdict


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def summary_sentence(comparison: Comparison) -> str:
    counts = [
        _plural(comparison.count(REGRESSION), REGRESSION),
        _plural(comparison.count(IMPROVEMENT), IMPROVEMENT),
        f"{comparison.count(NOISE)} {NOISE}",
    ]
    if comparison.count(TOO_FEW):
        counts.append(f"{comparison.count(TOO_FEW)} with {TOO_FEW}")
    counts[0] = f"**{counts[0]}**" if comparison.count(REGRESSION) else counts[0]
    return f"{len(comparison.rows)} series compared: " + ", ".join(counts) + "."


def interval_sentence(comparison: Comparison) -> str:
    """What the intervals cover: with repeats on both sides, the spread between fresh servers too."""
    rows = comparison.rows
    both = int(((rows["base_repeats"] > 1) & (rows["new_repeats"] > 1)).sum())
    if both == len(rows):
        return (
            "Every series was measured as repeats on fresh servers in both runs, so its interval resamples the"
            " repeats and then their requests: it covers the spread between servers as well as between requests."
        )
    return (
        f"{len(rows) - both} of {len(rows)} series were measured on one server in at least one run, so their"
        " intervals cover the spread between requests only, not between fresh servers; on a 2-core VM series of"
        " small models moved by 6 to 15 % from one fresh server to the next (docs/measurement.md,"
        ' "Repeatability"). Measure both runs with `measure.repeats` of 3 or more before gating on a verdict.'
    )


def blocks(comparison: Comparison, figure: Image | None = None) -> list:
    settings = comparison.settings
    rows = comparison.rows
    parts: list = [
        Heading(2, f"Comparison: {comparison.new.label} against {comparison.base.label}"),
        Paragraph(
            f"Base `{comparison.base.label}`, new `{comparison.new.label}`. Each change of p50 and p99 has a"
            f" {settings.confidence * 100:g} % bootstrap interval from the raw latencies ({settings.resamples:,} resamples,"
            f" seed {settings.seed}). A change is a regression (slower) or an improvement (faster) only when its"
            f" interval excludes zero and it exceeds ±{settings.threshold_pct:g} %; anything else is within noise."
        ),
        Paragraph(interval_sentence(comparison)),
        Paragraph(summary_sentence(comparison)),
    ]
    if figure is not None:
        parts.append(figure)
    latency = []
    for _, row in rows.iterrows():
        notes = [f"disturbed in {run}" for run in ("base", "new") if row[f"disturbed_{run}"]]
        if max(row["base_repeats"], row["new_repeats"]) > 1:
            notes.append(f"repeats {row['base_repeats']} / {row['new_repeats']}")
        latency.append([
            row["series"],
            *(cell for metric in METRICS for cell in (
                f"{significant(row[f'{metric}_base_ms'])} → {significant(row[f'{metric}_new_ms'])}",
                change_text(row[f"{metric}_change_pct"], row[f"{metric}_change_low_pct"], row[f"{metric}_change_high_pct"]),
                _verdict_cell(row[f"{metric}_verdict"]),
            )),
            f"{row['base_count']:,} / {row['new_count']:,}",
            "; ".join(notes),
        ])  # fmt: skip
    header = [
        "series",
        "p50 ms",
        "p50 change",
        "p50 verdict",
        "p99 ms",
        "p99 change",
        "p99 verdict",
        "requests",
        "note",
    ]
    parts += [Heading(3, "Latency"), Grid(header, latency, [False, True, True, False, True, True, False, True, False])]
    resources = [
        [
            row["series"],
            f"{significant(row['throughput_base_per_s'])} → {significant(row['throughput_new_per_s'])}",
            change_text(
                row["throughput_change_pct"], row["throughput_change_low_pct"], row["throughput_change_high_pct"]
            ),
            f"{significant(row['peak_memory_base_mb'])} → {significant(row['peak_memory_new_mb'])}",
            change_text(row["peak_memory_change_pct"], None, None),
        ]
        for _, row in rows.iterrows()
    ]
    parts += [
        Heading(3, "Throughput and server memory"),
        Paragraph("Throughput is items per second (batch × 1000 / mean latency), its interval from the same bootstrap."
                  " Peak memory is the server's peak RSS, one reading per run, so it has no interval and no verdict."),
        Grid(["series", "throughput /s", "throughput change", "peak RSS MiB", "peak RSS change"], resources,
             [False, True, True, True, True]),
    ]  # fmt: skip
    parts.append(Heading(3, "What differs between the runs"))
    if comparison.differences:
        parts.append(
            Paragraph(
                "Provenance that could explain a change (every recorded key that differs, likeliest causes first):"
            )
        )
        parts.append(Grid(["key", "base", "new", "models"],
                          [[row["key"], row["base"], row["new"], ", ".join(row["models"])] for row in comparison.differences],
                          [False] * 4))  # fmt: skip
    else:
        parts.append(
            Paragraph("Nothing recorded in the provenance differs: same backend, versions, machine, config and code.")
        )
    parts.append(Heading(3, "Disturbed series"))
    recorded = sum(
        1 for tree in (comparison.base, comparison.new) for one in tree.series.values() if one.disturbance is not None
    )
    flagged = [
        [run, label, "; ".join(reasons)]
        for run, found in comparison.disturbed.items()
        for label, reasons in found.items()
    ]
    if flagged:
        parts.append(
            Paragraph("The machine was busy with other work while these were measured; their changes may be that:")
        )
        parts.append(Grid(["run", "series", "why"], flagged, [False] * 3))
    elif recorded:
        parts.append(Paragraph("No series was flagged as disturbed in either run."))
    else:
        parts.append(Paragraph("Neither run recorded disturbance (the runs predate the disturbance sampler)."))
    if comparison.only_base or comparison.only_new:
        parts.append(Heading(3, "Only in one run"))
        for run, labels in (("base", comparison.only_base), ("new", comparison.only_new)):
            if labels:
                parts.append(Paragraph(f"Only in {run}: " + ", ".join(f"`{label}`" for label in labels) + "."))
    return parts


def to_markdown(parts: Sequence) -> str:
    out = []
    for part in parts:
        if isinstance(part, Heading):
            out.append(f"{'#' * part.level} {escape(part.text)}\n")
        elif isinstance(part, Paragraph):
            out.append(part.text + "\n")
        elif isinstance(part, Grid):
            out.append(markdown_table(part.header, part.rows, part.numeric))
        elif isinstance(part, Image):
            out.append(f"![{part.alt}]({part.path})\n")
    return "\n".join(out)


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _cell(text: str, numeric: bool) -> str:
    verdict = text.strip("*")
    css = [
        cls for cls, on in (("num", numeric), (verdict.replace(" ", "-"), verdict in (REGRESSION, IMPROVEMENT))) if on
    ]
    attribute = f' class="{" ".join(css)}"' if css else ""
    return f"<td{attribute}>{_inline(text)}</td>"


def to_html_section(parts: Sequence) -> str:
    """A ``<section>`` to drop into any HTML report."""
    out = ['<section class="serveprof-compare">']
    for part in parts:
        if isinstance(part, Heading):
            out.append(f"<h{part.level}>{_inline(part.text)}</h{part.level}>")
        elif isinstance(part, Paragraph):
            out.append(f"<p>{_inline(part.text)}</p>")
        elif isinstance(part, Grid):
            head = "".join(f"<th>{_inline(cell)}</th>" for cell in part.header)
            body = "".join(
                "<tr>"
                + "".join(_cell(cell, numeric) for cell, numeric in zip(row, part.numeric, strict=True))
                + "</tr>"
                for row in part.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(part, Image):
            source = (
                f"data:image/png;base64,{base64.b64encode(part.png).decode()}" if part.png else html.escape(part.path)
            )
            out.append(f'<figure><img src="{source}" alt="{html.escape(part.alt)}"></figure>')
    out.append("</section>")
    return "\n".join(out) + "\n"


STYLE = """body { font-family: sans-serif; margin: 2em; max-width: 75em; }
table { border-collapse: collapse; margin: 1em 0; } th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.num { text-align: right; } td.regression { background: #fbe3d6; } td.improvement { background: #d9e8f5; }
img { max-width: 100%; }"""


def to_html_page(parts: Sequence, title: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{to_html_section(parts)}</body></html>\n"
    )
