"""Two result trees compared series by series: the table every output of ``compare`` is drawn from."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from serveprof.compare.changes import METRICS, REGRESSION, Settings, compare_latencies, overall
from serveprof.compare.differences import disturbed, provenance_differences
from serveprof.compare.trees import DIMENSIONS, ResultTree, Series
from serveprof.errors import ServeprofError


def _relative(base: float | None, new: float | None) -> float | None:
    if base is None or new is None or base == 0:
        return None
    return 100.0 * (new / base - 1.0)


@dataclass
class Comparison:
    base: ResultTree
    new: ResultTree
    settings: Settings
    rows: pd.DataFrame  # one row per series in both runs (columns: see ``compare_trees``)
    only_base: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    differences: list[dict] = field(default_factory=list)
    disturbed: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # run -> series label -> reasons

    @property
    def dimensions(self) -> list[str]:
        return [name for name in DIMENSIONS if name in self.rows.columns]

    def count(self, verdict: str) -> int:
        return int((self.rows["verdict"] == verdict).sum())

    @property
    def regressions(self) -> pd.DataFrame:
        return self.rows[self.rows["verdict"] == REGRESSION]


def _row(key: tuple, base: Series, new: Series, settings: Settings, flagged: dict) -> dict:
    label = base.label
    row: dict = {**dict(key), "series": label}
    row.update(compare_latencies(base.parts(), new.parts(), settings, label))
    row["verdict"] = overall([row[f"{metric}_verdict"] for metric in METRICS])
    row.update({
        "throughput_base_per_s": base.throughput_per_s,
        "throughput_new_per_s": new.throughput_per_s,
        "peak_memory_base_mb": base.peak_memory_mb,
        "peak_memory_new_mb": new.peak_memory_mb,
        "peak_memory_change_pct": _relative(base.peak_memory_mb, new.peak_memory_mb),
        "disturbed_base": key in flagged["base"],
        "disturbed_new": key in flagged["new"],
    })  # fmt: skip
    return row


def compare_trees(base: ResultTree, new: ResultTree, settings: Settings | None = None) -> Comparison:
    """Every series in both trees compared; series in only one are listed by label."""
    settings = settings or Settings()
    common = [key for key in base.series if key in new.series]
    if not common:
        raise ServeprofError(
            f"{base.label} and {new.label} have no series in common (models {', '.join(base.models)} against {', '.join(new.models)})",
            "compare two runs of the same models and batch sizes",
        )
    flagged = {"base": disturbed(base), "new": disturbed(new)}
    rows = pd.DataFrame([_row(key, base.series[key], new.series[key], settings, flagged) for key in common])
    return Comparison(
        base=base,
        new=new,
        settings=settings,
        rows=rows,
        only_base=[one.label for key, one in base.series.items() if key not in new.series],
        only_new=[one.label for key, one in new.series.items() if key not in base.series],
        differences=provenance_differences(base, new),
        disturbed={run: {trees.series[key].label: reasons for key, reasons in found.items()}
                   for (run, found), trees in zip(flagged.items(), (base, new), strict=True)},
    )  # fmt: skip
