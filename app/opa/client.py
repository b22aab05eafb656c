"""A small client for OPA's REST API (v1): policies in, decisions out, pooled connections.

Every failure is an exception; callers turn it into a denial. An undefined result is not an
empty answer but OpaUndefined, so a missing rule can never read as "allowed".

It speaks HTTP over one kept-alive http.client connection per thread: OPA is on loopback, every
admission makes one or two queries, and the per-call machinery of requests and then of urllib3's
pool cost more CPU than the rest of the query (docs/performance.md).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit

from app import jsonio
from app.errors import OpaUnavailable
from app.opa.listing import ListedModule, ModuleListing


class OpaError(OpaUnavailable):
    """OPA could not be reached, timed out, or answered with an error (app/errors.py)."""


class OpaUndefined(OpaError):
    """The queried document is undefined (no policy loaded, or a rule did not evaluate)."""


class OpaModuleRefused(OpaError):
    """OPA answered and refused a module (parse or compile errors): the module's fault, not OPA's."""

    def __init__(self, module_id: str, errors: str):
        super().__init__(f"OPA refused module {module_id}: {errors}")
        self.module_id = module_id
        self.errors = errors


AUTHZ_PACKAGE = ["data", "system", "authz"]


class Response:
    """What Ostiary reads of an OPA answer: the status and the body."""

    def __init__(self, status_code: int, content: bytes):
        self.status_code = status_code
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonio.loads(self.content)


class DataAnswer:
    """OPA's answer to GET /v1/data/<path>: its bytes, decoded on demand."""

    def __init__(self, path: str, content: bytes):
        self.path = path
        self.content = content

    def value(self) -> object:
        """The document (None when undefined); raises OpaError when the answer is no data answer."""
        try:
            return jsonio.loads(self.content).get("result")
        except (ValueError, AttributeError):
            raise OpaError(
                f"OPA answered the data at {self.path} in a form Ostiary does not understand"
            ) from None


class _Connections(threading.local):
    """One kept-alive HTTP connection to OPA per request thread (and per OPA address)."""

    def __init__(self) -> None:
        self.url: str | None = None
        self.conn: http.client.HTTPConnection | None = None
        self.used = False  # the connection has answered before (it may since have been closed)


