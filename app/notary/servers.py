"""Trust servers: the default Notary server of a registry, and the one form of a server URL.

Why a module: the service keys its caches and records by the normalized URL, and capture, replay and
the CLI must name a server exactly as the service does, or a capture would not answer for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from app.images import parse_image
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


def record_key(image: str, trust_server: str | None) -> tuple[str, str]:
    """(server, GUN) of IMAGE as `ostiary serve` keys its trust records; ValueError when there is none."""
    ref = parse_image(image)  # InvalidImageReference is a ValueError
    server = trust_server_for(ref.registry, trust_server)
    if server is None:
        raise ValueError(
            f"no Notary trust server is known for registry {ref.registry}; pass --trust-server URL"
        )
    normalized, error = normalize_trust_server(server)
    if error is not None:
        raise ValueError(str(error))
    return normalized, ref.name


ANY_SERVER = "*"


class TrustServerAllowList:
    """The trust servers Ostiary may be made to contact: the built-in defaults, the servers named by
    the cluster policies in force (the operator's), and those the operator lists
    (`serve --trust-server-allow URL`, repeatable; `*` allows any). A namespace policy naming any
    other server is denied without a connection, so a tenant cannot use the webhook pod to probe
    addresses it can reach."""

    def __init__(
        self, allowed: Iterable[str] = (), cluster_servers: Callable[[], Iterable[str]] | None = None
    ):
        self.any = ANY_SERVER in allowed
        self._listed = frozenset(normalize_trust_server(s)[0] for s in allowed if s != ANY_SERVER)
        self._defaults = frozenset(normalize_trust_server(s)[0] for s in DEFAULT_TRUST_SERVERS.values())
        self._cluster_servers = cluster_servers or (lambda: ())

    def permits(self, server: str) -> bool:
        """Whether `server` (normalized, as normalize_trust_server gives it) may be contacted."""
        if self.any or server in self._listed or server in self._defaults:
            return True
        return server in self._cluster_servers()

    def describe(self) -> str:
        """The allowed servers, for messages and the log."""
        if self.any:
            return "any server"
        listed = sorted(self._listed | self._defaults | set(self._cluster_servers()))
        return ", ".join(listed)


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
