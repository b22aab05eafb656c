"""The registry token flow (Docker distribution "token authentication"), as a Notary server uses it.

Why: Notary servers in front of a registry (Docker Hub, Quay, a private registry) answer
`401 WWW-Authenticate: Bearer realm="…",service="…",scope="…"`. The client then asks the realm for a
token, with HTTP basic credentials from the pod's pull secrets or anonymously, and repeats the request
with `Authorization: Bearer <token>`.

Rules this module keeps:

- Credentials go only to an `https://` realm. A challenge naming an `http://` realm gets an anonymous
  token request only (the pull secret is withheld, never refused silently: the reason is reported if the
  anonymous token is not enough). Realms with any other scheme are refused.
- Tokens are cached per (realm, service, scope, credential) until their `expires_in` (default 60 s,
  as the distribution spec says) minus a small margin, in a bounded LRU; the cache is thread-safe.
  The credential is identified by a keyed hash of username *and* password (`credential_id`), never
  by the username alone: a pull secret with the right username and a wrong password must not be
  handed the token another pod's correct password obtained.
- All HTTP goes through a caller-supplied bounded GET (deadline and size limits live in the caller),
  so this module has no network policy of its own and is tested without sockets.

    >>> parse_bearer_challenge('Bearer realm="https://auth.docker.io/token",service="notary.docker.io"')
    BearerChallenge(realm='https://auth.docker.io/token', service='notary.docker.io', scope=None)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from app.errors import UnavailableError

DEFAULT_EXPIRES_IN = 60.0
# Refresh a little before the server's expiry so a token never dies in flight.
EXPIRY_MARGIN = 5.0
MAX_TOKEN_RESPONSE_BYTES = 256 << 10

_PARAM_RE = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)')
_SCHEME_RE = re.compile(r"(?:^|,)\s*([A-Za-z][A-Za-z0-9_-]*)(?:\s+|$)")


@dataclass(frozen=True)
class BearerChallenge:
    realm: str
    service: str | None = None
    scope: str | None = None

    @property
    def realm_is_https(self) -> bool:
        return urlsplit(self.realm).scheme.lower() == "https"


class TokenError(UnavailableError):
    """A token could not be obtained; `reason` is written for a person."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: Mapping[str, str]
    body: bytes


class BoundedGet(Protocol):
    """GET `url` with query `params` and optional basic `auth`; honours `deadline` and a size limit.

    Network failures raise the caller's own exceptions; they pass through TokenProvider untouched.
    """

    def __call__(
        self,
        url: str,
        *,
        params: Mapping[str, str],
        auth: tuple[str, str] | None,
        deadline: float,
        limit: int,
    ) -> HttpAnswer: ...


def parse_bearer_challenge(header: str | None) -> BearerChallenge | None:
    """The Bearer challenge in a WWW-Authenticate value, or None when there is none (or no realm)."""
    if not header:
        return None
    # Find "Bearer" as an auth-scheme token; other schemes (Basic realm=…) may precede it.
    for match in _SCHEME_RE.finditer(header):
        if match.group(1).lower() != "bearer":
            continue
        params = _parse_params(header[match.end() :])
        realm = params.get("realm")
        if not realm:
            return None
        return BearerChallenge(realm=realm, service=params.get("service"), scope=params.get("scope"))
    return None


def _parse_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _PARAM_RE.match(text, position)
        if not match:
            break
        name = match.group(1).lower()
        if match.group(2) is not None:
            value = re.sub(r"\\(.)", r"\1", match.group(2))
        else:
            value = match.group(3)
        # The first occurrence wins; the next scheme starts where params stop matching.
        params.setdefault(name, value)
        position = match.end()
    return params


# A per-process key: the identities kept in memory cannot be used to test password guesses offline.
_CREDENTIAL_KEY = os.urandom(32)


def credential_id(credential: tuple[str, str] | None) -> str | None:
    """Who a cached token belongs to: a keyed hash of the whole credential (username and password),
    None for anonymous. Two credentials share tokens only when both parts are equal."""
    if credential is None:
        return None
    user, password = credential
    material = len(user).to_bytes(8, "big") + user.encode() + password.encode()
    return hmac.new(_CREDENTIAL_KEY, material, hashlib.sha256).hexdigest()


