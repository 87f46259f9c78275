"""Model definitions from a file: a YAML mapping, or a sheet (TSV or CSV) with one model per row.

A sheet has a ``model`` column (the model key) and one column per definition key
(``source``, ``type``, ``application``, ``weights``, ``url``, ``sha256``, ``path``,
``signature``, ``input_size``, ``batch_sizes``). An empty cell leaves its key out. The
two list-valued keys take whole numbers separated by ``x``, commas or spaces:
``512x512`` for ``input_size``, ``1 2 4`` for ``batch_sizes``. The definitions are
checked against the config schema afterwards, like inline ones.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import yaml

from serveprof.errors import ServeprofError

SHEET_DELIMITERS = {".tsv": "\t", ".csv": ","}
YAML_SUFFIXES = (".yaml", ".yml")
KEY_COLUMN = "model"
NUMBER_LIST_COLUMNS = ("input_size", "batch_sizes")
SUFFIX_FIX = "name a .yaml/.yml file of model definitions, or a .tsv/.csv sheet with one model per row"


def read_models(path: str | Path) -> dict:
    """The model definitions in ``path``, by model key, in file order."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in YAML_SUFFIXES and suffix not in SHEET_DELIMITERS:
        raise ServeprofError(f"models: {path} is neither YAML nor a TSV/CSV sheet (by its suffix)", SUFFIX_FIX)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ServeprofError(
            f"models: {path} (resolved: {path.resolve()}) does not exist",
            "give the path of the models file, relative to the workflow directory",
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ServeprofError(f"models: {path} cannot be read ({error})", "make it a readable UTF-8 text file") from None
    if suffix in YAML_SUFFIXES:
        return _yaml_models(path, text)
    return _sheet_models(path, text, SHEET_DELIMITERS[suffix])


def _yaml_models(path: Path, text: str) -> dict:
    try:
        models = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ServeprofError(
            f"models file {path} is not valid YAML: {error}", "fix the YAML syntax at the position shown"
        ) from None
    if not isinstance(models, dict):
        raise ServeprofError(
            f"models file {path} holds a {type(models).__name__}, not a mapping of model keys",
            "write one `<model key>:` per model with its definition indented below it",
        )
    return models


def _numbers(text: str) -> list[int | str]:
    """``512x512``, ``1, 2, 4`` or ``[1, 2]`` as a list; a part that is no whole number stays text for the schema to refuse."""
    parts = [part for part in re.split(r"[\sx,;\[\]]+", text.strip()) if part]
    return [int(part) if re.fullmatch(r"[0-9]+", part) else part for part in parts]


def _sheet_models(path: Path, text: str, delimiter: str) -> dict:
    rows = csv.DictReader(text.splitlines(), delimiter=delimiter)
    columns = [column.strip() for column in rows.fieldnames or []]
    if KEY_COLUMN not in columns:
        raise ServeprofError(
            f"models sheet {path} has no {KEY_COLUMN!r} column (columns: {', '.join(columns) or 'none'})",
            f"give the sheet a header row with a {KEY_COLUMN!r} column and one column per definition key",
        )
    models: dict = {}
    for line, row in enumerate(rows, start=2):
        cells = {(key or "").strip(): (value or "").strip() for key, value in row.items() if key is not None}
        if None in row:
            raise ServeprofError(
                f"models sheet {path}, line {line}: more cells than header columns",
                f"remove the extra cells, or quote a cell that holds the delimiter {delimiter!r}",
            )
        model = cells.pop(KEY_COLUMN)
        if not model:
            if any(cells.values()):
                raise ServeprofError(f"models sheet {path}, line {line}: no model key", f"fill the {KEY_COLUMN!r} cell")
            continue  # a blank line
        if model in models:
            raise ServeprofError(
                f"models sheet {path}, line {line}: model {model!r} is defined twice", "keep one row per model key"
            )
        models[model] = {
            key: _numbers(value) if key in NUMBER_LIST_COLUMNS else value for key, value in cells.items() if value
        }
    return models
