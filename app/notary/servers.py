"""Trust servers: the default Notary server of a registry, and the one form of a server URL.

Why a module: the service keys its caches and records by the normalized URL, and capture, replay and
the CLI must name a server exactly as the service does, or a capture would not answer for it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from app.notary.errors import InsecureTrustServer, NoTrustServer, TrustError

DEFAULT_TRUST_SERVERS: dict[str, str] = {
    "docker.io": "https://notary.docker.io",
    "quay.io": "https://quay.io:443",
}


def trust_server_for(
    registry: str, explicit: str | None, defaults: dict[str, str] | None = None
) -> str | None:
    """The policy's trustServer when given, else the default for the exact registry host, else None."""
    if explicit:
        return explicit
    return (DEFAULT_TRUST_SERVERS if defaults is None else defaults).get(registry)


def normalize_trust_server(server: str) -> tuple[str, TrustError | None]:
    """(https://host[:port][/path] with the host lowercased, None), or (the text, why it cannot be used)."""
    text = (server or "").strip().rstrip("/")
    if not text:
        return "", NoTrustServer(None, "no Notary trust server is configured for this image's registry")
    if "://" not in text:
        text = f"https://{text}"
    parts = urlsplit(text)
    if parts.scheme.lower() != "https" or not parts.netloc:
        return text, InsecureTrustServer(
            None, f"trust server {text} is not an https URL; Ostiary fetches trust data over https only"
        )
    return f"https://{parts.netloc.lower()}{parts.path}", None