class TokenProvider:
    """Obtains and caches registry tokens. Thread-safe; one per process is enough."""

    def __init__(self, *, max_entries: int = 1024, monotonic: Callable[[], float] = time.monotonic):
        self._tokens: OrderedDict[tuple[str, str, str, str], tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_entries = max_entries
        self._monotonic = monotonic
        self.requests_made = 0  # token requests sent, for metrics and tests

    @staticmethod
    def _key(challenge: BearerChallenge, identity: str | None) -> tuple[str, str, str, str]:
        return (challenge.realm, challenge.service or "", challenge.scope or "", identity or "")

    def cached(self, challenge: BearerChallenge, identity: str | None) -> str | None:
        """The token cached for `identity` (credential_id of the credential it was got with)."""
        key = self._key(challenge, identity)
        with self._lock:
            item = self._tokens.get(key)
            if item is None:
                return None
            token, expires_at = item
            if self._monotonic() >= expires_at:
                del self._tokens[key]
                return None
            self._tokens.move_to_end(key)
            return token

    def forget(self, challenge: BearerChallenge, identity: str | None) -> None:
        """Drop a token the server refused, so the next attempt fetches a fresh one."""
        with self._lock:
            self._tokens.pop(self._key(challenge, identity), None)

    def token(
        self,
        get: BoundedGet,
        challenge: BearerChallenge,
        credential: tuple[str, str] | None,
        deadline: float,
    ) -> str:
        """A token for `challenge`, cached or fetched with `credential` (None = anonymous).

        Raises TokenError when the realm refuses or answers nonsense, and when `credential` is given
        for a realm that is not https (callers should ask anonymously instead).
        """
        username = credential[0] if credential else None
        identity = credential_id(credential)
        cached = self.cached(challenge, identity)
        if cached is not None:
            return cached
        _check_realm(challenge, credential)
        params = {
            name: value
            for name, value in (("service", challenge.service), ("scope", challenge.scope))
            if value
        }
        started = self._monotonic()
        with self._lock:
            self.requests_made += 1
        answer = get(
            challenge.realm, params=params, auth=credential, deadline=deadline, limit=MAX_TOKEN_RESPONSE_BYTES
        )
        who = f"as {username}" if username else "anonymously"
        if answer.status != 200:
            raise TokenError(f"token service {challenge.realm} refused a token {who} (HTTP {answer.status})")
        token, expires_in = _read_token(challenge.realm, answer.body)
        lifetime = max(0.0, expires_in - min(EXPIRY_MARGIN, expires_in / 2))
        # Measured from when the request was sent: the token may have been issued before the answer came.
        self._store(self._key(challenge, identity), token, started + lifetime)
        return token

    def _store(self, key: tuple[str, str, str, str], token: str, expires_at: float) -> None:
        with self._lock:
            self._tokens[key] = (token, expires_at)
            self._tokens.move_to_end(key)
            while len(self._tokens) > self._max_entries:
                self._tokens.popitem(last=False)


def _check_realm(challenge: BearerChallenge, credential: tuple[str, str] | None) -> None:
    """Refuse a realm that is not an http(s) URL, and sending credentials to one that is not https."""
    scheme = urlsplit(challenge.realm).scheme.lower()
    if scheme not in ("https", "http"):
        raise TokenError(f"token realm {challenge.realm!r} is not an http(s) URL")
    if credential is not None and scheme != "https":
        raise TokenError(f"credentials withheld: token realm {challenge.realm} is not https")


def _read_token(realm: str, body: bytes) -> tuple[str, float]:
    """(the token, its lifetime in seconds) from a token service's answer (DEFAULT_EXPIRES_IN when it
    gives none that can be used)."""
    try:
        document = json.loads(body)
    except ValueError:
        raise TokenError(f"token service {realm} answered with something that is not JSON") from None
    if not isinstance(document, dict):
        raise TokenError(f"token service {realm} answered with JSON that is not an object")
    token = document.get("token") or document.get("access_token")
    if not isinstance(token, str) or not token:
        raise TokenError(f"token service {realm} answered without a token")
    expires_in = document.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) or expires_in <= 0:
        expires_in = DEFAULT_EXPIRES_IN
    return token, float(expires_in)
