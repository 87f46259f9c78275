"""Where the numbers came from: host, code revision, versions.

``host_provenance()`` runs inside each measurement job (on the machine that measured,
which on a cluster is not the one that aggregates) and is stored in the stats JSON;
``build_provenance`` combines those records into a model's ``provenance.json``.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import serveprof
from serveprof.measure.resources import GpuProbe

PACKAGE_ROOT = Path(serveprof.__file__).resolve().parent


def now_iso() -> str:
    """Now, in UTC, to the second: the stamp of every result's start and end."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_state(path: Path = PACKAGE_ROOT) -> tuple[str, bool | None]:
    """(HEAD revision, whether the work tree differs from it) of the checkout holding ``path``.

    ("unknown", None) for an installed copy that is not a git checkout.
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, timeout=30, check=True
        ).stdout

    try:
        revision = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain").strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    return revision, dirty


def installed_version(distribution: str) -> str | None:
    """A distribution's version from its metadata: no import (TensorFlow's costs seconds)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def host_provenance(gpu: GpuProbe | None) -> dict:
    """The measuring host and code; ``gpu`` is the probe the resource sampler uses."""
    revision, dirty = git_state()
    return {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": "; ".join(gpu.names()) if gpu else None,
        "python_version": platform.python_version(),
        "serveprof_version": serveprof.__version__,
        "git_revision": revision,
        "git_dirty": dirty,
    }


def _agreed(values: Sequence) -> object:
    """One value if every job agrees, else the distinct values joined, so a mixed run shows."""
    distinct = list(dict.fromkeys(value for value in values if value is not None))
    if not distinct:
        return None
    return distinct[0] if len(distinct) == 1 else "; ".join(map(str, distinct))


def tensorflow_version(server: Mapping) -> str | None:
    """The serving TF: as the launcher recorded it (the server's ``--version``), else, for an embedded
    server's stats written before the launcher recorded it, the installed TF of the same venv."""
    if server.get("tensorflow_version"):
        return server["tensorflow_version"]
    if server.get("backend") == "embedded":
        return installed_version("tensorflow")
    return None


def _notes(servers: Sequence[Mapping]) -> list[str] | None:
    """Every distinct note the launcher made about the servers (a probe that failed, an unseen GPU)."""
    notes = list(dict.fromkeys(note for server in servers for note in server.get("notes") or []))
    return notes or None


def keep_awake_of(stats_docs: Sequence[Mapping]) -> str | None:
    """Whether the series ran with every CPU kept awake (``measure.keep_awake``), as compare shows it.

    None when none did, so a run from before the key existed reads the same as one without it.
    """
    described = []
    for doc in stats_docs:
        record = doc.get("keep_awake")
        if not record:
            described.append("off")
            continue
        cpus = ",".join(map(str, record.get("cpus") or []))
        described.append(f"on (CPUs {cpus}" + ("; cpu_dma_latency 0)" if record.get("cpu_dma_latency") else ")"))
    return None if set(described) <= {"off"} else _agreed(described)


def build_provenance(model: str, acquired: Mapping, stats_docs: Sequence[Mapping], config_hash: str) -> dict:
    hosts = [doc.get("provenance") or {} for doc in stats_docs]
    servers = [doc.get("server") or {} for doc in stats_docs]
    started = [doc["started_at"] for doc in stats_docs if doc.get("started_at")]
    return {
        "model": model,
        "source": acquired.get("source"),
        "weights": acquired.get("weights"),
        "backend": _agreed([server.get("backend") for server in servers]),
        "backend_version": _agreed([server.get("version") for server in servers]),
        "tensorflow_version": _agreed([tensorflow_version(server) for server in servers]),
        "image": _agreed([server.get("image") for server in servers]),
        "image_digest": _agreed([server.get("image_digest") or server.get("image_id") for server in servers]),
        "gpu_used": _agreed([server.get("gpu_used") for server in servers]),
        "protocol": _agreed([doc.get("protocol") for doc in stats_docs]),
        "client_transport": _agreed([doc.get("transport") for doc in stats_docs]),
        "keep_awake": keep_awake_of(stats_docs),
        "serialization": _agreed([server.get("serialization") for server in servers]),
        "server_notes": _notes(servers),
        "serveprof_version": _agreed([host.get("serveprof_version") for host in hosts]) or serveprof.__version__,
        "python_version": _agreed([host.get("python_version") for host in hosts]),
        "cpu_model": _agreed([host.get("cpu_model") for host in hosts]),
        "cpu_count": _agreed([host.get("cpu_count") for host in hosts]),
        "gpu": _agreed([host.get("gpu") for host in hosts]),
        "hostname": _agreed([host.get("hostname") for host in hosts]),
        "config_hash": config_hash,
        "git_revision": _agreed([host.get("git_revision") for host in hosts]) or "unknown",
        "git_dirty": _agreed([host.get("git_dirty") for host in hosts]),
        # ISO 8601 UTC strings of one format sort as times.
        "started_at": min(started) if started else None,
    }
