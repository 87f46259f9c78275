"""One thread per API that accepts, reads and times out every connection, and a bounded pool that runs requests.

Why this shape: a thread per connection let 20,000 idle TCP connections make 20,000
threads, and a worker that waited for a client's flow-control window was lost to every
other client (docs/reliability.md). Here the ``EventLoop`` thread owns every socket of
one API: it accepts (surviving EMFILE/ENFILE/ENOMEM by closing the connection idle
longest, or shedding one with a reserve descriptor, and backing off), reads and parses
without blocking, and enforces each connection's deadlines. A parsed request goes to a
``WorkerPool`` of fixed size, started with the server (so no thread is ever started
under load), through a bounded queue; a request cancelled while it waits is never run.
A worker writes its answer itself when the socket takes it at once (the fast path:
one ``sendmsg``); what the socket does not take, or flow control holds back, stays
with the connection and the loop writes it when the peer is ready.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import queue
import select
import socket
import threading
import time

from serveprof.server.limits import Limits
from serveprof.wire.sockets import close_quietly, send_some

log = logging.getLogger("serveprof.serve")

SCAN_INTERVAL_S = 0.1  # how often deadlines are checked
ACCEPTS_PER_WAKE = 64  # so a connect flood cannot starve the connections already open
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.05, 1.0  # accepting pauses after a failure for this long, doubling
LOG_EVERY_S = 10.0  # a kind of event an attacker can repeat is logged at most this often
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_LISTENER, _WAKEUP = object(), object()
READ, WRITE = select.EPOLLIN, select.EPOLLOUT  # epoll directly: selectors' wrapper costs microseconds a wake-up
FOREVER = float("inf")


class QuietLog:
    """At most one line per kind every LOG_EVERY_S, counting the ones left out: a flood must not flood the log."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._skipped: collections.Counter = collections.Counter()

    def __call__(self, level: int, kind: str, message: str, *args) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -FOREVER) < LOG_EVERY_S:
            self._skipped[kind] += 1
            return
        self._last[kind] = now
        skipped = self._skipped.pop(kind, 0)
        if skipped:
            message += f" ({skipped} more like it in the last {LOG_EVERY_S:.0f} s)"
        log.log(level, message, *args)


quiet_log = QuietLog()


