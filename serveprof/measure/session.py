"""The server a measurement talks to: one freshly launched for it, or one already running.

Either way the procedure sees an ``Endpoint``: a client, the pid whose CPU and memory to
sample, the server's description for provenance, and what to do when a request fails
(ask a launched server whether it is still alive, so a crash is reported with its log).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from serveprof.errors import ServeprofError
from serveprof.launch.device import DeviceSettings
from serveprof.launch.spec import ServerSettings
from serveprof.measure.inputs import AUTO, InputSettings, model_type_of

# The wire protocol: TF Serving's gRPC API or its REST API.
PROTOCOLS = ("grpc", "rest")
# How the requests travel: "builtin" is serveprof's own HTTP/2 (gRPC) and HTTP/1.1 (REST)
# connections, the cheapest on the client's CPU; "library" is grpcio and requests.
# Either way the messages are tensorflow-serving-api's and the JSON is TF Serving's.
TRANSPORTS = ("builtin", "library")


@dataclass
class Endpoint:
    client: Any
    address: str
    pid: int | None
    info: dict
    freshly_loaded: bool
    check_alive: Callable[[str], None]  # what the server was doing, for the message
    # time.monotonic_ns() at the server process's start and at AVAILABLE (launched servers only)
    started_ns: int | None = None
    available_ns: int | None = None
    metrics_url: str | None = None  # TF Serving's Prometheus page, where the server serves one
    log_tail: Callable[[int], str] = lambda lines=40: ""  # the server log's last lines (launched servers)
    model: str = ""  # the name the server serves the model under
    protocol: str = "grpc"
    # What a launched server runs under (its device's limits, read back), None on the host.
    limits: Callable[[], dict | None] = lambda: None

    def on_error(self, batch_size: int) -> Callable[[BaseException, str], BaseException]:
        def failure(error: BaseException, what: str) -> BaseException:
            # A dead server raises here, quoting its log (DoesNotFit if its memory cap killed it).
            self.check_alive(f"serving the {what} at batch size {batch_size}")
            if isinstance(error, ServeprofError):  # e.g. the client's ServingRequestError: keep its fix
                return ServeprofError(f"{what} at batch size {batch_size} failed: {error.problem}", error.fix)
            return ServeprofError(
                f"{what} at batch size {batch_size} to {self.address} failed: {error!r}",
                "read the server log; the model may not accept this batch size or input, or the server ran out of memory",
            )

        return failure

    def resolve_input(
        self, batch_size: int, settings: InputSettings, model_type: str = AUTO
    ) -> tuple[InputSettings, dict]:
        """``settings`` with kind ``auto`` made concrete, and what the stats record about that choice.

        The model's type comes from ``model_type``, or, when that is ``auto`` too, from the
        served signature (detection when it has the Object Detection API's outputs).
        """
        if settings.kind != AUTO:
            return settings, {}
        source = "--type"
        if model_type == AUTO:
            try:
                outputs = self.client.signature().outputs
            except Exception as error:
                raise self.on_error(batch_size)(error, "reading the model's signature") from error
            model_type, source = model_type_of(outputs), "signature"
        return settings.resolved(model_type), {
            "requested_kind": AUTO,
            "model_type": model_type,
            "model_type_from": source,
        }

    def prepare_request(self, batch_size: int, input_settings: InputSettings) -> tuple[Any, dict]:
        """A request built once from the served signature, and the input description for the stats."""
        from serveprof.measure.inputs import build_inputs

        try:
            signature = self.client.signature()
        except Exception as error:
            raise self.on_error(batch_size)(error, "reading the model's signature") from error
        arrays, description = build_inputs(signature.inputs, batch_size, input_settings)
        prepared = self.client.prepare(arrays)
        try:
            self.client.connect()  # so the first timed request does not include a connect
        except Exception as error:
            raise self.on_error(batch_size)(error, "connecting for the timed requests") from error
        return prepared, description


def make_client(protocol: str, address: str, model: str, transport: str = "builtin", timeout_s: float | None = None):
    """``timeout_s``: how long one request may take (None: the clients' default)."""
    from serveprof.client import GrpcClient, RestClient
    from serveprof.client.grpc_client import DEFAULT_TIMEOUT_S

    timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s

    if transport not in TRANSPORTS:
        raise ServeprofError(
            f"transport {transport!r} is not one of {', '.join(TRANSPORTS)}",
            "pass --transport builtin or --transport library",
        )
    if protocol == "grpc":
        return GrpcClient(address, model, transport=transport, timeout_s=timeout_s)
    if protocol == "rest":
        url = address if address.startswith("http") else f"http://{address}"
        return RestClient(url, model, transport=transport, timeout_s=timeout_s)
    raise ServeprofError(
        f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}", "pass --protocol grpc or --protocol rest"
    )


def _close(client) -> None:
    close = getattr(client, "close", None)
    if close is not None:
        close()


@contextlib.contextmanager
def launched(
    model: str,
    model_base_path: str,
    server: ServerSettings,
    protocol: str,
    log_path: str | None = None,
    transport: str = "builtin",
    metrics_path: str | None = None,
    device: DeviceSettings | None = None,
) -> Iterator[Endpoint]:
    """A fresh server with ``model`` loaded, under ``device``'s limits; torn down on leaving, whatever happened.

    With ``metrics_path`` the server also serves TF Serving's Prometheus page there (``Endpoint.metrics_url``).
    """
    from serveprof.launch import ServerSpec, launch

    spec = ServerSpec.serving(
        server, model, model_base_path, log_path=log_path, metrics_path=metrics_path, device=device
    )
    with launch(spec) as server:
        address = server.grpc_target if protocol == "grpc" else server.rest_url
        client = make_client(protocol, address, model, transport, timeout_s=server.spec.request_timeout_s)
        try:
            yield Endpoint(
                client,
                address,
                server.pid,
                dict(server.info),
                True,
                server.check_alive,
                server.started_ns,
                server.available_ns,
                server.metrics_url,
                server.log_tail,
                model,
                protocol,
                server.limits,
            )
        finally:
            _close(client)


@contextlib.contextmanager
def external(
    model: str,
    address: str,
    protocol: str,
    pid: int | None = None,
    transport: str = "builtin",
    metrics_url: str | None = None,
) -> Iterator[Endpoint]:
    """A server someone else started: the model was not freshly loaded for this measurement.

    ``metrics_url``: its Prometheus page, if it serves one (how it serialises answers is unknown).
    """
    client = make_client(protocol, address, model, transport)
    info = {"backend": "external", "version": None, "command": None, "address": address, "serialization": None}
    try:
        yield Endpoint(
            client,
            address,
            pid,
            info,
            False,
            lambda during="in use": None,
            metrics_url=metrics_url,
            model=model,
            protocol=protocol,
        )
    finally:
        _close(client)
