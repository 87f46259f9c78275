"""Socket helpers shared by the HTTP transports of the server and the clients."""

from __future__ import annotations

import socket
import ssl

# Linux's IOV_MAX is 1024; a large answer cut into 16 KiB DATA frames has more buffers than that.
MAX_BUFFERS_PER_CALL = 512


def send_all(sock: socket.socket, buffers) -> None:
    """Write every buffer, in order, with as few syscalls as the kernel allows and no copying (blocking socket).

    ``sendmsg`` hands the kernel the frame header and the caller's (possibly large)
    payload together, where joining them first would copy the payload.
    """
    views = [memoryview(buffer).cast("B") for buffer in buffers if len(buffer)]
    if isinstance(sock, ssl.SSLSocket):
        for view in views:  # TLS sockets have no sendmsg
            sock.sendall(view)
        return
    while views:
        sent = sock.sendmsg(views[:MAX_BUFFERS_PER_CALL])
        _drop_sent(views, sent)


def send_some(sock: socket.socket, views: list) -> int:
    """Write what a non-blocking socket takes now from ``views`` (memoryviews, consumed in place); return the count."""
    total = 0
    while views:
        try:
            sent = sock.sendmsg(views[:MAX_BUFFERS_PER_CALL])
        except (BlockingIOError, InterruptedError):
            break
        total += sent
        if not sent or not _drop_sent(views, sent):
            break  # the kernel took less than offered: its buffer is full
    return total


def _drop_sent(views: list, sent: int) -> bool:
    """Remove ``sent`` bytes from the front of ``views``; True if whole buffers were taken (more may fit)."""
    while views and sent >= len(views[0]):
        sent -= len(views[0])
        views.pop(0)
    if sent:
        views[0] = views[0][sent:]
        return False
    return True


def close_quietly(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass
