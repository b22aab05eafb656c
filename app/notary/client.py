"""The Notary v1 wire client: GET /v2/<gun>/_trust/tuf/<role>.json, and nothing else.

Why it is separate from verification: the state machine (app/notary/trusted.py) trusts no byte it is
handed, so this module only has to make fetching *bounded* and *honest about failures*:

- HTTPS with the certifi CAs plus an optional extra CA file (`ca_file`), on a pooled `requests.Session`;
  HTTPS_PROXY / NO_PROXY from the environment are honoured (cluster egress), netrc is not;
  redirects are not followed (a Notary server has no reason to redirect, and a redirect would move the
  bearer token to another host).
- One absolute deadline (a value of clock.monotonic(), i.e. time.monotonic()) bounds connect, TLS
  handshake, headers and every read of the body; a server that never answers or trickles bytes
  forever fails before the deadline.
- Bodies are streamed and cut at `max_response_bytes`; the error names the role.
- 404 raises `RoleNotServed` (the verifier decides whether a missing role is fatal); any other
  non-200 raises `UnexpectedStatus` (a `FetchError`) with the status; no answer at all (connect,
  TLS, request or read failed) raises `ServerUnreachable`.
- A 401 Bearer challenge runs the token flow (app/registry/token.py) with the request's credentials
  in order, then anonymously; credentials are never sent to a realm that is not https. After a
  success the (server, gun) remembers its challenge, so later fetches send the cached token at once
  instead of paying a 401 round trip each time (only when the token was anonymous or obtained with
  a username this request also carries).

Every error is a `FetchError` (a `TrustError`) whose `role` is the role being fetched and whose reason
names the server, e.g. "timestamp: notary server https://x did not answer within 4.0s".
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from http.cookiejar import DefaultCookiePolicy
from typing import cast
from urllib.parse import quote

import certifi
import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies

from app.notary import clock as clocks
from app.notary.errors import (
    AuthorizationFailed,
    FetchError,
    FetchTimeout,
    ResponseTooLarge,
    RoleNotServed,
    ServerUnreachable,
    UnexpectedStatus,
)
from app.registry.token import (
    BearerChallenge,
    HttpAnswer,
    TokenError,
    TokenProvider,
    credential_id,
    parse_bearer_challenge,
)

# The fetch errors live in errors.py with every other failure kind; re-exported for callers of the client.
__all__ = [
    "AuthorizationFailed",
    "FetchError",
    "FetchTimeout",
    "NotaryClient",
    "ResponseTooLarge",
    "RoleNotServed",
    "ServerUnreachable",
    "UnexpectedStatus",
    "tuf_url",
]

log = logging.getLogger(__name__)

_CHUNK = 64 << 10
_MIN_TIMEOUT = 0.001


class _Deadline(Exception):
    """Internal: the deadline passed while reading."""


class _TooLarge(Exception):
    """Internal: the body passed the size limit."""


class _ExtraCAAdapter(HTTPAdapter):
    """An adapter whose TLS context trusts the certifi bundle *and* an extra CA file."""

    def __init__(self, context: ssl.SSLContext, *, pool_maxsize: int):
        self._context = context
        super().__init__(pool_connections=16, pool_maxsize=pool_maxsize, max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: object
    ) -> None:
        pool_kwargs["ssl_context"] = self._context
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)


def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def tuf_url(server: str, gun: str, role: str) -> str:
    """`https://notary.docker.io` + `docker.io/library/nginx` + `targets/releases` -> the role's URL."""
    return f"{server.rstrip('/')}/v2/{quote(gun, safe='/:')}/_trust/tuf/{quote(role, safe='/')}.json"


def _remaining(deadline: float) -> float:
    return deadline - clocks.monotonic()


def _describe_server(server: str) -> str:
    return f"notary server {server.rstrip('/')}"


class NotaryClient:
    """Fetches TUF roles from Notary servers. Thread-safe: one per process, shared by all gathers."""

    def __init__(
        self,
        *,
        ca_file: str | None = None,
        max_response_bytes: int = 8 << 20,
        tokens: TokenProvider | None = None,
        pool_maxsize: int = 32,
        auth_hints: int = 1024,
    ):
        self.max_response_bytes = max_response_bytes
        self.tokens = tokens or TokenProvider()
        self.session = requests.Session()
        # No netrc credentials or CA bundle overrides from the environment in an admission path;
        # proxies (HTTPS_PROXY / NO_PROXY) are honoured explicitly per request, see get.
        self.session.trust_env = False
        # No cookies: nothing one admission's server says should ride along on another's request.
        self.session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        adapter = _ExtraCAAdapter(_tls_context(ca_file), pool_maxsize=pool_maxsize)
        self.session.mount("https://", adapter)
        self.session.mount(
            "http://", HTTPAdapter(pool_connections=16, pool_maxsize=pool_maxsize, max_retries=0)
        )
        self._hints: OrderedDict[tuple[str, str], tuple[BearerChallenge, str | None]] = OrderedDict()
        self._hints_max = auth_hints
        self._lock = threading.Lock()

    def close(self) -> None:
        self.session.close()

    # -- the public operation -------------------------------------------------------------------

    def fetch_role(
        self,
        server: str,
        gun: str,
        role: str,
        *,
        deadline: float,
        credentials: Sequence[tuple[str, str]] = (),
        account: Callable[[int], None] | None = None,
    ) -> bytes:
        """The bytes of `role` for `gun` on `server`, or a FetchError naming the role and the cause.

        `account(n)` is told of every chunk of the body as it arrives, before it is kept, and may
        raise to stop the download (the trust service's byte budget, app/notary/budget.py)."""
        url = tuf_url(server, gun, role)
        who = _describe_server(server)
        headers: dict[str, str] = {}
        hint = self._hint(server, gun)
        if (
            hint is not None
            and hint[1] is not None
            and hint[1] not in {credential_id(c) for c in credentials}
        ):
            hint = None  # a token got with another credential is not offered for this request
        if hint is not None:
            token = self.tokens.cached(hint[0], hint[1])
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
        answer = self.get(url, what=role, who=who, headers=headers, deadline=deadline, account=account)
        if answer.status == 401 and hint is not None and headers:
            # the remembered token was refused (revoked or expired early): never offer it again
            self.tokens.forget(hint[0], hint[1])
        if answer.status == 401:
            answer = self._authorize(server, gun, role, url, who, answer, credentials, deadline, account)
        if answer.status == 200:
            return answer.body
        if answer.status == 404:
            raise RoleNotServed(role, f"{who} does not serve {role}.json for {gun} (HTTP 404)")
        raise UnexpectedStatus(role, f"{who} answered HTTP {answer.status} for {role}.json of {gun}")

    # -- token flow --------------------------------------------------------------------------------

    def _authorize(
        self,
        server: str,
        gun: str,
        role: str,
        url: str,
        who: str,
        first: HttpAnswer,
        credentials: Sequence[tuple[str, str]],
        deadline: float,
        account: Callable[[int], None] | None = None,
    ) -> HttpAnswer:
        challenge = parse_bearer_challenge(first.headers.get("WWW-Authenticate"))
        if challenge is None:
            raise AuthorizationFailed(
                role, f"{who} requires authorization (HTTP 401) without a Bearer token challenge"
            )
        attempts: list[tuple[str, str] | None] = []
        notes: list[str] = []
        if challenge.realm_is_https:
            attempts.extend(dict.fromkeys((c[0], c[1]) for c in credentials))
        elif credentials:
            notes.append(f"credentials withheld: token realm {challenge.realm} is not https")
        attempts.append(None)
        answer = first

        def token_get(
            url: str, *, params: Mapping[str, str], auth: tuple[str, str] | None, deadline: float, limit: int
        ) -> HttpAnswer:
            return self.get(
                url,
                what=role,
                who=f"token service {challenge.realm}",
                params=params,
                auth=auth,
                deadline=deadline,
                limit=limit,
            )

        for credential in attempts:
            username = credential[0] if credential else None
            identity = credential_id(credential)
            try:
                token = self.tokens.token(token_get, challenge, credential, deadline)
            except TokenError as error:
                notes.append(error.reason)
                continue
            answer = self.get(
                url,
                what=role,
                who=who,
                headers={"Authorization": f"Bearer {token}"},
                deadline=deadline,
                account=account,
            )
            if answer.status != 401:
                self._remember(server, gun, challenge, identity)
                return answer
            self.tokens.forget(challenge, identity)
            notes.append(f"token {'for ' + username if username else 'obtained anonymously'} was refused")
        detail = "; ".join(notes) if notes else "no token was accepted"
        raise AuthorizationFailed(role, f"{who} refused access to {gun} (HTTP 401): {detail}")

    def _hint(self, server: str, gun: str) -> tuple[BearerChallenge, str | None] | None:
        with self._lock:
            hint = self._hints.get((server, gun))
            if hint is not None:
                self._hints.move_to_end((server, gun))
            return hint

    def _remember(self, server: str, gun: str, challenge: BearerChallenge, identity: str | None) -> None:
        """The challenge a token was accepted for, and the credential_id it was got with."""
        with self._lock:
            self._hints[(server, gun)] = (challenge, identity)
            self._hints.move_to_end((server, gun))
            while len(self._hints) > self._hints_max:
                self._hints.popitem(last=False)

    # -- bounded GET ---------------------------------------------------------------------------------

    def get(
        self,
        url: str,
        *,
        what: str,
        who: str,
        deadline: float,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        limit: int | None = None,
        account: Callable[[int], None] | None = None,
    ) -> HttpAnswer:
        """One bounded GET (size, deadline, no redirects, no environment credentials): the roles' reads
        and the other verifiers' registry and signature-store reads (app/signatures/registry.py).
        Failures raise FetchError subclasses whose role is `what`; `account` as in fetch_role."""
        limit = self.max_response_bytes if limit is None else limit
        budget = _remaining(deadline)
        if budget <= 0:
            raise FetchTimeout(what, f"no time left to ask {who} (deadline passed)")
        response = self._send(url, what, who, deadline, budget, headers, params, auth)
        try:
            body = self._read_body(response, deadline, limit, account)
        except _Deadline:
            raise FetchTimeout(
                what, f"{who} did not finish sending {what}.json within {budget:.1f}s"
            ) from None
        except _TooLarge:
            raise ResponseTooLarge(
                what, f"{who} sent more than {limit} bytes for {what}.json; refusing it"
            ) from None
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            if _remaining(deadline) <= 0:
                raise FetchTimeout(
                    what, f"{who} did not finish sending {what}.json within {budget:.1f}s"
                ) from error
            raise ServerUnreachable(what, f"reading the answer of {who} failed: {_short(error)}") from error
        finally:
            response.close()
        return HttpAnswer(status=response.status_code, headers=response.headers, body=body)

    def _send(
        self,
        url: str,
        what: str,
        who: str,
        deadline: float,
        budget: float,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
        auth: tuple[str, str] | None,
    ) -> requests.Response:
        """The request, its headers read (the body is left to _read_body), within `budget` seconds."""
        late = f"{who} did not answer within {budget:.1f}s"
        timeout = urllib3.Timeout(total=budget, connect=budget, read=budget)
        try:
            return self.session.get(
                url,
                headers=dict(headers or {}),
                params=dict(params or {}),
                auth=auth,
                timeout=cast(float, timeout),  # requests passes a urllib3 Timeout through unchanged
                stream=True,
                allow_redirects=False,
                proxies=get_environ_proxies(url),
            )
        except requests.exceptions.SSLError as error:
            raise ServerUnreachable(what, f"TLS with {who} failed: {_short(error)}") from error
        except (requests.exceptions.Timeout, TimeoutError) as error:
            raise FetchTimeout(what, late) from error
        except requests.exceptions.ConnectionError as error:
            if _remaining(deadline) <= 0:
                raise FetchTimeout(what, late) from error
            raise ServerUnreachable(what, f"cannot connect to {who}: {_short(error)}") from error
        except requests.exceptions.RequestException as error:
            raise ServerUnreachable(what, f"request to {who} failed: {_short(error)}") from error

    @staticmethod
    def _read_body(
        response: requests.Response, deadline: float, limit: int, account: Callable[[int], None] | None = None
    ) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _TooLarge()
        raw = response.raw
        chunks: list[bytes] = []
        size = 0
        while True:
            remaining = _remaining(deadline)
            if remaining <= 0:
                raise _Deadline()
            _set_read_timeout(raw, remaining)
            try:
                # read1: at most one network read, so a trickling server cannot hold us past the deadline
                chunk = raw.read1(min(_CHUNK, limit + 1 - size), decode_content=True)
            except (urllib3.exceptions.ReadTimeoutError, TimeoutError) as error:
                raise _Deadline() from error
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise _TooLarge()
            if account is not None:
                account(len(chunk))
            chunks.append(chunk)
        return b"".join(chunks)


def _set_read_timeout(raw: object, seconds: float) -> None:
    """Bound the next socket read by what is left of the deadline (urllib3 2.x keeps the socket here)."""
    connection = getattr(raw, "connection", None) or getattr(raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(max(seconds, _MIN_TIMEOUT))


def _short(error: BaseException) -> str:
    """The innermost useful message of a requests/urllib3 exception chain, on one line."""
    text = str(error)
    reason = getattr(error, "args", None)
    if reason and isinstance(reason[0], urllib3.exceptions.MaxRetryError) and reason[0].reason is not None:
        text = str(reason[0].reason)
    return " ".join(text.split())[:300]
