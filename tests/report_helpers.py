"""Shared by the report tests: the fixture run's paths and a markdown table reader."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).resolve().parent / "data" / "results"
PROFILING = RESULTS / "profiling"
ACQUIRED = RESULTS / "acquired"
PROFILED = ["ssd_mobilenet", "inception", "nasnet"]
UNAVAILABLE = ["efficient"]
ALL_MODELS = PROFILED + UNAVAILABLE


def summary(model: str) -> pd.DataFrame:
    return pd.read_csv(PROFILING / model / "summary.csv").sort_values("batch_size").reset_index(drop=True)


def coldstart(model: str) -> pd.Series:
    return pd.read_csv(PROFILING / model / "coldstart.csv").iloc[0]


def section(markdown: str, title: str) -> str:
    """The text under ``## title`` up to the next ``## `` heading."""
    start = markdown.index(f"## {title}\n")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end >= 0 else None]


def parse_table(text: str) -> list[dict[str, str]]:
    """The first markdown table in ``text`` as rows of {header: cell}; blank model cells filled down."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = lambda line: [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]  # noqa: E731
    header = split(lines[0])
    assert all(re.fullmatch(r":?-+:?", cell) for cell in split(lines[1])), "second line must be the alignment row"
    rows, last_model = [], None
    for line in lines[2:]:
        cells = split(line)
        assert len(cells) == len(header), f"ragged row: {line}"
        row = dict(zip(header, cells))
        if "model" in row:
            last_model = row["model"] = row["model"] or last_model
        rows.append(row)
    return rows


def number(cell: str) -> tuple[float, float]:
    """A printed number and the rounding half-width its digits imply ("1,234" -> (1234, 0.5))."""
    match = re.search(r"-?[\d,]+(?:\.(\d+))?", cell)
    assert match, f"no number in cell {cell!r}"
    decimals = len(match.group(1) or "")
    return float(match.group(0).replace(",", "")), 0.5 * 10.0**-decimals


def assert_printed(cell: str, value: float) -> None:
    printed, half_width = number(cell)
    assert abs(printed - value) <= half_width * (1 + 1e-9), f"cell {cell!r} does not show {value}"
    # Three significant digits: a reader needs no more, and no fewer for small values.
    digits = len(re.sub(r"\D", "", cell.split("†")[0].split("‡")[0]).lstrip("0"))
    assert digits >= 3 or abs(value) >= 1000, f"cell {cell!r} shows too few digits of {value}"
