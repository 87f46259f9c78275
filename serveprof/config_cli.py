"""``serveprof check-config``: validate config files the way the workflow will, before any job runs."""

from __future__ import annotations

import argparse

from serveprof.config import DOWNLOAD_DIR, load_config_file, merge_configs, model_batch_sizes, tarball_file_name, with_defaults


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="serveprof check-config",
        description="Validate config files (later ones override earlier ones; `models:` is replaced, not merged).",
    )
    parser.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML config files, e.g. config.yaml my-models.yaml")
    args = parser.parse_args(argv)
    merged: dict = {}
    for path in args.configs:
        merged = merge_configs(merged, load_config_file(path))
    config = with_defaults(merged)
    print(f"config OK: {len(config['models'])} model(s)")
    for name, definition in config["models"].items():
        sizes = ", ".join(map(str, model_batch_sizes(config, name)))
        # Where to stage a zoo tarball by hand on a machine without internet.
        staged = f", tarball {DOWNLOAD_DIR}/{tarball_file_name(definition['url'])}" if definition["source"] == "tf2_zoo" else ""
        print(f"  {name}: {definition['source']} {definition['type']}, batch sizes {sizes}{staged}")
    return 0
