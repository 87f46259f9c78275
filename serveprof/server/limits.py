"""What the embedded server lets its clients hold: connections, time, queued work and buffered bytes.

One ``Limits`` is built from the flags and handed to both APIs; its ``BufferBudget`` is
shared, so request bytes held by gRPC streams and REST bodies together stay under
``--max_buffered_bytes``. docs/reliability.md lists what each limit answers when hit.
"""

from __future__ import annotations

import logging
import resource
import threading
from dataclasses import dataclass, field

MiB = 1 << 20
SMALL_REQUEST = 1 * MiB  # requests up to this size may use the part of the budget kept from larger ones
SPARE_DESCRIPTORS = 64  # for the model's files, logs and listeners
log = logging.getLogger("serveprof.serve")


class BufferBudget:
    """Bytes of request bodies held in memory at once, across connections and both APIs.

    An eighth of it is kept for requests of at most SMALL_REQUEST bytes, so that large
    bodies that never finish cannot shut out the small calls (a status poll, a batch-1
    predict) until their deadline ends them.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.kept_for_small = limit // 8
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, count: int) -> bool:
        with self._lock:
            if self.used + count > (self.limit if count <= SMALL_REQUEST else self.limit - self.kept_for_small):
                return False
            self.used += count
            return True

    def release(self, count: int) -> None:
        with self._lock:
            self.used -= count


@dataclass
class Limits:
    max_connections: int = 1000  # per API
    handshake_timeout_s: float = 10.0  # gRPC: preface and SETTINGS; REST: the first request's head
    idle_timeout_s: float = 300.0  # gRPC: a connection with no stream open (REST: --rest_api_timeout_in_ms)
    request_timeout_s: float = 60.0  # gRPC: a request must arrive whole, and its answer leave, within this
    max_queued_requests: int = 1024  # per API, waiting for a worker
    budget: BufferBudget = field(default_factory=lambda: BufferBudget(512 * MiB))

    @classmethod
    def from_flags(cls, flags, apis: int) -> Limits:
        """The flags' limits, with the connection cap lowered to what the descriptor limit allows ``apis`` APIs."""
        buffered = flags.max_buffered_bytes or 2 * flags.max_request_bytes
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        connections = flags.max_connections
        if soft != resource.RLIM_INFINITY and connections * apis + SPARE_DESCRIPTORS > soft:
            connections = max((soft - SPARE_DESCRIPTORS) // apis, 1)
            log.warning(
                "--max_connections=%d per API does not fit the open-file limit of %d; using %d "
                "(raise it with ulimit -n)",
                flags.max_connections,
                soft,
                connections,
            )
        return cls(
            max_connections=connections,
            handshake_timeout_s=flags.handshake_timeout_ms / 1000,
            idle_timeout_s=flags.grpc_idle_timeout_ms / 1000,
            request_timeout_s=flags.grpc_request_timeout_ms / 1000,
            max_queued_requests=flags.max_queued_requests,
            budget=BufferBudget(buffered),
        )
