"""Named runs under ``runs/<name>/``: keep a run's results without re-measuring, find them by name.

A kept run mirrors the project's layout (``runs/<name>/workload/...`` and
``runs/<name>/data/model/acquired/``), so every reader that takes a results folder
reads it too: ``serveprof plot --results runs/<name>/workload/profiling``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path

from serveprof.errors import ServeprofError
from serveprof.measure.provenance import now_iso
from serveprof.measure.result_files import read_json, write_json

RUNS_DIR = Path("runs")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# What a run's results are: every result layout lives under workload/, the
# acquisition statuses say which weights each model ran with, and the variant
# statuses how each variant was built.
KEPT = (Path("workload"), Path("data/model/acquired"), Path("data/model/variants"))
RECORD = "snapshot.json"


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ServeprofError(
            f"run name {name!r} is not usable as a folder name",
            "use letters, digits, '.', '_' and '-' (starting with a letter or digit), e.g. tf-2.21-baseline",
        )
    return name


def list_runs(runs_dir: Path = RUNS_DIR) -> list[str]:
    if not runs_dir.is_dir():
        return []
    return sorted(path.name for path in runs_dir.iterdir() if path.is_dir() and NAME.match(path.name))


def resolve(argument: str, runs_dir: Path = RUNS_DIR) -> Path:
    """A run's results folder from a run name kept under ``runs_dir``, or from a path.

    A plain name (no ``/``) that names a kept run is that run, even where a folder of
    the same name exists here: names are what ``compare`` is usually given.
    """
    if "/" not in argument and NAME.match(argument) and (runs_dir / argument).is_dir():
        return runs_dir / argument
    path = Path(argument)
    if path.is_dir():
        return path
    kept = list_runs(runs_dir)
    raise ServeprofError(
        f"{argument!r} is neither a folder nor a run kept under {runs_dir}/"
        + (f" (kept runs: {', '.join(kept)})" if kept else f" ({runs_dir}/ holds no runs)"),
        "pass a project folder holding workload/, or keep a run first with `serveprof snapshot NAME`",
    )


def _temporary(name: str) -> bool:
    """Files an atomic writer has not renamed yet (``.<name>.<hex>.tmp``): never part of a result."""
    return name.startswith(".") and name.endswith(".tmp")


def _copier(link: bool):
    def copy(source: str, target: str) -> str:
        if link:
            try:
                os.link(source, target)
                return target
            except OSError:  # another file system, or links not allowed: copy instead
                pass
        return shutil.copy2(source, target)

    return copy


def snapshot(
    name: str,
    source: Path = Path("."),
    runs_dir: Path = RUNS_DIR,
    link: bool = False,
    replace: bool = False,
    note: str | None = None,
) -> Path:
    """Keep ``source``'s results as ``runs_dir/name``; return that folder.

    The copy is built beside its destination and renamed into place, so a kept run is
    whole or absent. An existing run is replaced only when ``replace`` is set.
    ``link`` hard-links the files instead of copying them: safe here because every
    result file is replaced by rename, never rewritten in place, so a later run of the
    workflow leaves the kept files as they were.
    """
    from serveprof.compare.trees import PROFILING, read_tree
    from serveprof.measure.provenance import git_state

    check_name(name)
    source = Path(source)
    tree = read_tree(source)  # refuses a folder without results, before anything is written
    target = runs_dir / name
    if target.exists() and not replace:
        kept = read_json(target / RECORD, "run record") if (target / RECORD).is_file() else {}
        when = f" (kept {kept['created_at']} from {kept.get('source')})" if kept.get("created_at") else ""
        raise ServeprofError(
            f"run {name!r} already exists at {target}{when}",
            "choose another name, or pass --replace to overwrite it",
        )
    runs_dir.mkdir(parents=True, exist_ok=True)
    partial = runs_dir / f".{name}.{secrets.token_hex(4)}.partial"
    try:
        # A bare workload/profiling folder is kept in the project's layout.
        parts = [(source / part, partial / part) for part in KEPT if (source / part).is_dir()]
        if not (source / "workload").is_dir():
            parts.append((source, partial / PROFILING))
        for origin, copy in parts:
            shutil.copytree(
                origin, copy, copy_function=_copier(link), ignore=lambda _, names: [n for n in names if _temporary(n)]
            )
        copied = sum(1 for path in partial.rglob("*") if path.is_file())
        revision, dirty = git_state(source.resolve())
        write_json(partial / RECORD, {
            "name": name,
            "created_at": now_iso(),
            "source": str(source.resolve()),
            "git_revision": revision,
            "git_dirty": dirty,
            "linked": link,
            "files": copied,
            "series": len(tree.series),
            "models": tree.models,
            "note": note,
        })  # fmt: skip
        old = None
        if target.exists():
            old = runs_dir / f".{name}.{secrets.token_hex(4)}.old"
            target.rename(old)
        partial.rename(target)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(partial)
        raise
    return target
