"""Say why a listening socket could not be had, in words a user can act on."""

from __future__ import annotations

import errno
import socket

from serveprof.errors import ServeprofError


def bind_error(host: str, port: int, flag: str, error: OSError | None = None) -> ServeprofError:
    """The ServeprofError for a failed bind of ``host:port`` (given by ``--flag``).

    gRPC reports only that binding failed, so the cause is found by trying the bind
    again with a plain socket.
    """
    if error is None:
        error = _try_bind(host, port)
    if error is not None and error.errno == errno.EADDRINUSE:
        return ServeprofError(
            f"port {port} is already in use; choose another {flag}",
            f"stop whatever listens on port {port}, or pass a free port with {flag}",
        )
    if error is not None and error.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return ServeprofError(
            f"cannot listen on {host}: no such address on this machine",
            "pass --host=127.0.0.1 (loopback) or an address this machine has",
        )
    if error is not None and error.errno == errno.EACCES:
        return ServeprofError(f"not allowed to listen on port {port}", f"pass a port above 1023 with {flag}")
    detail = f": {error.strerror}" if error is not None else ""
    return ServeprofError(f"cannot listen on {host}:{port}{detail}", f"pass another address or port ({flag}, --host)")


def check_bindable(host: str, port: int, flag: str) -> None:
    """Raise the ServeprofError ``bind_error`` gives if ``host:port`` cannot be bound now.

    The ports open only once the model has loaded, as tensorflow_model_server's do; this
    early try makes a taken port or a bad address fail in milliseconds, not after a load.
    """
    error = _try_bind(host, port)
    if error is not None:
        raise bind_error(host, port, flag, error)


def _try_bind(host: str, port: int) -> OSError | None:
    """Why ``host:port`` cannot be bound right now, or None if it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error
    return None
