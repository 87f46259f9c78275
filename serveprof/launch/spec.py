"""What to launch: the ``server:`` config block plus the model to serve."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from serveprof.errors import ServeprofError

BACKENDS = ("auto", "embedded", "tfserving", "docker", "apptainer")


def _server_schema() -> dict:
    from serveprof.config import load_schema

    return load_schema()["properties"]["server"]


def _check(server_config: Mapping[str, Any]) -> None:
    """The schema's own problems and fixes for the ``server:`` block alone."""
    from serveprof.config import explain_problems

    problems = [problem for problem in explain_problems({"server": dict(server_config)})
                if problem.startswith("server")]
    if problems:
        listing = "\n  - ".join(problems)
        raise ServeprofError(f"the server settings have {len(problems)} problem(s):\n  - {listing}",
                             "edit the server: block of the config (config.yaml documents every key)")


@dataclass(frozen=True)
class ServerSpec:
    model_name: str
    model_base_path: str  # absolute: containers mount it and the server may run elsewhere
    log_path: str | None = None
    backend: str = "auto"
    tfserving_path: str = "tensorflow_model_server"
    docker_path: str = "docker"
    apptainer_path: str = "apptainer"
    image: str = "tensorflow/serving"
    image_tag: str = "latest"
    gpu: bool = False
    host: str = "127.0.0.1"
    startup_timeout_s: float = 600.0
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    extra_flags: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_config(cls, server_config: Mapping[str, Any] | None, model_name: str, model_base_path: str,
                    log_path: str | None = None) -> ServerSpec:
        """A spec from the config's ``server:`` block; missing keys take the schema's defaults."""
        server_config = dict(server_config or {})
        _check(server_config)
        defaults = {name: node["default"] for name, node in _server_schema()["properties"].items() if "default" in node}
        settings = {**defaults, **server_config}
        settings["extra_flags"] = tuple(settings["extra_flags"])
        if not model_name:
            raise ServeprofError("no model name given to launch", "pass the model key as the model name")
        return cls(model_name=model_name, model_base_path=os.path.abspath(model_base_path),
                   log_path=str(log_path) if log_path else None, **settings)
