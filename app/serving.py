"""A gunicorn worker that no slow, idle or hostile client can starve (worker_class in gunicorn_conf).

gunicorn's gthread worker hands a connection to a pool thread as soon as it is readable, and the
thread then blocks in recv() until the request is complete: eight clients that send half a
request line, or open TLS and stop, hold all eight threads until they go away. Here the event
loop does everything that waits on the client, without blocking and each step under a deadline:

1. the TLS handshake (``tls_handshake_timeout``);
2. the request head, complete within ``header_timeout`` of its first byte (a client trickling one
   byte per second gains nothing), capped by gunicorn's limit_request_* settings;
3. the body announced by Content-Length, up to ``max_body`` (the cap app.server applies), within
   ``body_timeout``; all connections together buffer at most ``max_buffered_bytes``, counted by
   what has arrived (a Content-Length announced is a promise, and reserves nothing).

Only a request that is complete in memory goes to a pool thread, which parses it with gunicorn's
own parser and runs the Flask app. Idle keep-alive connections wait on the loop, never on a
thread. At most ``worker_connections`` connections are open; beyond that, an idle keep-alive
connection is closed to make room, else the newcomer is answered at once: plain HTTP gets
``503`` with ``Retry-After`` (the API server retries webhook calls that suggest a delay), TLS a
connection reset (also retried). Nothing here admits anything: every shortcut answers an error.

No one client can take the loop or its limits for itself:

- each step reads at most MAX_READS_PER_STEP chunks from one connection before the loop goes back
  to the poller, so the deadline sweep and gunicorn's heartbeat run several times a second under
  any input; line breaks before a request line count against the head limit and its deadline;
- each peer address may hold at most ``peer_share`` of the connections and of the buffered
  bytes; at the connection cap a newcomer from a peer holding fewer connections than the largest
  holder takes a slot from that holder (its oldest idle connection, else its oldest unfinished
  request, answered 503 with Retry-After);
- at most a quarter of the request threads (at least one) work on bodies over LARGE_BODY bytes or
  HEAVY_VALUES values at once; other such requests wait on the loop, within their body deadline,
  so small ones always find a thread.

The probes (``GET /healthz`` and ``/readyz``: answered from memory, app/runtime.py ``ready``) run on
PROBE_THREADS threads of their own, so they answer at once even while every request thread waits
on OPA or on a trust server up to the admission budget.
"""

from __future__ import annotations

import collections
import errno
import json
import selectors
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Protocol

from gunicorn import http
from gunicorn import sock as gsock
from gunicorn.config import Config, Setting, validate_pos_int
from gunicorn.workers.gthread import ThreadWorker

from app import defaults
from app.defaults import MAX_BODY

READ_CHUNK = 65536
PROBE_THREADS = 2
_PROBES = (b"GET /healthz ", b"GET /healthz?", b"GET /readyz ", b"GET /readyz?")
MAX_READS_PER_STEP = 4  # then back to the poller: one busy connection cannot hold the loop
LARGE_BODY = 1024 * 1024  # requests with bodies over this share a quarter of the threads,
HEAVY_VALUES = 20_000  # and so do those with more JSON separators (values) than this
MAX_HEAD = 64 * 1024  # request head bytes buffered per connection at most (431 beyond)
LINGER_SECONDS = 2.0  # after an error answer, read and discard what the client still sends
MAX_LINGERING = 1000


def validate_pos_float(val: str | float) -> float:
    value = float(val)
    if value <= 0:
        raise ValueError(f"{val!r} is not a positive number of seconds")
    return value


class TlsHandshakeTimeout(Setting):
    name = "tls_handshake_timeout"
    section = "Ostiary"
    cli = ("--tls-handshake-timeout",)
    meta = "SECONDS"
    validator = validate_pos_float
    type = float
    default = defaults.TLS_HANDSHAKE_TIMEOUT
    desc = "Seconds a client has to complete the TLS handshake (app.serving.OstiaryWorker)."


class HeaderTimeout(Setting):
    name = "header_timeout"
    section = "Ostiary"
    cli = ("--header-timeout",)
    meta = "SECONDS"
    validator = validate_pos_float
    type = float
    default = defaults.HEADER_TIMEOUT
    desc = "Seconds from a new connection (or the first byte of a kept-alive one) to a complete request head."


class BodyTimeout(Setting):
    name = "body_timeout"
    section = "Ostiary"
    cli = ("--body-timeout",)
    meta = "SECONDS"
    validator = validate_pos_float
    type = float
    default = defaults.BODY_TIMEOUT
    desc = "Seconds from the end of the request head to the end of the announced body."


class SendTimeout(Setting):
    name = "send_timeout"
    section = "Ostiary"
    cli = ("--send-timeout",)
    meta = "SECONDS"
    validator = validate_pos_float
    type = float
    default = defaults.SEND_TIMEOUT
    desc = "Seconds a request thread may block writing one response to a client that does not read."


class MaxBody(Setting):
    name = "max_body"
    section = "Ostiary"
    cli = ("--max-body",)
    meta = "BYTES"
    validator = validate_pos_int
    type = int
    default = MAX_BODY
    desc = "Largest request body read (413 beyond); the API server sends at most ~3 MiB."


class MaxBufferedBytes(Setting):
    name = "max_buffered_bytes"
    section = "Ostiary"
    cli = ("--max-buffered-bytes",)
    meta = "BYTES"
    validator = validate_pos_int
    type = int
    default = defaults.MAX_BUFFERED_BYTES
    desc = "Request bodies all connections together may hold in memory (503 with Retry-After beyond)."


def validate_share(val: str | float) -> float:
    value = float(val)
    if not 0 < value <= 1:
        raise ValueError(f"{val!r} is not a share between 0 (excluded) and 1")
    return value


class PeerShare(Setting):
    name = "peer_share"
    section = "Ostiary"
    cli = ("--peer-share",)
    meta = "FRACTION"
    validator = validate_share
    type = float
    default = defaults.PEER_SHARE
    desc = (
        "Share of worker_connections and of max_buffered_bytes one peer address may hold "
        "(1: no per-peer limit, for a proxy or NAT that gives every client one address)."
    )


def _setting(cfg: Config, name: str) -> float:
    """The value from gunicorn's config, or the default when the settings were registered after the
    config was built (`gunicorn -c app/gunicorn_conf.py` imports this module late)."""
    try:
        return getattr(cfg, name)
    except AttributeError:
        return next(cls.default for cls in Setting.__subclasses__() if getattr(cls, "name", None) == name)


