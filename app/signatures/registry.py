"""Reads for the signature verifiers: manifests from a registry (v2 API, Bearer tokens from pull-secret
credentials as for Notary) and files from a signature store (simple signing's lookaside).

Every read is one bounded GET (app.notary.client.NotaryClient.get: size limit, deadline, no
redirects, no environment credentials). The digest of a manifest is always computed here from the
bytes received, never taken from a header.

`endpoints` maps a registry host as images name it to the base URL Ostiary connects to (`serve
--registry-endpoint HOST=URL`): a mirror, or a test registry on loopback. Without an entry the
registry is asked at `https://HOST` (Docker Hub at `https://registry-1.docker.io`).

Under the runtime (`hide_connection_errors`, set by app/runtime.py for `ostiary serve` and for
apply/explain/test, which word failures as serve does) a read that failed for a connection reason
says only that the host could not be reached (`shown_error`): the image reference,
and so the host and port asked, is the pod author's choice, and whether an address refused, failed
TLS or kept silent would map what the webhook pod can reach. The reason is logged at WARNING.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from app.errors import UnavailableError, VerificationError
from app.images import ImageRef
from app.notary.client import NotaryClient
from app.notary.errors import FetchTimeout, ServerUnreachable, TrustError
from app.registry.token import HttpAnswer, TokenError, TokenProvider, parse_bearer_challenge

MAX_MANIFEST_BYTES = 4 << 20
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
DOCKER_HUB_API = "https://registry-1.docker.io"
REFERRERS_ABSENT = frozenset({400, 404, 405, 501})  # answers of registries without the referrers API

log = logging.getLogger(__name__)


class ReadError(VerificationError):
    """A read failed; the message names what, where and why (it ends up in a denial)."""


class NoManifest(ReadError):
    """The registry has no manifest for the image (HTTP 404): nothing to verify a signature of."""

    def __init__(self, image: ImageRef):
        super().__init__(f"registry {image.registry} has no manifest for {image.normalized}")


class RegistryUnavailable(ReadError, UnavailableError):
    """The registry or store could not answer (not reached, timed out, HTTP 429 or 5xx): nothing was
    learnt about the signatures. Still a denial at admission; the audit reports it as `error`."""


def unreachable(who: str) -> str:
    """What serve's facts say of a host that could not be reached, whatever happened."""
    return f"{who} could not be reached (details in Ostiary's log)"


def connection_failure(error: TrustError) -> bool:
    """No HTTP answer was had: refused, reset, TLS or certificate failure, a non-HTTP answer, a body
    cut off, no answer in time (app.notary.client.NotaryClient.get). An answer that was had (any
    status, or one over the size bound: ResponseTooLarge) is not one."""
    return isinstance(error, (ServerUnreachable, FetchTimeout))


def shown_error(error: TrustError, who: str, url: str, image: str, *, hide: bool) -> RegistryUnavailable:
    """The failure of the GET of `url` for `image` as the facts (and so the denial a pod's author
    reads) state it. With `hide` (serve) a connection failure reads only `unreachable(who)`, and what
    happened is logged here, once; otherwise, and for every HTTP-level failure, the full reason."""
    if not (hide and connection_failure(error)):
        return RegistryUnavailable(error.reason)
    log.warning("signatures of %s: %s could not be reached (GET %s): %s", image, who, url, error.reason)
    return RegistryUnavailable(unreachable(who))


def read_failure(who: str, status: int, what: str) -> ReadError:
    """The error for an unexpected HTTP status: unavailable for 429 and 5xx, a plain ReadError else."""
    error = RegistryUnavailable if status == 429 or status >= 500 else ReadError
    return error(f"{who} answered HTTP {status} for {what}")


@dataclass(frozen=True)
class Manifest:
    digest: str  # sha256 of the bytes received
    media_type: str
    body: bytes


