"""``serveprof compare BASE NEW``: did the new run get slower, and is it more than noise?

BASE and NEW are result folders (a project folder holding ``workload/``, or a
``workload/profiling`` folder) or names of runs kept with ``serveprof snapshot``.

Exit status: 0 when no series regressed, 3 when at least one did (so CI can gate on
it), 1 for an error (unreadable results, nothing in common), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from serveprof.atomic import atomic_write_text
from serveprof.compare import changes
from serveprof.compare.runs import RUNS_DIR, resolve

EXIT_OK = 0
EXIT_REGRESSION = 3
OUT = Path("reports/compare")


def write_outputs(comparison, out: Path, style) -> list[Path]:
    """compare.md, compare.html (figure embedded), compare.csv, differences.json and the forest plot."""
    from serveprof.compare import document
    from serveprof.compare.forest import build_forest_figure
    from serveprof.report.figures import save_figure

    out.mkdir(parents=True, exist_ok=True)
    fig = build_forest_figure(comparison, style)
    written = save_figure(fig, out / "forest", style)
    if "png" in style.formats:
        png = (out / "forest.png").read_bytes()
    else:  # the HTML embeds a PNG whatever formats the style asks for
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=style.dpi)
        png = buffer.getvalue()
    image = document.Image("forest.png" if "png" in style.formats else "", "forest plot of the latency changes", png)
    parts = document.blocks(comparison, image)
    title = f"serveprof: {comparison.new.label} against {comparison.base.label}"
    # The markdown links the figure only where a PNG was written beside it.
    markdown_parts = [part for part in parts if not (isinstance(part, document.Image) and not part.path)]
    files = {
        "compare.md": document.to_markdown(markdown_parts),
        "compare.html": document.to_html_page(parts, title),
        "compare.csv": comparison.rows.to_csv(index=False),
        "differences.json": json.dumps({
            "provenance": comparison.differences, "disturbed": comparison.disturbed,
            "only_base": comparison.only_base, "only_new": comparison.only_new,
        }, indent=2) + "\n",
    }  # fmt: skip
    for name, text in files.items():
        atomic_write_text(out / name, text)
        written.append(out / name)
    return written


def label(argument: str) -> str:
    """How a run is named in the outputs: as given, except "." (say which folder)."""
    return f"{Path.cwd().name} (.)" if Path(argument) == Path(".") else argument


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof compare", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("base", help="the baseline: a result folder or a run name under --runs-dir")
    parser.add_argument("new", help="the run to judge: a result folder or a run name under --runs-dir")
    parser.add_argument(
        "--runs-dir", type=Path, default=RUNS_DIR, help=f"where named runs are kept (default {RUNS_DIR})"
    )
    parser.add_argument(
        "--threshold-pct",
        type=float,
        default=changes.THRESHOLD_PCT,
        help=f"smallest relative change that counts (default {changes.THRESHOLD_PCT:g})",
    )
    parser.add_argument(
        "--confidence", type=float, default=changes.CONFIDENCE, help=f"interval level (default {changes.CONFIDENCE})"
    )
    parser.add_argument(
        "--resamples", type=int, default=changes.RESAMPLES, help=f"bootstrap resamples (default {changes.RESAMPLES})"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="bootstrap seed: the same seed gives the same intervals (default 0)"
    )
    parser.add_argument(
        "--out", type=Path, default=OUT, help=f"folder for compare.md/.html/.csv and the figure (default {OUT})"
    )
    parser.add_argument(
        "--style", help="the config's plots: block as JSON, or a JSON file's path (default: the schema defaults)"
    )
    args = parser.parse_args(argv)

    from serveprof.commands.arguments import load_style
    from serveprof.compare.comparison import compare_trees
    from serveprof.compare.document import summary_sentence
    from serveprof.compare.trees import read_tree

    settings = changes.Settings(args.threshold_pct, args.confidence, args.resamples, args.seed)
    style = load_style(args.style)
    base = read_tree(resolve(args.base, args.runs_dir), label=label(args.base))
    new = read_tree(resolve(args.new, args.runs_dir), label=label(args.new))
    comparison = compare_trees(base, new, settings)
    written = write_outputs(comparison, args.out, style)
    print(summary_sentence(comparison).replace("**", ""))
    for _, row in comparison.rows[
        comparison.rows["verdict"].isin([changes.REGRESSION, changes.IMPROVEMENT])
    ].iterrows():
        moved = [
            f"{metric} {row[f'{metric}_change_pct']:+.1f} %"
            f" [{row[f'{metric}_change_low_pct']:+.1f}, {row[f'{metric}_change_high_pct']:+.1f}]"
            for metric in changes.METRICS
            if row[f"{metric}_verdict"] in (changes.REGRESSION, changes.IMPROVEMENT)
        ]
        print(f"  {row['verdict']}: {row['series']}: {'; '.join(moved)}")
    for difference in comparison.differences:
        print(
            f"  differs: {difference['key']}: {difference['base']} -> {difference['new']} ({', '.join(difference['models'])})"
        )
    print(
        f"wrote {', '.join(str(path) for path in written if path.suffix in ('.md', '.html'))} and the figure under {args.out}"
    )
    return EXIT_REGRESSION if len(comparison.regressions) else EXIT_OK
