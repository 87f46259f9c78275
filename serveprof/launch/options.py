"""The option files a server reads, written once per launch and the same for every backend.

``server.batching`` becomes TF Serving's text-format BatchingParameters
(``--enable_batching --batching_parameters_file=...``), and a metrics path a
MonitoringConfig that serves the Prometheus page there (``--monitoring_config_file``).
The launcher writes them into a folder of their own for the server's lifetime; a
container sees that folder mounted read-only at ``MOUNT``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from serveprof.launch.spec import ServerSpec

MOUNT = "/serveprof/options"
BATCHING_FILE = "batching_parameters.txt"
MONITORING_FILE = "monitoring_config.txt"


def option_files(spec: ServerSpec) -> dict[str, str]:
    """File name -> text of every option file ``spec`` asks for (checked as TF Serving checks them)."""
    files = {}
    if spec.batching is not None:
        from serveprof.server.batching import batching_parameters_text

        files[BATCHING_FILE] = batching_parameters_text(spec.batching)
    if spec.metrics_path:
        files[MONITORING_FILE] = f'prometheus_config {{\n  enable: true\n  path: "{spec.metrics_path}"\n}}\n'
    return files


def option_flags(spec: ServerSpec, folder: str) -> list[str]:
    """tensorflow_model_server's flags for the option files, as the server sees ``folder``."""
    flags = []
    if spec.batching is not None:
        flags += ["--enable_batching", f"--batching_parameters_file={folder}/{BATCHING_FILE}"]
    if spec.metrics_path:
        flags.append(f"--monitoring_config_file={folder}/{MONITORING_FILE}")
    return flags


@contextlib.contextmanager
def written(files: dict[str, str]) -> Iterator[str | None]:
    """A fresh folder holding ``files`` (None when there are none), removed afterwards."""
    if not files:
        yield None
        return
    folder = tempfile.mkdtemp(prefix="serveprof-options-")
    try:
        for name, text in files.items():
            Path(folder, name).write_text(text, encoding="utf-8")
        Path(folder).chmod(0o755)  # a container's server may run as another user
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