def parse_endpoints(items: Sequence[str]) -> dict[str, str]:
    """`HOST=URL` items (serve --registry-endpoint) as a map; raises ValueError naming a bad item."""
    endpoints: dict[str, str] = {}
    for item in items:
        host, sep, url = item.partition("=")
        host, url = host.strip().lower(), url.strip().rstrip("/")
        if (
            not sep
            or not host
            or not url.startswith(("https://", "http://"))
            or any(c.isspace() for c in url)
        ):
            raise ValueError(f"registry endpoint {item!r} is not HOST=https://URL")
        endpoints[host] = url
    return endpoints


class SignatureReads(Protocol):
    """The reads a verifier makes: RegistryReader live, replay.ReplayReader from captures,
    replay.RecordingReader live while capturing. Each raises ReadError when it cannot answer."""

    def manifest(
        self, image: ImageRef, reference: str, deadline: float, credentials: Sequence[tuple[str, str]] = ()
    ) -> Manifest | None: ...

    def blob(
        self,
        image: ImageRef,
        digest: str,
        deadline: float,
        credentials: Sequence[tuple[str, str]] = (),
        limit: int = 1 << 20,
    ) -> bytes: ...

    def referrers(
        self, image: ImageRef, digest: str, deadline: float, credentials: Sequence[tuple[str, str]] = ()
    ) -> bytes | None: ...

    def store_get(
        self, url: str, deadline: float, credentials: Sequence[tuple[str, str]] = (), limit: int = 64 * 1024
    ) -> HttpAnswer: ...


