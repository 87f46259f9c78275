"""A model's cold start: how long it takes to load, and its first inference at batch 1.

``load_ms`` runs from the server process's start to the model's AVAILABLE status (both
stamped by the launcher); ``first_infer_ms`` is the first request after that.
"""

from __future__ import annotations

from serveprof.launch.device import DeviceSettings
from serveprof.launch.spec import ServerSettings
from serveprof.measure.inputs import AUTO, InputSettings
from serveprof.measure.procedure import time_one
from serveprof.measure.session import launched


def cold_start(
    model: str,
    model_base_path: str,
    server: ServerSettings,
    input_settings: InputSettings,
    protocol: str,
    server_log: str | None,
    model_type: str = AUTO,
    transport: str = "builtin",
    device: DeviceSettings | None = None,
) -> dict:
    """One fresh server for ``model``, under ``device``'s limits: the row of coldstart.csv."""
    with launched(
        model, model_base_path, server, protocol, log_path=server_log, transport=transport, device=device
    ) as endpoint:
        server_started_ns, available_ns = endpoint.started_ns, endpoint.available_ns
        input_settings, _ = endpoint.resolve_input(1, input_settings, model_type)
        request, _ = endpoint.prepare_request(1, input_settings)
        first_infer_ms = time_one(
            endpoint.client.send, request, endpoint.on_error(1), "first request (first inference)"
        )
    return {
        "model": model,
        "load_ms": (available_ns - server_started_ns) / 1e6,
        "first_infer_ms": first_infer_ms,
        "backend": endpoint.info.get("backend"),
        "backend_version": endpoint.info.get("version"),
    }
