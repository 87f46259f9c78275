"""GitHub-flavoured markdown building blocks: tables and escaped text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd


def escape(text: object) -> str:
    """Cell text that cannot break a table row: pipes escaped, line breaks flattened."""
    return " ".join(str(text).split()).replace("|", "\\|")


@dataclass
class Table:
    """One report table: display cells for markdown, full-precision data for CSV."""

    name: str  # file stem under reports/tables/
    title: str
    header: list[str]
    rows: list[list[str]]
    numeric: list[bool]  # right-align these columns
    data: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        text = markdown_table(self.header, self.rows, self.numeric)
        if self.notes:
            text += "\n" + "\n".join(f"{note}  " for note in self.notes) + "\n"
        return text


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]) -> str:
    lines = [
        "| " + " | ".join(escape(cell) for cell in header) + " |",
        "|" + "|".join("---:" if right else "---" for right in numeric) + "|",
    ]
    for row in rows:
        # An empty cell would collapse visually; a space keeps the grid.
        lines.append("| " + " | ".join(escape(cell) or " " for cell in row) + " |")
    return "\n".join(lines) + "\n"
