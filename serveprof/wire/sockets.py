"""Socket helpers shared by the HTTP transports of the server and the clients."""

from __future__ import annotations

import socket
import ssl


def send_all(sock: socket.socket, buffers) -> None:
    """Write every buffer, in order, with as few syscalls as the kernel allows and no copying.

    ``sendmsg`` hands the kernel the frame header and the caller's (possibly large)
    payload together, where joining them first would copy the payload.
    """
    views = [memoryview(buffer).cast("B") for buffer in buffers if len(buffer)]
    if isinstance(sock, ssl.SSLSocket):
        for view in views:  # TLS sockets have no sendmsg
            sock.sendall(view)
        return
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if sent:
            views[0] = views[0][sent:]


def close_quietly(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass
