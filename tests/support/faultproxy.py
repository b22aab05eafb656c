"""A TLS-terminating HTTP/1.1 proxy in front of the test world's notary-server, with faults.

It terminates TLS with the world's own server certificate (so a client given the world's CA file
trusts it) and forwards each GET to the real notary-server, unless a fault is switched on
(`proxy.fault = ...`, `None` for none):

- ``5xx``: answers 503 to every request;
- ``reset``: closes the connection (with RST) as soon as the request has been read;
- ``truncate``: forwards the real status and headers, then half of the body, then closes;
- ``stall``: reads the request and says nothing for 30 s;
- ``hold``: waits until `proxy.release` is set (at most 30 s), then answers what the server said.

`delay` (seconds) is waited before every request is forwarded: a slow trust server
(scripts/bench_admit.py's slow scenarios). Each client connection keeps one upstream connection,
so apart from the delay the only added cost is one TLS hop on loopback; an upstream connection
the server closed meanwhile is opened again once (GET only, so a retry is safe).

Used by tests/world/test_faults.py and the benchmark scripts.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import struct
import threading
from pathlib import Path

from tests.support.http import read_head
from tests.support.world import NotaryWorld, Scenario

Headers = list[tuple[str, str]]
_HOP_BY_HOP = ("content-length", "transfer-encoding", "connection")
_NOT_FORWARDED = ("host", "connection", "accept-encoding", "content-length")


class FaultProxy:
    """A TLS-terminating HTTP/1.1 proxy in front of the world's notary-server, with faults."""

    def __init__(self, world: NotaryWorld | Scenario, *, delay: float = 0.0) -> None:
        notary = world.world if isinstance(world, Scenario) else world
        self.delay = delay
        self.upstream_port = int(notary.notary_url.rsplit(":", 1)[1])
        if notary.dir is None:
            raise ValueError("FaultProxy: start the world first")
        world_dir = Path(notary.dir)
        self.server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_ctx.load_cert_chain(world_dir / "server.crt", world_dir / "server.key")
        self.client_ctx = ssl.create_default_context(cafile=notary.ca_file)
        self.fault: str | None = None
        self.seen = 0  # requests read from clients
        self.held = 0  # requests waiting under the "hold" fault
        self.release = threading.Event()  # "hold": forward once this is set
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(120 if self.delay else 40)
            tls = self.server_ctx.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        upstream: list[http.client.HTTPSConnection] = []  # at most one, kept for the connection
        try:
            while self._answer(conn, tls, upstream):
                pass
        except (OSError, ssl.SSLError, ValueError, http.client.HTTPException):
            return
        finally:
            for u in upstream:
                u.close()
            try:
                tls.close()
            except OSError:
                pass

    def _answer(self, conn: socket.socket, tls: ssl.SSLSocket, upstream: list) -> bool:
        """One request of a client connection; False when the connection is to be closed."""
        request = read_head(tls)  # GET requests only: no body
        if request is None:
            return False
        self.seen += 1
        fault = self.fault
        if fault == "5xx":
            tls.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy\n")
            return True
        if fault == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if fault == "hold":  # a stalled server that answers, late, what it would have
            self.held += 1
            self.release.wait(30)
        if fault == "stall":
            self._stop.wait(30)
            return False
        if self.delay:
            self._stop.wait(self.delay)
        status, headers, body = self._forward(request, upstream)
        if fault == "truncate":
            tls.sendall(self._head(status, headers, len(body)) + body[: len(body) // 2])
            return False
        tls.sendall(self._head(status, headers, len(body)) + body)
        return True

    def _forward(self, request: bytes, upstream: list) -> tuple[int, Headers, bytes]:
        line, *header_lines = request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method, path, _ = line.split(" ", 2)
        headers = {}
        for h in header_lines:
            name, _, value = h.partition(":")
            if name.lower() not in _NOT_FORWARDED:
                headers[name] = value.strip()
        for attempt in (1, 2):
            reused = bool(upstream)
            if not upstream:
                upstream.append(
                    http.client.HTTPSConnection(
                        "127.0.0.1", self.upstream_port, context=self.client_ctx, timeout=30
                    )
                )
            try:
                upstream[0].request(method, path, headers=headers)
                resp = upstream[0].getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException):
                upstream.pop().close()
                if reused and attempt == 1:
                    continue  # the server closed a kept connection: once more on a new one
                raise
            keep = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            return resp.status, keep, body
        raise AssertionError("unreachable")

    @staticmethod
    def _head(status: int, headers: Headers, length: int) -> bytes:
        lines = [f"HTTP/1.1 {status} {http.client.responses.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
