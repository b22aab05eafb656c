"""A small threaded HTTPS server that plays a Notary server (and its token service) for the trust tests.

Why not the real notary-server here: these tests are about the network edge (deadlines, sizes, token
auth, caching) and about real Docker Hub bytes, which only a server that serves files verbatim can
replay. The real notary-server is used by the integration tests.

It serves `GET /v2/<gun>/_trust/tuf/<role>.json` from a directory per GUN (`repos`), with per-role byte
overrides, and has knobs for what a hostile or broken server does:

- `auth`: require `Authorization: Bearer`; answer 401 with a Bearer challenge naming `token_realm`
  (by default this server's own `/token`, which checks HTTP basic credentials against `users` and
  issues a token with `expires_in`);
- `delay` (seconds before answering), `hang` (accept, read the request, never answer),
  `oversize` (answer with that many bytes), `endless` (chunked body that never ends, one chunk every
  `trickle_interval` seconds), each optionally limited to some roles with `only_roles`;
- `requests`: every request seen, for counting (path, authorization header).

TLS is handshaken in the per-connection thread, so a client that stalls never blocks the listener.
"""

from __future__ import annotations

import base64
import gzip
import json
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

TUF_PREFIX = "/_trust/tuf/"


@dataclass
class SeenRequest:
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    cookie: str | None = None


@dataclass
class ServerKnobs:
    repos: dict[str, Path] = field(default_factory=dict)
    overrides: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (gun, role) -> body
    auth: bool = False
    users: dict[str, str] = field(default_factory=dict)
    allow_anonymous_token: bool = True
    token_realm: str | None = None
    token_service: str = "notary.test"
    expires_in: int | None = 300
    delay: float = 0.0
    hang: bool = False
    oversize: int | None = None
    endless: bool = False
    oversize_chunked: int | None = None  # like oversize, but chunked, without Content-Length
    fail_status: int | None = None
    stall_after_headers: bool = False  # headers and a few body bytes, then silence
    set_cookie: bool = False
    gzip_bomb: int | None = None  # a small gzip body that inflates to this many bytes
    token_issuer: NotaryTestServer | None = None  # another server whose /token issues our tokens
    trickle_interval: float = 0.05
    only_roles: set[str] | None = None
    # Affected requests are answered only once this many have arrived (each waits at most
    # rendezvous_timeout): a test of concurrency that does not depend on timing. Each wait's outcome
    # (True: the others came) is in NotaryTestServer.rendezvous.
    rendezvous_of: int = 0
    rendezvous_timeout: float = 15.0


class _Handler(BaseHTTPRequestHandler):
    server: NotaryTestServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        seen = SeenRequest(
            parts.path, parse_qs(parts.query), self.headers.get("Authorization"), self.headers.get("Cookie")
        )
        with owner.lock:
            owner.requests.append(seen)
        if parts.path == "/token":
            self._token(seen)
            return
        knobs = owner.knobs
        gun, role = _split_tuf_path(parts.path)
        if gun is None or role is None:
            self._send(404, b'{"errors":[{"code":"NOT_FOUND"}]}')
            return
        if knobs.auth and not owner.token_valid(seen.authorization):
            realm = knobs.token_realm or f"{owner.url}/token"
            challenge = (
                f'Bearer realm="{realm}",service="{knobs.token_service}",scope="repository:{gun}:pull"'
            )
            self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge})
            return
        affected = knobs.only_roles is None or role in knobs.only_roles
        if affected and knobs.rendezvous_of:
            owner.meet(knobs.rendezvous_of, knobs.rendezvous_timeout)
        if affected and knobs.hang:
            owner.stopping.wait()
            return
        if affected and knobs.delay and owner.stopping.wait(knobs.delay):
            return
        if affected and knobs.oversize is not None:
            self._send(200, b" " * knobs.oversize)
            return
        if affected and knobs.gzip_bomb is not None:
            body = gzip.compress(b" " * knobs.gzip_bomb)
            self._send(200, body, {"Content-Encoding": "gzip"})
            return
        if affected and knobs.stall_after_headers:
            self._stall()
            return
        if affected and knobs.fail_status is not None:
            self._send(knobs.fail_status, b'{"errors":[{"code":"UNKNOWN"}]}')
            return
        if affected and knobs.oversize_chunked is not None:
            self._chunked(knobs.oversize_chunked)
            return
        if affected and knobs.endless:
            self._endless()
            return
        body = owner.role_bytes(gun, role)
        if body is None:
            self._send(404, b'{"errors":[{"code":"METADATA_NOT_FOUND"}]}')
            return
        self._send(200, body, {"Set-Cookie": "session=abc; Path=/"} if knobs.set_cookie else None)

    def _token(self, seen: SeenRequest) -> None:
        owner = self.server.owner
        knobs = owner.knobs
        username = None
        if seen.authorization and seen.authorization.startswith("Basic "):
            try:
                decoded = base64.b64decode(seen.authorization[6:]).decode()
            except ValueError:
                decoded = ""
            user, _, password = decoded.partition(":")
            if knobs.users.get(user) != password:
                self._send(401, b'{"details":"incorrect username or password"}')
                return
            username = user
        elif not knobs.allow_anonymous_token:
            self._send(401, b'{"details":"anonymous access refused"}')
            return
        token = owner.issue_token(username)
        document: dict[str, object] = {"token": token}
        if knobs.expires_in is not None:
            document["expires_in"] = knobs.expires_in
        self._send(200, json.dumps(document).encode())

    def _endless(self) -> None:
        owner = self.server.owner
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            while not owner.stopping.is_set():
                self.wfile.write(b"1\r\n \r\n")
                self.wfile.flush()
                owner.stopping.wait(owner.knobs.trickle_interval)
        except OSError:
            return

    def _stall(self) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"signed":')
            self.wfile.flush()
        except OSError:
            return
        self.server.owner.stopping.wait()

    def _chunked(self, total: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b" " * 65536
        sent = 0
        try:
            while sent < total:
                piece = chunk[: total - sent]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                sent += len(piece)
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            return

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            return


def _split_tuf_path(path: str) -> tuple[str | None, str | None]:
    if not path.startswith("/v2/") or TUF_PREFIX not in path or not path.endswith(".json"):
        return None, None
    gun, _, role_file = path[len("/v2/") :].partition(TUF_PREFIX)
    return gun, role_file[: -len(".json")]


class _TLSThreadingServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: NotaryTestServer, context: ssl.SSLContext | None):
        self.owner = owner
        self.context = context
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        # Runs in the per-connection thread: the TLS handshake cannot block the accept loop.
        # No Nagle: headers and body go out as separate writes, and delayed ACKs would add 40 ms each.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.context is not None:
            try:
                request.settimeout(30)
                request = self.context.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (OSError, ssl.SSLError):
                return
        super().finish_request(request, client_address)  # type: ignore[arg-type]