class OpaClient:
    """`token`: sent as `Authorization: Bearer` (OPA run with --authentication=token).

    HTTP goes over one kept-alive http.client connection per thread: OPA is on loopback (or the
    pod's), and a pooled general-purpose client cost more CPU per query than the query's own
    encoding (docs/performance.md). `timeout` bounds the connect and every read."""

    def __init__(self, url: str, timeout: float = 2.0, token: str | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.token = token
        self._connections = _Connections()
        self._last = threading.local()  # per request thread: the decision id of its last query
        # The connections waiting on OPA now (id -> connection), so a readiness probe that finds
        # OPA not answering can give them up at once (abandon_waits) instead of letting every
        # request thread wait out its deadline while /readyz waits for a thread.
        self._waiting: dict[int, http.client.HTTPConnection] = {}
        self._abandoned: dict[int, str] = {}
        self._waiting_lock = threading.Lock()
        self._listing = ModuleListing()  # the modules of the last GET /v1/policies, by their bytes

    def set_token(self, token: str | None) -> None:
        """A new bearer token (a rotated Secret) for every request from now on."""
        self.token = token

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection to self.url, and whether it was used before."""
        local = self._connections
        if local.conn is None or local.url != self.url:
            if local.conn is not None:
                local.conn.close()
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise OpaError(f"OPA at {self.url} is unreachable: the URL must be http:// or https://")
            if parts.scheme == "https":
                local.conn = http.client.HTTPSConnection(
                    parts.hostname, parts.port or 443, timeout=timeout, context=ssl.create_default_context()
                )
            else:
                local.conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
            local.url, local.used = self.url, False
        local.conn.timeout = timeout
        if local.conn.sock is not None:
            local.conn.sock.settimeout(timeout)
        return local.conn, local.used

    def _drop(self) -> None:
        local = self._connections
        if local.conn is not None:
            local.conn.close()
        local.conn, local.used = None, False

    def _exchange(
        self, method: str, path: str, timeout: float, body: bytes | None, headers: dict
    ) -> Response:
        """One request and its whole answer. A kept-alive connection that OPA closed meanwhile
        fails before any answer arrives: that request is sent once more on a new connection."""
        started = time.monotonic()
        for attempt in (1, 2):
            conn, reused = self._connection(timeout)
            # Only queries (an admission's request thread waits on them) can be given up; policy
            # pushes keep their own timeouts, so a slow but alive OPA still gets its modules.
            key = id(conn) if path.startswith("/v1/data/") else 0
            if key:
                with self._waiting_lock:
                    self._waiting[key] = conn
            try:
                conn.request(method, path, body=body, headers=headers)
                answer = conn.getresponse()
                content = answer.read()
            except BaseException as exc:
                self._drop()
                with self._waiting_lock:
                    self._waiting.pop(key, None)
                    why = self._abandoned.pop(key, None)
                if why is not None:
                    raise OpaError(f"OPA at {self.url} is not answering ({why}); request given up") from None
                timeout -= time.monotonic() - started
                closed = isinstance(
                    exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
                )
                if closed and attempt == 1 and reused and timeout > 0:
                    continue  # closed while idle: nothing was processed
                raise
            with self._waiting_lock:
                self._waiting.pop(key, None)
                self._abandoned.pop(key, None)
            if answer.will_close:
                self._drop()
            else:
                self._connections.used = True
            return Response(answer.status, content)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _request(
        self,
        method: str,
        path: str,
        timeout: float,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> Response:
        if timeout <= 0:
            raise OpaError("no time left for the OPA request (deadline passed)")
        headers = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        try:
            resp = self._exchange(method, path, timeout, body, headers)
        except TimeoutError:
            raise OpaError(f"OPA at {self.url} did not answer within {timeout:.2f}s") from None
        except (http.client.HTTPException, OSError, ValueError) as exc:
            raise OpaError(f"OPA at {self.url} is unreachable: {exc.__class__.__name__}") from None
        if resp.status_code in (401, 403):
            if self.token:
                raise OpaError(
                    f"OPA at {self.url} rejected Ostiary's token ({resp.status_code}): the token "
                    "file (--opa-token-file) must hold the token OPA's system.authz policy allows"
                )
            raise OpaError(
                f"OPA at {self.url} requires authentication ({resp.status_code}): "
                "give Ostiary its token with --opa-token-file"
            )
        return resp

    @staticmethod
    def _errors(resp: Response) -> str:
        try:
            body = resp.json()
        except ValueError:
            return resp.text[:500]
        messages = [body.get("message", "")]
        for err in body.get("errors") or []:
            loc = err.get("location") or {}
            col = f":{loc['col']}" if loc.get("col") else ""
            messages.append(f"{loc.get('file', '')}:{loc.get('row', '')}{col}: {err.get('message', '')}")
        return "; ".join(m for m in messages if m)

    def put_policy(self, module_id: str, source: str) -> None:
        resp = self._request(
            "PUT",
            f"/v1/policies/{quote(module_id, safe='/')}",
            self.timeout * 5,
            body=source.encode(),
            content_type="text/plain",
        )
        if resp.status_code == 400:
            raise OpaModuleRefused(module_id, self._errors(resp))
        if resp.status_code != 200:
            raise OpaError(f"OPA did not take module {module_id} ({resp.status_code}): {self._errors(resp)}")

    def put_data(self, path: str, document: str) -> None:
        """Write a JSON document (text) at /v1/data/<path>; OPA stores it without compiling anything."""
        resp = self._request(
            "PUT",
            f"/v1/data/{quote(path.strip('/'), safe='/')}",
            self.timeout * 5,
            body=document.encode(),
            content_type="application/json",
        )
        if resp.status_code not in (200, 204):
            raise OpaError(f"OPA did not take the data at {path} ({resp.status_code}): {self._errors(resp)}")

    def delete_data(self, path: str) -> None:
        """Remove the document at /v1/data/<path>; one that is not there (404) is already removed."""
        resp = self._request("DELETE", f"/v1/data/{quote(path.strip('/'), safe='/')}", self.timeout * 5)
        if resp.status_code not in (200, 204, 404):
            raise OpaError(
                f"OPA did not delete the data at {path} ({resp.status_code}): {self._errors(resp)}"
            )

    def get_data(self, path: str) -> Any:
        """The document at /v1/data/<path> (None when undefined); raises OpaError when OPA does not say."""
        return self.read_data(path).value()

    def read_data(self, path: str) -> DataAnswer:
        """OPA's answer for the document at /v1/data/<path>, not decoded yet (a caller that has
        seen the same bytes before need not decode them again); raises OpaError when OPA does not say."""
        resp = self._request("GET", f"/v1/data/{quote(path.strip('/'), safe='/')}", self.timeout * 5)
        if resp.status_code != 200:
            raise OpaError(
                f"OPA could not read the data at {path} ({resp.status_code}): {self._errors(resp)}"
            )
        return DataAnswer(path, resp.content)

    def delete_policy(self, module_id: str) -> None:
        resp = self._request("DELETE", f"/v1/policies/{quote(module_id, safe='/')}", self.timeout * 5)
        if resp.status_code not in (200, 404):
            raise OpaError(f"OPA refused to delete module {module_id}: {self._errors(resp)}")

    def _listed(self) -> list[ListedModule]:
        """Every module OPA holds, authz aside, from one GET /v1/policies (app/opa/listing.py: an
        answer made of the modules of the last one is not decoded again)."""
        resp = self._request("GET", "/v1/policies", self.timeout * 5)
        if resp.status_code != 200:
            raise OpaError(f"OPA could not list policies: {self._errors(resp)}")
        try:
            modules = self._listing.read(resp.content)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise OpaError("OPA listed its policies in a form Ostiary does not understand") from None
        return [module for module in modules if not self._is_authz(module)]

    def list_policies(self) -> dict[str, str]:
        """Every module OPA holds: id -> source text (the whole set, whoever wrote it)."""
        return {module.id: module.raw for module in self._listed()}

    def list_modules(self) -> tuple[dict[str, str], dict[str, str]]:
        """Every module OPA holds (authz aside), from one GET /v1/policies: (id -> source text,
        id -> its package as a data path "a/b/c", for telling modules' virtual documents from
        stored data)."""
        modules = self._listed()
        sources = {module.id: module.raw for module in modules}
        packages = {module.id: "/".join(module.package[1:]) for module in modules}
        return sources, packages

    def list_packages(self) -> dict[str, str]:
        return self.list_modules()[1]

    def _is_authz(self, module: ListedModule) -> bool:
        """OPA's own access policy (package system.authz, as OPA parsed it) is part of OPA's
        configuration, not of the policy set Ostiary keeps exact; it only exists when a token
        guards the API, and then only the token holder could have written it."""
        return bool(self.token) and list(module.package) == AUTHZ_PACKAGE

    def list_policy_ids(self) -> set[str]:
        return set(self.list_policies())

    def query(self, path: str, input: dict, deadline: float) -> Any:
        """POST /v1/data/<path> with `input`; `deadline` is an absolute time.monotonic() value."""
        remaining = deadline - time.monotonic()
        self._last.decision_id = None
        payload = jsonio.dumps({"input": input})
        resp = self._request(
            "POST", f"/v1/data/{path.strip('/')}", remaining, body=payload, content_type="application/json"
        )
        if resp.status_code != 200:
            raise OpaError(f"OPA query {path} failed ({resp.status_code}): {self._errors(resp)}")
        try:
            body = resp.json()
        except ValueError:
            raise OpaError(f"OPA query {path} answered with something that is not JSON") from None
        if isinstance(body, dict) and isinstance(body.get("decision_id"), str):
            self._last.decision_id = body["decision_id"]  # present when OPA's decision logging is on
        if "result" not in body:
            raise OpaUndefined(f"OPA query {path} is undefined (are Ostiary's Rego modules loaded?)")
        return body["result"]

    def last_decision_id(self) -> str | None:
        """OPA's decision id of this thread's last query (for the decision log), if OPA gave one."""
        return getattr(self._last, "decision_id", None)

    def abandon_waits(self, why: str) -> int:
        """Give up every query waiting on OPA now (each raises OpaError saying `why`): called
        when a probe finds OPA not answering, so request threads are freed at once rather than
        when their deadlines pass. Returns how many were given up."""
        with self._waiting_lock:
            waiting = list(self._waiting.items())
            for key, conn in waiting:
                self._abandoned[key] = why
                sock = conn.sock
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
        return len(waiting)

    def healthy(self) -> bool:
        return self.problem() is None

    def problem(self) -> str | None:
        """None when OPA answers /health with 200, else what is wrong (for /readyz)."""
        try:
            resp = self._request("GET", "/health", self.timeout)
        except OpaError as exc:
            return str(exc)
        return None if resp.status_code == 200 else f"OPA at {self.url} is not healthy ({resp.status_code})"
