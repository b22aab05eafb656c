"""A small client for OPA's REST API (v1): policies in, decisions out, pooled connections.

Every failure is an exception; callers turn it into a denial. An undefined result is not an
empty answer but OpaUndefined, so a missing rule can never read as "allowed".
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import quote

import requests


class OpaError(RuntimeError):
    """OPA could not be reached, timed out, or answered with an error."""


class OpaUndefined(OpaError):
    """The queried document is undefined (no policy loaded, or a rule did not evaluate)."""


class OpaModuleRefused(OpaError):
    """OPA answered and refused a module (parse or compile errors): the module's fault, not OPA's."""

    def __init__(self, module_id: str, errors: str):
        super().__init__(f"OPA refused module {module_id}: {errors}")
        self.module_id = module_id
        self.errors = errors


AUTHZ_PACKAGE = ["data", "system", "authz"]


class OpaClient:
    """`token`: sent as `Authorization: Bearer` (OPA run with --authentication=token)."""

    def __init__(self, url: str, timeout: float = 2.0, token: str | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.token = token
        self._session = requests.Session()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._last = threading.local()  # per request thread: the decision id of its last query

    def set_token(self, token: str | None) -> None:
        """A new bearer token (a rotated Secret) for every request from now on."""
        self.token = token
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        else:
            self._session.headers.pop("Authorization", None)

    def _request(self, method: str, path: str, timeout: float, **kwargs: Any) -> requests.Response:
        if timeout <= 0:
            raise OpaError("no time left for the OPA request (deadline passed)")
        try:
            resp = self._session.request(method, self.url + path, timeout=timeout, **kwargs)
        except requests.Timeout:
            raise OpaError(f"OPA at {self.url} did not answer within {timeout:.2f}s") from None
        except requests.RequestException as exc:
            raise OpaError(f"OPA at {self.url} is unreachable: {exc.__class__.__name__}") from None
        if resp.status_code in (401, 403):
            if self.token:
                raise OpaError(f"OPA at {self.url} rejected Ostiary's token ({resp.status_code}): the token "
                               "file (--opa-token-file) must hold the token OPA's system.authz policy allows")
            raise OpaError(f"OPA at {self.url} requires authentication ({resp.status_code}): "
                           "give Ostiary its token with --opa-token-file")
        return resp

    @staticmethod
    def _errors(resp: requests.Response) -> str:
        try:
            body = resp.json()
        except ValueError:
            return resp.text[:500]
        messages = [body.get("message", "")]
        for err in body.get("errors") or []:
            loc = err.get("location") or {}
            messages.append(f"{loc.get('file', '')}:{loc.get('row', '')}: {err.get('message', '')}")
        return "; ".join(m for m in messages if m)

    def put_policy(self, module_id: str, source: str) -> None:
        resp = self._request(
            "PUT",
            f"/v1/policies/{quote(module_id, safe='/')}",
            self.timeout * 5,
            data=source.encode(),
            headers={"Content-Type": "text/plain"},
        )
        if resp.status_code == 400:
            raise OpaModuleRefused(module_id, self._errors(resp))
        if resp.status_code != 200:
            raise OpaError(f"OPA did not take module {module_id} ({resp.status_code}): {self._errors(resp)}")

    def delete_policy(self, module_id: str) -> None:
        resp = self._request("DELETE", f"/v1/policies/{quote(module_id, safe='/')}", self.timeout * 5)
        if resp.status_code not in (200, 404):
            raise OpaError(f"OPA refused to delete module {module_id}: {self._errors(resp)}")

    def list_policies(self) -> dict[str, str]:
        """Every module OPA holds: id -> source text (the whole set, whoever wrote it)."""
        resp = self._request("GET", "/v1/policies", self.timeout * 5)
        if resp.status_code != 200:
            raise OpaError(f"OPA could not list policies: {self._errors(resp)}")
        try:
            items = resp.json().get("result") or []
            return {str(item["id"]): str(item.get("raw", "")) for item in items if not self._is_authz(item)}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise OpaError("OPA listed its policies in a form Ostiary does not understand") from None

    def _is_authz(self, item: dict) -> bool:
        """OPA's own access policy (package system.authz, as OPA parsed it) is part of OPA's
        configuration, not of the policy set Ostiary keeps exact; it only exists when a token
        guards the API, and then only the token holder could have written it."""
        if not self.token:
            return False
        path = ((item.get("ast") or {}).get("package") or {}).get("path") or []
        return [part.get("value") for part in path] == AUTHZ_PACKAGE

    def list_policy_ids(self) -> set[str]:
        return set(self.list_policies())

    def query(self, path: str, input: dict, deadline: float) -> Any:
        """POST /v1/data/<path> with `input`; `deadline` is an absolute time.monotonic() value."""
        remaining = deadline - time.monotonic()
        self._last.decision_id = None
        resp = self._request("POST", f"/v1/data/{path.strip('/')}", remaining, json={"input": input})
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

    def healthy(self) -> bool:
        return self.problem() is None

    def problem(self) -> str | None:
        """None when OPA answers /health with 200, else what is wrong (for /readyz)."""
        try:
            resp = self._request("GET", "/health", self.timeout)
        except OpaError as exc:
            return str(exc)
        return None if resp.status_code == 200 else f"OPA at {self.url} is not healthy ({resp.status_code})"
