"""Run the real workflow (snakemake as a subprocess) in a scratch directory and read what it did."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
JOB_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")
# Nothing listens on the discard port: a download through this proxy fails at once.
CLOSED_PROXY = "http://127.0.0.1:9"


@dataclasses.dataclass
class Run:
    returncode: int
    output: str
    jobs: list[tuple[str, dict]]  # (rule, wildcards) of every job that ran (or, with -n, would run)

    def rules(self) -> set[str]:
        return {rule for rule, _ in self.jobs}

    def jobs_of(self, rule: str) -> list[dict]:
        return [wildcards for name, wildcards in self.jobs if name == rule]

    @property
    def nothing_to_do(self) -> bool:
        return self.jobs == [] and "Nothing to be done" in self.output


def parse_jobs(output: str) -> list[tuple[str, dict]]:
    jobs: list[tuple[str, dict]] = []
    for line in output.splitlines():
        header = JOB_HEADER.match(line)
        if header:
            jobs.append((header.group(1), {}))
            continue
        found = WILDCARDS.match(line)
        if found and jobs:
            # A dimension at its default is an empty folder segment (serveprof/layout.py: the host
            # device, one series per cell): left out, so a reference-layout job reads as it always did.
            pairs = dict(part.split("=", 1) for part in found.group(1).split(", "))
            jobs[-1][1].update({name: value for name, value in pairs.items() if value})
    return jobs


def workflow_env() -> dict[str, str]:
    """The venv's tools first; no network but loopback; Keras's cache in the workflow directory.

    `KERAS_HOME` is relative, so it resolves in the directory Snakemake runs in, and a
    copy of a workflow directory takes its (empty) Keras cache along.
    """
    offline = {name: CLOSED_PROXY for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    return dict(
        os.environ,
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        TF_CPP_MIN_LOG_LEVEL="2",
        KERAS_HOME="keras_home",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        **offline,
    )


def workflow_command(
    workdir: Path, *extra: str, target: str | None = "workload/profiling/all", configfile: Path | None = None
) -> list[str]:
    """The command README.md documents: the target before `--configfile`, which takes several files.

    ``target=None`` runs the default target, the output-less `all` rule (`snakemake --cores 1`).
    """
    return [
        str(BIN / "snakemake"),
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "1",
        *([target] if target else []),
        "--configfile",
        str(configfile or workdir / "config.yaml"),
        *extra,
    ]


def run_command(command: list[str], timeout: int = 1200) -> Run:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=workflow_env(), stdin=subprocess.DEVNULL
    )
    output = result.stdout + result.stderr
    return Run(result.returncode, output, parse_jobs(output))


def run_workflow(workdir: Path, *extra: str, target: str | None = "workload/profiling/all", timeout: int = 1200) -> Run:
    return run_command(workflow_command(workdir, *extra, target=target), timeout=timeout)


def read_config(workdir: Path) -> dict:
    return yaml.safe_load((workdir / "config.yaml").read_text())


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def tiny_test_config(zoo_url: str, **models: dict) -> dict:
    """The repository's tiny test config, with the zoo tarball's live URL and extra models."""
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    config["models"]["tiny_zoo"]["url"] = zoo_url
    config["models"].update(models)
    return config