class RegistryReader:
    """Thread-safe; one per process, shared by the verifiers."""

    def __init__(
        self,
        http: NotaryClient | None = None,
        *,
        endpoints: Mapping[str, str] | None = None,
        tokens: TokenProvider | None = None,
        hide_connection_errors: bool = False,
    ):
        self.http = http or NotaryClient()
        self.endpoints = dict(endpoints or {})
        self.tokens = tokens or self.http.tokens
        # The runtime (serve, apply/explain/test): a connection failure reads "could not be reached" in
        # the facts (shown_error); `ostiary trust inspect` and capture keep the details.
        self.hide_connection_errors = hide_connection_errors

    def base_url(self, registry: str) -> str:
        if registry in self.endpoints:
            return self.endpoints[registry]
        if registry == "docker.io":
            return DOCKER_HUB_API
        return f"https://{registry}"

    def manifest(
        self, image: ImageRef, reference: str, deadline: float, credentials: Sequence[tuple[str, str]] = ()
    ) -> Manifest | None:
        """The manifest of `image` at `reference` (a tag or digest), or None when the registry has
        none (404). A digest reference must hash to itself."""
        url = f"{self.base_url(image.registry)}/v2/{image.repository}/manifests/{reference}"
        answer = self._registry_get(url, image, deadline, credentials, limit=MAX_MANIFEST_BYTES)
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise read_failure(
                f"registry {image.registry}", answer.status, f"manifest {image.name}:{reference}"
            )
        digest = "sha256:" + hashlib.sha256(answer.body).hexdigest()
        if reference.startswith("sha256:") and digest != reference.lower():
            raise ReadError(
                f"registry {image.registry} served manifest bytes for {reference} that hash to {digest}"
            )
        media_type = (answer.headers.get("Content-Type") or "").split(";", 1)[0].strip()
        return Manifest(digest, media_type, answer.body)

    def referrers(
        self, image: ImageRef, digest: str, deadline: float, credentials: Sequence[tuple[str, str]] = ()
    ) -> bytes | None:
        """The OCI 1.1 referrers listing (an image index) of `digest` in `image`'s repository, or None
        when the registry has no referrers API (404, 400, 405 or 501: the caller reads the fallback
        tag). Any other answer raises ReadError."""
        url = f"{self.base_url(image.registry)}/v2/{image.repository}/referrers/{digest}"
        answer = self._registry_get(url, image, deadline, credentials, limit=MAX_MANIFEST_BYTES)
        if answer.status in REFERRERS_ABSENT:
            return None
        if answer.status != 200:
            raise read_failure(
                f"registry {image.registry}", answer.status, f"the referrers of {image.name}@{digest}"
            )
        return answer.body

    def blob(
        self,
        image: ImageRef,
        digest: str,
        deadline: float,
        credentials: Sequence[tuple[str, str]] = (),
        limit: int = 1 << 20,
    ) -> bytes:
        """The blob `digest` of `image`'s repository, hash checked."""
        url = f"{self.base_url(image.registry)}/v2/{image.repository}/blobs/{digest}"
        answer = self._registry_get(url, image, deadline, credentials, limit=limit)
        if answer.status != 200:
            raise read_failure(f"registry {image.registry}", answer.status, f"blob {digest} of {image.name}")
        if "sha256:" + hashlib.sha256(answer.body).hexdigest() != digest:
            raise ReadError(
                f"registry {image.registry} served bytes for blob {digest} that hash to something else"
            )
        return answer.body

    def store_get(
        self, url: str, deadline: float, credentials: Sequence[tuple[str, str]] = (), limit: int = 64 * 1024
    ) -> HttpAnswer:
        """GET a signature-store file; credentials (storeSecret) are only sent over https."""
        auth = credentials[0] if credentials and url.startswith("https://") else None
        return self._get(
            url,
            what="signature",
            who=f"signature store {url.split('/')[2]}",
            deadline=deadline,
            auth=auth,
            limit=limit,
        )

    # -- plumbing -------------------------------------------------------------------------------------

    def _get(
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
        image: str = "-",
    ) -> HttpAnswer:
        try:
            return self.http.get(
                url,
                what=what,
                who=who,
                deadline=deadline,
                headers=headers,
                params=params,
                auth=auth,
                limit=limit,
            )
        except TrustError as error:
            raise shown_error(error, who, url, image, hide=self.hide_connection_errors) from None

    def _registry_get(
        self,
        url: str,
        image: ImageRef,
        deadline: float,
        credentials: Sequence[tuple[str, str]],
        *,
        limit: int,
    ) -> HttpAnswer:
        who = f"registry {image.registry}"
        headers = {"Accept": MANIFEST_ACCEPT}
        subject = image.normalized
        answer = self._get(
            url, what="manifest", who=who, deadline=deadline, headers=headers, limit=limit, image=subject
        )
        if answer.status != 401:
            return answer
        challenge = parse_bearer_challenge(answer.headers.get("WWW-Authenticate"))
        if challenge is None:
            if credentials and url.startswith("https://"):  # Basic authentication
                for basic in dict.fromkeys(credentials):
                    answer = self._get(
                        url,
                        what="manifest",
                        who=who,
                        deadline=deadline,
                        headers=headers,
                        auth=basic,
                        limit=limit,
                        image=subject,
                    )
                    if answer.status != 401:
                        return answer
            raise ReadError(f"{who} refused access to {image.name} (HTTP 401)")
        notes: list[str] = []
        attempts: list[tuple[str, str] | None] = (
            list(dict.fromkeys(credentials)) if challenge.realm_is_https else []
        )
        attempts.append(None)

        def token_get(
            url: str, *, params: Mapping[str, str], auth: tuple[str, str] | None, deadline: float, limit: int
        ) -> HttpAnswer:
            return self._get(
                url,
                what="token",
                who=f"token service {challenge.realm}",
                deadline=deadline,
                params=params,
                auth=auth,
                limit=limit,
                image=subject,
            )

        for credential in attempts:
            try:
                token = self.tokens.token(token_get, challenge, credential, deadline)
            except TokenError as error:
                notes.append(error.reason)
                continue
            answer = self._get(
                url,
                what="manifest",
                who=who,
                deadline=deadline,
                headers={**headers, "Authorization": f"Bearer {token}"},
                limit=limit,
                image=subject,
            )
            if answer.status != 401:
                return answer
            self.tokens.forget(challenge, credential[0] if credential else None)
            notes.append("a token was refused")
        raise ReadError(f"{who} refused access to {image.name} (HTTP 401): {'; '.join(notes) or 'no token'}")
