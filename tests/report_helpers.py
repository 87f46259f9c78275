"""Shared by the report tests: the fixture run's paths and a markdown table reader."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "data" / "results"
PROFILING = RESULTS / "profiling"
ACQUIRED = RESULTS / "acquired"
PROFILED = ["ssd_mobilenet", "inception", "nasnet"]
UNAVAILABLE = ["efficient"]
ALL_MODELS = PROFILED + UNAVAILABLE
# config.yaml's model keys: the zoo keys run to 52 characters.
DEFAULT_MODELS = [
    "center_mobile", "center_resnet", "ssd_mobilenet", "nasnet", "inception", "efficient",
    "faster_rcnn_inception_resnet_v2_640x640_coco17_tpu-8", "ssd_resnet50_v1_fpn_640x640_coco17_tpu-8",
]  # fmt: skip


def synthetic_summary(models: list[str], batches=(1, 2, 4, 8, 16, 32)) -> pd.DataFrame:
    """A summary frame as load_summary returns it, with latencies from 30 ms up to about 100 s."""
    records = []
    for rank, model in enumerate(models):
        for batch in batches:
            mean = 30.0 * 2.2**rank * batch**0.95
            records.append({
                "model": model, "batch_size": batch, "count": 20, "mean_ms": mean, "p50_ms": mean * 0.98,
                "p99_ms": mean * 1.2, "throughput_per_s": batch * 1000 / mean, "truncated": rank % 2 == 1,
                "low_sample_percentiles": ("p99",) if rank % 2 else (), "cpu_util_pct": 150.0 + rank + batch,
                "rss_peak_mb": 1000.0 + 400 * rank + 30 * batch, "rss_mean_mb": 900.0 + 400 * rank + 25 * batch,
                "gpu_util_pct": np.nan, "gpu_mem_mb": np.nan,
            })  # fmt: skip
    return pd.DataFrame(records)


def synthetic_coldstart(models: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"model": models, "load_ms": [4000.0 + 7000 * i for i in range(len(models))],
                         "first_infer_ms": [1500.0 + 2500 * i for i in range(len(models))]})  # fmt: skip


def copy_renamed(model: str, new: str, out: Path) -> tuple[Path, Path]:
    """The fixture run copied to ``out`` with ``model`` renamed ``new`` (results and status); (profiling, acquired)."""
    profiling, acquired = out / "profiling", out / "acquired"
    shutil.copytree(PROFILING, profiling)
    shutil.copytree(ACQUIRED, acquired)
    folder = profiling / new
    (profiling / model).rename(folder)
    for path in sorted(folder.iterdir()):
        if path.name.startswith(model):
            path = path.rename(folder / (new + path.name[len(model) :]))
        if path.suffix in (".csv", ".json") and not re.search(r"-b\d+\.csv$", path.name):
            path.write_text(path.read_text().replace(model, new))
    status = json.loads((acquired / f"{model}.json").read_text())
    (acquired / f"{model}.json").unlink()
    (acquired / f"{new}.json").write_text(json.dumps({**status, "model": new}))
    return profiling, acquired


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
    all_lines = text.splitlines()
    start = next(index for index, line in enumerate(all_lines) if line.startswith("|"))
    lines = []
    for line in all_lines[start:]:
        if not line.startswith("|"):
            break  # the table ends at its first non-table line
        lines.append(line)
    split = lambda line: [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]  # noqa: E731
    header = split(lines[0])
    assert all(re.fullmatch(r":?-+:?", cell) for cell in split(lines[1])), "second line must be the alignment row"
    rows, last_model = [], None
    for line in lines[2:]:
        cells = split(line)
        assert len(cells) == len(header), f"ragged row: {line}"
        row = dict(zip(header, cells, strict=True))
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