class Connection:
    """A client socket served by an ``EventLoop``; subclasses speak a protocol over it.

    The loop thread calls ``on_readable``, ``on_deadline`` and ``flush``. ``send_locked``
    may be called from any thread with ``lock`` held.
    """

    def __init__(self, loop: EventLoop, sock: socket.socket, peer):
        self.loop, self.sock, self.peer = loop, sock, peer
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fd = sock.fileno()
        self.lock = threading.RLock()  # re-entered when a failed write closes the connection
        self.out: list[memoryview] = []  # bytes the socket did not take yet
        self.closed = False
        self.want_read = True
        self.mask = 0  # the events the loop has registered
        self.deadline = FOREVER  # no later than the next moment ``on_deadline`` has work to do
        self.accepted = time.monotonic()
        self.write_timeout_s = FOREVER  # queued bytes the peer does not take within this close the connection
        self.out_since: float | None = None  # since when bytes have waited in ``out``

    # -- for subclasses
    def on_readable(self) -> None:
        raise NotImplementedError

    def on_deadline(self, now: float) -> None:
        raise NotImplementedError

    def evictable(self) -> bool:
        """True when closing this connection loses no request (it is idle, or still only connecting)."""
        raise NotImplementedError

    def evict(self) -> None:
        self.close()

    def on_flushed(self) -> None:
        """Everything queued has been written (loop thread, lock held)."""

    def on_closed(self) -> None:
        """The socket is gone: release what the connection held (loop thread)."""

    # -- writing
    def send_locked(self, buffers) -> None:
        """Write now what the socket takes; queue the rest for the loop. ``lock`` must be held."""
        if self.closed:
            return
        views = [memoryview(buffer).cast("B") for buffer in buffers if len(buffer)]
        if self.out:
            self.out += views
            return
        try:
            send_some(self.sock, views)
        except OSError as error:
            self.broken(error)
            return
        if views:
            self.out = views
            self.out_since = time.monotonic()
            self.deadline = min(self.deadline, self.out_since + self.write_timeout_s)
            self.loop.update_soon(self)

    def flush(self) -> None:
        with self.lock:
            if self.closed or not self.out:
                return
            try:
                send_some(self.sock, self.out)
            except OSError as error:
                self.broken(error)
                return
            if not self.out:
                self.out_since = None
                self.on_flushed()

    def write_stalled(self, now: float) -> bool:
        """True (and the connection closed) if queued bytes have waited longer than ``write_timeout_s``."""
        if self.out_since is None or now < self.out_since + self.write_timeout_s:
            return False
        quiet_log(
            logging.WARNING,
            f"{self.loop.name} write",
            "%s client %s took nothing for %.0f s; closing its connection",
            self.loop.name,
            self.peer,
            self.write_timeout_s,
        )
        self.closed = True
        return True

    def shut_write(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.closed = True

    def drain(self) -> None:
        """Read and drop what the peer sends (after we closed our side); EOF closes the connection."""
        try:
            if not self.sock.recv(1 << 18):
                self.closed = True
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.closed = True

    @property
    def out_bytes(self) -> int:
        return sum(map(len, self.out))

    # -- closing
    def broken(self, error: OSError) -> None:
        log.debug("%s connection from %s: write failed (%s)", self.loop.name, self.peer, error)
        self.close()

    def close(self) -> None:
        """Close from any thread; the loop thread forgets the socket."""
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.loop.update_soon(self)


class EventLoop:
    """Accepts on ``listener`` and serves every connection ``connect(loop, sock, peer)`` makes, on one thread."""

    running: set[EventLoop] = set()  # every API's loop in this process

    def __init__(self, name: str, listener: socket.socket, connect, limits: Limits):
        self.name, self.listener, self.connect, self.limits = name, listener, connect, limits
        listener.setblocking(False)
        self.connections: collections.OrderedDict[Connection, None] = collections.OrderedDict()  # least recent first
        self._epoll = select.epoll()
        self._targets: dict[int, object] = {}  # descriptor -> what its events are for
        self._listener_fd = listener.fileno()
        self._watch(self._listener_fd, READ, _LISTENER)
        self._wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._watch(self._wakeup, READ, _WAKEUP)
        self._woken = False
        self._calls: collections.deque = collections.deque()
        self._reserve = self._open_reserve()
        self._accept_paused_until = 0.0
        self._backoff = 0.0
        self._refused = 0
        self._last_refusal_log = 0.0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-loop", daemon=True)
        self.thread_id: int | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping = True
        self._wake()
        if threading.get_ident() != self.thread_id:
            self._thread.join(timeout_s)

    def stop_accepting(self) -> None:
        self.call_soon(self._close_listener)

    # -- calls from other threads
    def call_soon(self, function) -> None:
        self._calls.append(function)
        self._wake()

    def update_soon(self, connection: Connection) -> None:
        """Re-register ``connection``'s events (or forget it, once closed), now if on the loop thread."""
        if threading.get_ident() == self.thread_id:
            self.update(connection)
        else:
            self.call_soon(lambda: self.update(connection))

    def _wake(self) -> None:
        if not self._woken:
            self._woken = True
            try:
                os.eventfd_write(self._wakeup, 1)
            except OSError:
                pass

    # -- the loop
    def _run(self) -> None:
        self.thread_id = threading.get_ident()
        EventLoop.running.add(self)
        next_scan = time.monotonic() + SCAN_INTERVAL_S
        try:
            while not self._stopping:
                try:
                    events = self._epoll.poll(SCAN_INTERVAL_S)
                except OSError as error:  # not expected; keep serving
                    log.warning("%s: epoll failed: %s", self.name, error)
                    time.sleep(0.01)
                    continue
                for fd, mask in events:
                    target = self._targets.get(fd)
                    if target is None:
                        continue
                    if target is _LISTENER:
                        self._accept()
                    elif target is _WAKEUP:
                        self._woken = False
                        try:
                            os.eventfd_read(self._wakeup)
                        except OSError:
                            pass
                    else:
                        self._serve(target, mask)
                while self._calls:
                    self._calls.popleft()()
                now = time.monotonic()
                if now >= next_scan:
                    next_scan = now + SCAN_INTERVAL_S
                    self._scan(now)
        except Exception:  # noqa: BLE001 - a bug here must be loud, not a silently dead API
            log.exception("%s: the event loop failed", self.name)
        finally:
            EventLoop.running.discard(self)
            self._close_listener()
            for connection in list(self.connections):
                connection.closed = True
                self.update(connection)
            self._epoll.close()
            os.close(self._wakeup)
            if self._reserve is not None:
                os.close(self._reserve)

    def _serve(self, connection: Connection, mask: int) -> None:
        try:
            if mask & WRITE:
                connection.flush()
            if mask & ~WRITE and not connection.closed:  # readable, or an error or hang-up a read will report
                self.connections.move_to_end(connection)
                connection.on_readable()
        except Exception:  # noqa: BLE001 - one connection's bug must not end the others
            log.exception("%s connection from %s failed; closing it", self.name, connection.peer)
            connection.closed = True
        self.update(connection)

    def _scan(self, now: float) -> None:
        for connection in list(self.connections):
            if connection.deadline <= now and not connection.closed:
                try:
                    connection.on_deadline(now)
                except Exception:  # noqa: BLE001
                    log.exception("%s connection from %s failed; closing it", self.name, connection.peer)
                    connection.closed = True
                self.update(connection)
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            if self.listener.fileno() >= 0:
                self._watch(self._listener_fd, READ, _LISTENER)
            if self._reserve is None:
                self._reserve = self._open_reserve()

    def update(self, connection: Connection) -> None:
        """Match the registered events to what ``connection`` wants, or forget it once closed (loop thread)."""
        if connection.closed:
            if connection in self.connections:
                del self.connections[connection]
                if connection.mask:
                    self._unwatch(connection.fd)
                    connection.mask = 0
                with connection.lock:  # no worker is mid-write when the descriptor number is freed
                    close_quietly(connection.sock)
                connection.on_closed()
            return
        wanted = (READ if connection.want_read else 0) | (WRITE if connection.out else 0)
        if wanted == connection.mask:
            return
        if not wanted:
            self._unwatch(connection.fd)
        elif not connection.mask:
            self._watch(connection.fd, wanted, connection)
        else:
            self._epoll.modify(connection.fd, wanted)
        connection.mask = wanted

    def _watch(self, fd: int, mask: int, target) -> None:
        self._epoll.register(fd, mask)
        self._targets[fd] = target

    def _unwatch(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        self._targets.pop(fd, None)

    # -- accepting
    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # that client gave up; the next one may be fine
                if error.errno in _RESOURCE_ERRNOS:
                    quiet_log(
                        logging.WARNING,
                        f"{self.name} resources",
                        "%s: accept failed (%s) with %d connections open; closing idle ones to make room",
                        self.name,
                        os.strerror(error.errno),
                        len(self.connections),
                    )
                    if self._evict_one():
                        continue
                    for sibling in list(EventLoop.running):  # descriptors are the process's, not one API's
                        if sibling is not self:
                            sibling.call_soon(sibling._evict_one)
                    self._shed_one()
                self._pause_accepting(error)
                return
            self._backoff = 0.0
            if len(self.connections) >= self.limits.max_connections and not self._evict_one():
                self._refuse(sock)
                continue
            try:
                connection = self.connect(self, sock, peer)
            except OSError as error:
                log.warning("%s: could not set up a connection from %s: %s", self.name, peer, error)
                close_quietly(sock)
                continue
            self.connections[connection] = None
            self.update(connection)

    def _evict_one(self) -> bool:
        """Close the connection idle longest to make room for a new one; False if none is idle."""
        for connection in self.connections:
            if connection.evictable():
                quiet_log(
                    logging.INFO,
                    f"{self.name} evict",
                    "%s: %d connections open; closing the one from %s, idle longest, to admit a new one",
                    self.name,
                    len(self.connections),
                    connection.peer,
                )
                connection.evict()
                connection.closed = True
                self.update(connection)
                return True
        return False

    def _refuse(self, sock: socket.socket) -> None:
        close_quietly(sock)
        self._refused += 1
        now = time.monotonic()
        if now - self._last_refusal_log >= 10:
            log.warning(
                "%s: %d connections refused: --max_connections=%d are open and none is idle",
                self.name,
                self._refused,
                self.limits.max_connections,
            )
            self._last_refusal_log, self._refused = now, 0

    def _shed_one(self) -> None:
        """Out of descriptors: accept one waiting client and close it at once, so it is not left hanging."""
        if self._reserve is None:
            return
        os.close(self._reserve)
        self._reserve = None
        try:
            sock, _ = self.listener.accept()
            close_quietly(sock)
        except OSError:
            pass
        self._reserve = self._open_reserve()

    def _pause_accepting(self, error: OSError) -> None:
        self._backoff = min(max(self._backoff * 2, BACKOFF_FIRST_S), BACKOFF_MAX_S)
        quiet_log(
            logging.WARNING,
            f"{self.name} accept",
            "%s: accept failed (%s); %d connections open; accepting again in %.2f s",
            self.name,
            os.strerror(error.errno) if error.errno else error,
            len(self.connections),
            self._backoff,
        )
        self._accept_paused_until = time.monotonic() + self._backoff
        self._unwatch(self._listener_fd)

    def _close_listener(self) -> None:
        self._unwatch(self._listener_fd)
        self._accept_paused_until = 0.0
        close_quietly(self.listener)

    @staticmethod
    def _open_reserve() -> int | None:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None


class WorkerPool:
    """``threads`` workers started at once, fed through a queue of at most ``max_queued`` waiting jobs.

    A job has a ``waiting`` attribute and a ``run()`` method. ``cancel`` takes a job that
    has not started out of the count, and the worker that dequeues it skips it.
    """

    def __init__(self, threads: int, max_queued: int, name: str):
        self.max_queued = max_queued
        self.waiting = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{index}", daemon=True) for index in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job) -> bool:
        """Queue ``job``; False if the queue is full or the pool is shut down."""
        with self._lock:
            if self._closed or self.waiting >= self.max_queued:
                return False
            self.waiting += 1
            job.waiting = True
        self._queue.put(job)
        return True

    def cancel(self, job) -> bool:
        """Withdraw a job that has not started; False if it is running or done."""
        with self._lock:
            if not job.waiting:
                return False
            job.waiting = False
            self.waiting -= 1
            return True

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
        for _ in self._threads:
            self._queue.put(None)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if not job.waiting:
                    continue  # cancelled while it waited
                job.waiting = False
                self.waiting -= 1
            try:
                job.run()
            except Exception:  # noqa: BLE001 - a worker must outlive any one job
                log.exception("a request failed unexpectedly")
