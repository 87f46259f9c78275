"""One load-generator process: threads, each on its own lean connection, sending one prepared request.

A worker is started by ``serveprof.load.generator`` (multiprocessing, ``spawn``) with a
``WorkerPlan``. It opens its connections and sends one unrecorded request on each (the
connect and the server's first run at this batch size stay out of the figures), says
``ready``, and waits for the start time. Then each thread loops:

- **closed loop**: send, wait for the answer, send again (the request is due when it is sent);
- **open loop**: take the next due time from the worker's schedule, sleep until then,
  send. A thread takes the next request only once its last one is answered, so when
  every connection is busy a due request waits, and its latency, counted from the due
  time, includes that wait (no coordinated omission). A request taken before it was due
  but sent more than the tolerance after it was the generator's own lateness; one taken
  after it was due waited for a connection (the server's backlog).

Every ``slice_s`` the worker sends the parent what was answered since the last slice, as
rows of ``RECORD_FIELDS`` (``time.monotonic_ns()``, one clock for every process), and the
time up to which that is complete. Errors are answers too: each row carries its status
(``OK``, the gRPC status name, or the HTTP status over REST).
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from serveprof.load.schedule import offsets_ns

RECORD_FIELDS = ("due_ns", "taken_ns", "sent_ns", "done_ns", "status", "connection")
OK = "OK"
# A thread waking from a sleep waits for the GIL for up to one switch interval (5 ms by
# default), which would make the open loop late; the worker's threads mostly wait on sockets.
SWITCH_INTERVAL_S = 0.0005


@dataclass(frozen=True)
class WorkerPlan:
    """What one worker process sends, how, and how often."""

    protocol: str
    transport: str
    address: str
    model: str
    request: bytes  # the prepared request (a serialized PredictRequest, or the REST body)
    connections: int  # threads, one connection each
    mode: str  # "closed" or "open"
    rate_per_s: float | None = None  # open loop: the whole rate; this worker sends rate / workers
    arrival: str = "poisson"
    seed: int = 0
    worker: int = 0
    workers: int = 1
    slice_s: float = 0.1
    timeout_s: float = 600.0
    drain_s: float = 60.0  # how long answers still in flight at the stop are waited for


class _Recorder:
    """Rows from every thread, handed over a slice at a time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rows: list[tuple[int, int, int, int, int, int]] = []
        self.statuses = [OK]
        self.status_index = {OK: 0}
        self.examples: dict[str, str] = {}

    def status(self, name: str, message: str) -> int:
        with self.lock:
            index = self.status_index.get(name)
            if index is None:
                index = self.status_index[name] = len(self.statuses)
                self.statuses.append(name)
                self.examples[name] = message[:500]
            return index

    def add(self, row: tuple[int, int, int, int, int, int]) -> None:
        with self.lock:
            self.rows.append(row)

    def take(self) -> tuple[int, np.ndarray]:
        with self.lock:
            covered = time.monotonic_ns()
            rows, self.rows = self.rows, []
        return covered, np.array(rows, dtype=np.int64).reshape(-1, len(RECORD_FIELDS))


def _send_once(client, request: bytes, recorder: _Recorder) -> int:
    """Status index of one call (0: OK)."""
    from serveprof.client import ServingRequestError

    try:
        client.send(request)
        return 0
    except ServingRequestError as error:
        return recorder.status(str(error.code), error.message)
    except Exception as error:  # noqa: BLE001 - a failed call is a result here, counted by its kind
        return recorder.status(type(error).__name__, str(error))


def _closed_loop(client, plan: WorkerPlan, index: int, recorder: _Recorder, stop: threading.Event) -> None:
    request, add, now = plan.request, recorder.add, time.monotonic_ns
    while not stop.is_set():
        sent = now()
        status = _send_once(client, request, recorder)
        add((sent, sent, sent, now(), status, index))


def _open_loop(
    client,
    plan: WorkerPlan,
    index: int,
    recorder: _Recorder,
    stop: threading.Event,
    due: Iterator[int],
    due_lock: threading.Lock,
    start_ns: int,
) -> None:
    request, add, now = plan.request, recorder.add, time.monotonic_ns
    while not stop.is_set():
        with due_lock:
            due_ns = start_ns + next(due)
        taken = now()
        if due_ns > taken and stop.wait((due_ns - taken) / 1e9):
            return  # stopped before it was due: never sent
        sent = now()
        status = _send_once(client, request, recorder)
        add((due_ns, taken, sent, now(), status, index))


def _connect(plan: WorkerPlan, clients: list) -> None:
    from serveprof.measure.session import make_client

    for _ in range(plan.connections):
        client = make_client(plan.protocol, plan.address, plan.model, plan.transport)
        client.timeout_s = plan.timeout_s
        clients.append(client)
        client.connect()
        client.send(plan.request)  # unrecorded: the connection is open and the server has run this batch size


def run(plan: WorkerPlan, channel) -> None:
    """The worker process's body; ``channel`` is its end of a multiprocessing Pipe."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    clients: list = []
    # The parent gone (its end closed) ends the worker quietly: there is no one left to report to.
    with contextlib.suppress(EOFError, BrokenPipeError, ConnectionResetError):
        _run(plan, channel, clients)


def _run(plan: WorkerPlan, channel, clients: list) -> None:
    try:
        try:
            _connect(plan, clients)
        except Exception as error:  # noqa: BLE001 - reported to the parent, which raises it with its fix
            channel.send(("error", f"{type(error).__name__}: {error}"))
            return
        channel.send(("ready", os.getpid()))
        message = channel.recv()
        if message[0] != "start":
            return
        start_ns = message[1]
        recorder, stop = _Recorder(), threading.Event()
        due_lock = threading.Lock()
        due = (
            offsets_ns(plan.rate_per_s, plan.arrival, plan.seed, plan.worker, plan.workers)
            if plan.mode == "open"
            else None
        )
        threads = []
        for index, client in enumerate(clients):
            if plan.mode == "open":
                args = (client, plan, index, recorder, stop, due, due_lock, start_ns)
                target = _open_loop
            else:
                args, target = (client, plan, index, recorder, stop), _closed_loop
            threads.append(threading.Thread(target=target, args=args, daemon=True, name=f"load-{index}"))
        # The rows are plain tuples freed every slice: the collector has nothing to find in them.
        gc.collect()
        gc.freeze()
        gc.disable()
        delay = (start_ns - time.monotonic_ns()) / 1e9
        if plan.mode == "closed" and delay > 0:
            time.sleep(delay)  # the open loop's threads wait for their due times themselves
        for thread in threads:
            thread.start()
        while not channel.poll(plan.slice_s):
            covered, rows = recorder.take()
            channel.send(("slice", covered, rows, list(recorder.statuses), dict(recorder.examples)))
        stop.set()
        deadline = time.monotonic() + plan.drain_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        abandoned = sum(thread.is_alive() for thread in threads)
        covered, rows = recorder.take()
        channel.send(("last", covered, rows, list(recorder.statuses), dict(recorder.examples), abandoned))
    finally:
        gc.enable()
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
        channel.close()
