"""Numbers formatted for reading: a few significant digits, never scientific notation."""

from __future__ import annotations

import math

MISSING = "–"


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def significant(value, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, keeping every integer digit.

    1544.2 -> "1,544", 15.27 -> "15.3", 0.51234 -> "0.512": a reader compares
    magnitudes at a glance, and the CSV files keep the full precision.
    """
    if is_missing(value):
        return MISSING
    value = float(value)
    if value == 0:
        return "0"
    decimals = max(digits - 1 - math.floor(math.log10(abs(value))), 0)
    text = f"{value:,.{decimals}f}"
    # Rounding can carry into a new digit (9.996 -> "10.00"); redo with one decimal fewer.
    if decimals and len(text.replace(",", "").replace("-", "").replace(".", "").lstrip("0")) > digits:
        text = f"{value:,.{decimals - 1}f}"
    return text


def integer(value) -> str:
    return MISSING if is_missing(value) else f"{int(round(float(value))):,}"