class NotaryTestServer:
    """Start with `start()`, stop with `stop()`; `url` is `https://127.0.0.1:<port>` (or http)."""

    def __init__(self, cert_file: str | None, key_file: str | None, knobs: ServerKnobs | None = None):
        self.knobs = knobs or ServerKnobs()
        self.requests: list[SeenRequest] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.rendezvous: list[bool] = []  # per request of ServerKnobs.rendezvous_of: did the others come
        self._arrived = 0
        self._met = threading.Condition()
        self._tokens: dict[str, str | None] = {}
        context = None
        if cert_file and key_file:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert_file, key_file)
        self.scheme = "https" if context else "http"
        self._server = _TLSThreadingServer(self, context)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> NotaryTestServer:
        self._thread.start()
        return self

    def meet(self, count: int, timeout: float) -> None:
        """Wait until `count` requests have arrived here (this one included), or `timeout`."""
        with self._met:
            self._arrived += 1
            self._met.notify_all()
            met = self._met.wait_for(lambda: self._arrived >= count or self.stopping.is_set(), timeout)
            self.rendezvous.append(bool(met) and not self.stopping.is_set())

    def stop(self) -> None:
        self.stopping.set()
        with self._met:
            self._met.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def role_bytes(self, gun: str, role: str) -> bytes | None:
        override = self.knobs.overrides.get((gun, role))
        if override is not None:
            return override
        directory = self.knobs.repos.get(gun)
        if directory is None:
            return None
        path = directory / f"{role}.json"
        if ".." in role or not path.is_file():
            return None
        return path.read_bytes()

    def issue_token(self, username: str | None) -> str:
        token = secrets.token_urlsafe(16)
        with self.lock:
            self._tokens[token] = username
        return token

    def token_valid(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        if self.knobs.token_issuer is not None and self.knobs.token_issuer is not self:
            return self.knobs.token_issuer.token_valid(authorization)
        with self.lock:
            if authorization[7:] not in self._tokens:
                return False
            username = self._tokens[authorization[7:]]
        return username is not None or self.knobs.allow_anonymous_token

    def count(self, path_suffix: str = "", *, prefix: str = "") -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.path.endswith(path_suffix) and r.path.startswith(prefix))

    def tuf_requests(self) -> list[str]:
        """The role of every TUF request seen, in order ("timestamp", "targets/releases", ...)."""
        with self.lock:
            return [role for _, role in (_split_tuf_path(r.path) for r in self.requests) if role]


class SilentServer:
    """Accepts TCP connections and never sends a byte (not even a TLS handshake)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._accepted: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._accepted.append(connection)

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        return len(self._accepted)

    def start(self) -> SilentServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=2)
        for connection in self._accepted:
            connection.close()
        self._listener.close()


def wait_until(predicate: object, timeout: float = 2.0) -> bool:
    """Poll `predicate()` until it is true or `timeout` passes (for server-side bookkeeping)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.01)
    return False
