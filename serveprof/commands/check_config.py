"""``serveprof check-config``: validate config files the way the workflow will, before any job runs."""

from __future__ import annotations

import argparse

from serveprof import settings
from serveprof.config_problems import DOWNLOAD_DIR
from serveprof.models.archive import tarball_file_name


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="serveprof check-config",
        description="Validate config files (later ones override earlier ones, as --configfile does).",
    )
    parser.add_argument(
        "configs", nargs="+", metavar="CONFIG", help="YAML config files, e.g. config/config.yaml my-models.yaml"
    )
    args = parser.parse_args(argv)
    loaded = settings.load_files(args.configs)
    print(f"config OK: {len(loaded.models)} model(s)")
    for name, definition in loaded.models.items():
        sizes = ", ".join(map(str, loaded.batch_sizes(name)))
        # Where to stage a zoo tarball by hand on a machine without internet.
        staged = (
            f", tarball {DOWNLOAD_DIR}/{tarball_file_name(definition['url'])}"
            if definition["source"] == "tf2_zoo"
            else ""
        )
        print(f"  {name}: {definition['source']} {definition['type']}, batch sizes {sizes}{staged}")
    return 0