def _plain_answer(status: str, message: str, retry_after: int | None = None) -> bytes:
    body = (json.dumps({"error": message}) + "\n").encode()  # the same shape as the app's own 4xx answers
    head = [
        f"HTTP/1.1 {status}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _heavy(buf: bytearray, start: int, end: int) -> bool:
    """Whether the body buf[start:end] is one that shares the slots for large requests: over
    LARGE_BODY bytes, or over HEAVY_VALUES JSON separators (`[{,:`, strings included: an upper
    bound on its values, counted at C speed), which decoding and every OPA query pay for."""
    size = end - start
    if size > LARGE_BODY:
        return True
    if size <= HEAVY_VALUES:
        return False
    return sum(buf.count(c, start, end) for c in b"[{,:") > HEAVY_VALUES


def _chunks(request: bytes) -> Iterator[bytes]:
    """The request in READ_CHUNK pieces for gunicorn's parser: its body reader copies what is left
    of the current piece on every read (werkzeug reads 8 KiB at a time), so one piece of 7 MiB
    would cost gigabytes of copying and seconds of CPU, pieces cost a fixed factor."""
    view = memoryview(request)
    for start in range(0, len(request), READ_CHUNK):
        yield bytes(view[start : start + READ_CHUNK])


class Refuse(Exception):
    """The request cannot be served: answer `status` and close (never reaches the app)."""

    def __init__(self, status: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.answer = _plain_answer(status, message, retry_after)


HANDSHAKE, IDLE, HEAD, BODY, WAITING, BUSY = "handshake", "idle", "head", "body", "waiting", "busy"


class Peer:
    """What one client address holds: connections and buffered request bytes."""

    __slots__ = ("conns", "buffered")

    def __init__(self) -> None:
        self.conns = 0
        self.buffered = 0


# A socket address as accept() and getsockname() give it: (host, port), (host, port, flow, scope)
# for IPv6, a path for a Unix socket.
Address = tuple[str, int] | tuple[str, int, int, int] | str | bytes


class Listener(Protocol):
    """A listening socket as gunicorn hands it over: its wrapper (gunicorn.sock.TCPSocket,
    UnixSocket), which passes on to a socket.socket but is not one."""

    def accept(self) -> tuple[socket.socket, Address]: ...


def peer_of(client: Address) -> str:
    """The address a connection comes from (its host, not the port)."""
    if isinstance(client, (tuple, list)) and client:
        return str(client[0])
    return str(client)


class Conn:
    """One client connection and what the event loop has read of its next request."""

    def __init__(self, cfg: Config, sock: socket.socket, client: Address, server: Address):
        self.cfg = cfg
        self.sock = sock
        self.client = client
        self.server = server
        self.peer = peer_of(client)
        self.parser = None
        self.initialized = True  # for gunicorn code that looks at it
        self.buf = bytearray()
        self.state = IDLE
        self.deadline = 0.0
        self.need = 0  # bytes of head + body once the head is known
        self.reserved = 0  # bytes held for this connection, counted against max_buffered_bytes
        self.skipped = 0  # line breaks dropped before the current request line (count as head)
        self.scanned = 0  # head bytes searched for its end already
        self.body_at = 0  # where the body starts in buf, once the head is known
        self.large = False  # large or heavy: waits for, then holds, one of the slots for those
        self.events = 0  # what the poller waits for, 0 when not registered
        self.served = 0  # requests answered on this connection

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class OstiaryWorker(ThreadWorker):
    """ThreadWorker with the reading, the TLS handshake and the connection cap on the event loop."""

    def __init__(self, *args: object, **kwargs: object):
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        self.handshake_timeout = float(_setting(cfg, "tls_handshake_timeout"))
        self.header_timeout = float(_setting(cfg, "header_timeout"))
        self.body_timeout = float(_setting(cfg, "body_timeout"))
        self.send_timeout = float(_setting(cfg, "send_timeout"))
        self.max_body = int(_setting(cfg, "max_body"))
        self.max_buffered = int(_setting(cfg, "max_buffered_bytes"))
        share = float(_setting(cfg, "peer_share"))
        self.peer_connections = max(1, int(share * self.worker_connections))
        # a peer may always buffer one body of the largest size
        self.peer_buffered = max(self.max_body + MAX_HEAD, int(share * self.max_buffered))
        self.large_slots = max(1, int(cfg.threads) // 4)
        # gunicorn's parser checks each line against limit_request_*; the loop only needs a bound
        # on what one connection may hold before its head ends (the API server sends well under 4 KiB).
        self.max_head = min(
            cfg.limit_request_line + cfg.limit_request_fields * (cfg.limit_request_field_size or 8190) + 4,
            MAX_HEAD,
        )
        self.conns: set[Conn] = set()
        self.idle: collections.OrderedDict[Conn, None] = collections.OrderedDict()  # kept-alive, oldest first
        self.buffered = 0
        self.peers: dict[str, Peer] = {}
        self.again: dict[Conn, None] = {}  # stopped after MAX_READS_PER_STEP: step again next round
        self.large_busy = 0  # requests over LARGE_BODY in threads
        self.large_waiting: collections.deque[Conn] = collections.deque()
        self.refused = 0
        self.lingering: dict[socket.socket, float] = {}  # answered with an error, closing gently
        self.ssl_context: ssl.SSLContext | None = None

    # -- the loop ---------------------------------------------------------------------------

    def init_process(self) -> None:
        self.probe_pool = futures.ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="ostiary-probe")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        super().init_process()

    def run(self) -> None:
        if self.cfg.is_ssl:
            self.ssl_context = gsock.ssl_context(self.cfg)
        for listener in self.sockets:
            listener.setblocking(False)
            self.poller.register(listener, selectors.EVENT_READ, ("accept", listener, listener.getsockname()))
        self.poller.register(self._wake_r, selectors.EVENT_READ, ("wake", None, None))
        next_sweep = 0.0
        while self.alive:
            self.notify()
            events = self.poller.select(0 if self.again else 0.25)
            self._take_finished()  # first: a finished request may free a slot for a newcomer
            self._step_again()
            for key, _mask in events:
                self._dispatch(*key.data)
            self._take_finished()
            now = time.monotonic()
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + 0.25
            if not self.is_parent_alive():
                break
        self._shutdown()

    def _step_again(self) -> None:
        """Step the connections that stopped after MAX_READS_PER_STEP in the last round."""
        again, self.again = list(self.again), {}
        for conn in again:
            if conn in self.conns and conn.state in (HANDSHAKE, IDLE, HEAD, BODY):
                self._step(conn)

    def _dispatch(
        self, kind: str, obj: Listener | socket.socket | Conn | None, extra: Address | None
    ) -> None:
        """One event of the poller, by what was registered for it: ("accept", listener, its
        address), ("wake", None, None), ("linger", socket, None) or ("conn", Conn, None)."""
        if isinstance(obj, Conn):
            self._step(obj)
        elif kind == "accept" and obj is not None and extra is not None:
            self._accept(obj, extra)
        elif kind == "linger" and isinstance(obj, socket.socket):
            self._discard(obj)
        else:
            self._drain_wake()

    def _shutdown(self) -> None:
        for listener in self.sockets:
            try:
                self.poller.unregister(listener)
            except (KeyError, ValueError):
                pass
            listener.close()
        busy = [c for c in self.conns if c.state == BUSY]
        for conn in [c for c in self.conns if c.state != BUSY]:
            self._drop(conn)
        for sock in list(self.lingering):
            self._unlinger(sock)
        futures.wait(list(self.futures), timeout=self.cfg.graceful_timeout)
        self.tpool.shutdown(False)
        self.probe_pool.shutdown(False)
        for conn in busy:
            conn.close()
        self.poller.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # the loop is awake already (full pipe) or shutting down

    def _watch(self, conn: Conn, events: int) -> None:
        """Make the poller wait for `events` on conn (0: not at all)."""
        if events == conn.events:
            return
        if conn.events and events:
            self.poller.modify(conn.sock, events, ("conn", conn, None))
        elif events:
            self.poller.register(conn.sock, events, ("conn", conn, None))
        else:
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
        conn.events = events

    def _forget(self, conn: Conn) -> None:
        self._watch(conn, 0)
        self.idle.pop(conn, None)
        self.again.pop(conn, None)
        if conn.state == WAITING:
            try:
                self.large_waiting.remove(conn)
            except ValueError:
                pass
        if conn in self.conns:
            self.conns.discard(conn)
            peer = self.peers.get(conn.peer)
            if peer is not None:
                peer.conns -= 1
        self._release(conn)
        peer = self.peers.get(conn.peer)
        if peer is not None and peer.conns <= 0 and peer.buffered <= 0:
            del self.peers[conn.peer]

    def _drop(self, conn: Conn) -> None:
        self._forget(conn)
        conn.close()

    def _linger(self, sock: socket.socket) -> None:
        """Close after an error answer without a reset: a client still sending its request would
        otherwise get ECONNRESET and lose the answer (503 Retry-After above all). Half-close, then
        read and discard for LINGER_SECONDS at most; these do not count against the cap."""
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        if len(self.lingering) >= MAX_LINGERING:
            sock.close()
            return
        try:
            self.poller.register(sock, selectors.EVENT_READ, ("linger", sock, None))
        except (KeyError, ValueError, OSError):
            sock.close()
            return
        self.lingering[sock] = time.monotonic() + LINGER_SECONDS

    def _discard(self, sock: socket.socket) -> None:
        try:
            if sock.recv(READ_CHUNK):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._unlinger(sock)

    def _unlinger(self, sock: socket.socket) -> None:
        self.lingering.pop(sock, None)
        try:
            self.poller.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass
        sock.close()

    def _hold(self, conn: Conn, count: int) -> None:
        """Count `count` more bytes held for conn (negative: fewer), for it and its peer."""
        conn.reserved += count
        self.buffered += count
        peer = self.peers.get(conn.peer)
        if peer is not None:
            peer.buffered += count

    def _release(self, conn: Conn) -> None:
        self._hold(conn, -conn.reserved)

    def _refuse(self, conn: Conn, refusal: Refuse) -> None:
        """Answer an error without a thread (the answer is small: one non-blocking send) and close."""
        try:
            conn.sock.send(refusal.answer)
        except (OSError, ssl.SSLError):
            self._drop(conn)
            return
        self._forget(conn)
        self._linger(conn.sock)

    def _sweep(self, now: float) -> None:
        for sock in [k for k, deadline in self.lingering.items() if deadline <= now]:
            self._unlinger(sock)
        for conn in [c for c in self.conns if c.state != BUSY and c.deadline <= now]:
            if conn.state in (HEAD, BODY):
                self._refuse(
                    conn, Refuse("408 Request Timeout", f"the request {conn.state} did not arrive in time")
                )
            elif conn.state == WAITING:
                self._refuse(
                    conn,
                    Refuse(
                        "503 Service Unavailable",
                        "Ostiary is busy with other large requests; retry",
                        retry_after=1,
                    ),
                )
            else:  # a handshake never finished, or nothing sent: just close
                self._drop(conn)

    # -- accepting --------------------------------------------------------------------------

    def _accept(self, listener: Listener, server: Address) -> None:
        for _ in range(64):  # a burst of connections, without starving the rest of the loop
            try:
                sock, client = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.warning("accept failed: %s", exc)
                    return
                raise
            sock.setblocking(False)
            if not self._make_room(peer_of(client)):
                self._refuse_new(sock)
                continue
            conn = Conn(self.cfg, sock, client, server)
            self.conns.add(conn)
            self.peers.setdefault(conn.peer, Peer()).conns += 1
            now = time.monotonic()
            if self.ssl_context is not None:
                try:
                    conn.sock = self.ssl_context.wrap_socket(
                        sock,
                        server_side=True,
                        do_handshake_on_connect=False,
                        suppress_ragged_eofs=self.cfg.suppress_ragged_eofs,
                    )
                except (OSError, ssl.SSLError):
                    self._drop(conn)
                    continue
                conn.state, conn.deadline = HANDSHAKE, now + self.handshake_timeout
            else:
                conn.state, conn.deadline = IDLE, now + self.header_timeout
            self._step(conn)

    def _make_room(self, address: str) -> bool:
        """Whether a newcomer from `address` may open a connection, after making room for it:
        within its own share, and within the cap at the expense of the largest holder."""
        peer = self.peers.get(address)
        holds = peer.conns if peer is not None else 0
        if holds >= self.peer_connections and not self._evict(address, idle_only=True):
            return False
        if len(self.conns) < self.worker_connections:
            return True
        if self._evict(None, idle_only=True):
            return True
        largest, most = max(((a, p.conns) for a, p in self.peers.items()), key=lambda x: x[1])
        return most > holds + 1 and self._evict(largest, idle_only=False)

    def _evict(self, address: str | None, idle_only: bool) -> bool:
        """Close the oldest kept-alive idle connection (its client reconnects) of `address` (None:
        of anyone); with idle_only False, else its oldest unfinished request, answered 503."""
        for conn in self.idle:
            if address is None or conn.peer == address:
                self._drop(conn)
                return True
        if idle_only:
            return False
        waiting = [c for c in self.conns if c.peer == address and c.state not in (BUSY, IDLE)]
        if not waiting:
            return False
        conn = min(waiting, key=lambda c: c.deadline)
        self.log.debug("closed a connection of %s, which holds the most connections", address)
        if conn.state == HANDSHAKE:
            self._drop(conn)
        else:
            self._refuse(
                conn,
                Refuse(
                    "503 Service Unavailable",
                    "Ostiary has too many open connections from this address; retry",
                    retry_after=1,
                ),
            )
        return True

    def _refuse_new(self, sock: socket.socket) -> None:
        self.refused += 1
        if self.refused == 1 or self.refused % 100 == 0:
            self.log.warning(
                "connection limit (%d) reached, none of them idle: refused %d connections so far",
                self.worker_connections,
                self.refused,
            )
        self.log.debug(
            "refused a connection: %d open (%s)",
            len(self.conns),
            collections.Counter(c.state for c in self.conns),
        )
        try:
            if self.ssl_context is None:
                sock.send(
                    _plain_answer(
                        "503 Service Unavailable",
                        "Ostiary has too many open connections; retry",
                        retry_after=1,
                    )
                )
                self._linger(sock)
                return
            # no HTTP answer without a handshake: a reset, which clients retry
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        sock.close()

    # -- reading a request on the loop ------------------------------------------------------

    def _step(self, conn: Conn) -> None:
        """Advance conn as far as it goes without blocking; hand a complete request to a thread."""
        if conn.state in (BUSY, WAITING) or conn not in self.conns:
            return  # a stale event or a second turn in one round: nothing to read for it now
        try:
            if conn.state == HANDSHAKE and not self._handshake(conn):
                return
            if self._read(conn):
                self._submit(conn)
        except Refuse as refusal:
            self._refuse(conn, refusal)
        except (OSError, ssl.SSLError, EOFError):
            self._drop(conn)

    def _handshake(self, conn: Conn) -> bool:
        assert isinstance(conn.sock, ssl.SSLSocket)  # HANDSHAKE is only ever set after wrap_socket
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, selectors.EVENT_READ)
            return False
        except ssl.SSLWantWriteError:
            self._watch(conn, selectors.EVENT_WRITE)
            return False
        conn.state, conn.deadline = IDLE, time.monotonic() + self.header_timeout
        return True

    def _read(self, conn: Conn) -> bool:
        """Read what is there, MAX_READS_PER_STEP chunks at most (then conn is stepped again on the
        next round of the loop); True once the whole request (head and body) is buffered."""
        reads = 0
        while not self._complete(conn):
            if reads == MAX_READS_PER_STEP:
                self._watch(conn, selectors.EVENT_READ)
                self.again[conn] = None
                return False
            reads += 1
            try:
                data = conn.sock.recv(READ_CHUNK)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                self._watch(conn, selectors.EVENT_READ)
                return False
            except ssl.SSLWantWriteError:
                self._watch(conn, selectors.EVENT_WRITE)
                return False
            if not data:
                raise EOFError("client closed the connection")
            conn.buf += data
            self._hold(conn, len(data))
            if self.peers[conn.peer].buffered > self.peer_buffered:
                raise Refuse(
                    "503 Service Unavailable",
                    "Ostiary holds too many unread request bytes from this address; retry",
                    retry_after=1,
                )
            if self.buffered > self.max_buffered:
                raise Refuse(
                    "503 Service Unavailable",
                    "Ostiary is reading too many request bodies; retry",
                    retry_after=1,
                )
        return True

    def _complete(self, conn: Conn) -> bool:
        if conn.state in (IDLE, HEAD):
            if not conn.buf:
                return False
            if conn.state == IDLE:
                # A new connection's head deadline runs from the accept (or the handshake); a
                # kept-alive one's from the first byte of its next request.
                self.idle.pop(conn, None)
                if conn.served:
                    conn.deadline = time.monotonic() + self.header_timeout
                conn.state = HEAD
            if conn.buf.startswith(b"\r\n"):  # stray line breaks before a request (RFC 9112 2.2)
                skip = 0
                while conn.buf.startswith(b"\r\n", skip):
                    skip += 2
                del conn.buf[:skip]
                self._hold(conn, -skip)
                conn.skipped += skip  # they count against the head limit, under the head deadline
                conn.scanned = 0
            end = conn.buf.find(b"\r\n\r\n", max(0, conn.scanned - 3))
            if end < 0:
                conn.scanned = len(conn.buf)
                if conn.skipped + len(conn.buf) > self.max_head:
                    raise Refuse("431 Request Header Fields Too Large", "the request head is too large")
                return False
            self._frame(conn, end + 4)
        return len(conn.buf) >= conn.need

    def _frame(self, conn: Conn, head_len: int) -> None:
        """Learn the body length from the head: Content-Length only, unambiguous, within the caps."""
        if conn.skipped + head_len > self.max_head:
            raise Refuse("431 Request Header Fields Too Large", "the request head is too large")
        lines = bytes(conn.buf[: head_len - 4]).split(b"\r\n")
        lengths, expect_at = [], None
        offset = len(lines[0]) + 2
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"transfer-encoding":
                raise Refuse(
                    "411 Length Required",
                    "send the body with Content-Length (chunked bodies are not accepted)",
                )
            if name == b"content-length":
                lengths.append(value.strip())
            if name == b"expect" and value.strip().lower() == b"100-continue":
                expect_at = (offset, offset + len(line) + 2)
            offset += len(line) + 2
        if len(set(lengths)) > 1 or any(not v.isdigit() or len(v) > 12 for v in lengths):
            raise Refuse("400 Bad Request", "Content-Length is missing a valid single value")
        length = int(lengths[0]) if lengths else 0
        if length > self.max_body:
            raise Refuse("413 Content Too Large", f"the request body is larger than {self.max_body} bytes")
        # Nothing is reserved for the announced length: bytes count as they arrive (_read).
        if expect_at is not None:
            # The client waits for this before sending the body; gunicorn would send it from the
            # thread, too late, so say it here and drop the header from what the parser sees.
            del conn.buf[expect_at[0] : expect_at[1]]
            self._hold(conn, -(expect_at[1] - expect_at[0]))
            head_len -= expect_at[1] - expect_at[0]
            if length:
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.body_at = head_len
        conn.need = head_len + length
        conn.state, conn.deadline = BODY, time.monotonic() + self.body_timeout

    # -- serving it on a thread -------------------------------------------------------------

    def _submit(self, conn: Conn) -> None:
        self._watch(conn, 0)
        self.again.pop(conn, None)
        if conn.state != WAITING:
            conn.large = _heavy(conn.buf, conn.body_at, conn.need)
        if conn.large:
            if self.large_busy >= self.large_slots:
                if conn.state != WAITING:
                    conn.state = WAITING  # its deadline stays the body deadline
                    self.large_waiting.append(conn)
                return
            self.large_busy += 1
        request = bytes(conn.buf[: conn.need])
        del conn.buf[: conn.need]
        conn.need = 0
        conn.skipped = conn.scanned = 0
        conn.state = BUSY
        conn.parser = http.RequestParser(self.cfg, _chunks(request), conn.client)
        pool: futures.Executor = self.probe_pool if request.startswith(_PROBES) else self.tpool
        fs = pool.submit(self._serve, conn)
        fs.conn = conn  # type: ignore[attr-defined]  # gunicorn's gthread convention: a job knows its connection
        self.futures.append(fs)
        fs.add_done_callback(lambda _: self._wake())  # runs once fs is done, so the loop sees it

    def _serve(self, conn: Conn) -> tuple[bool, Conn]:
        conn.sock.settimeout(self.send_timeout)
        return self.handle(conn)

    def _take_finished(self) -> None:
        done = [fs for fs in self.futures if fs.done()]
        for fs in done:
            self.futures.remove(fs)
            conn = fs.conn
            if conn.large:
                conn.large = False
                self.large_busy -= 1
                while self.large_waiting and self.large_busy < self.large_slots:
                    self._submit(self.large_waiting.popleft())
            self._release(conn)
            self._hold(conn, len(conn.buf))  # a pipelined request read already
            try:
                keepalive = bool(fs.result()[0])
            except Exception:  # noqa: BLE001 - handle() catches the app's errors; anything else closes the connection
                keepalive = False
            if not keepalive or not self.alive or conn not in self.conns:
                self._drop(conn)
                continue
            try:
                conn.sock.setblocking(False)
            except OSError:
                self._drop(conn)
                continue
            conn.state, conn.deadline = IDLE, time.monotonic() + self.cfg.keepalive
            self.idle[conn] = None
            conn.served += 1
            self._step(conn)  # a pipelined request may be buffered already (or pending in TLS)
