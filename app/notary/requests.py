"""What the trust service is asked (TrustRequest, Signer) and what it fetches with (RoleFetcher).

Its own module so the ports (app/ports.py) and the offline replay name these types without
importing the network service; app/notary/service.py re-exports them for old callers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from app.images import ImageRef
from app.notary.pins import RootPin


@dataclass(frozen=True)
class Signer:
    secret: str  # the Secret's name (for messages)
    name: str  # signer name; the role is "targets/<name>"
    public_key_pem: str  # PEM public key or certificate


@dataclass(frozen=True)
class TrustRequest:
    image: ImageRef
    server: str  # "https://notary.docker.io"
    signers: tuple[Signer, ...] = ()
    credentials: tuple[tuple[str, str], ...] = ()  # (username, password) for the image's registry, in order
    root_pins: tuple[RootPin, ...] = ()  # pinned root material (policy `trust.rootSecrets`): no TOFU
    # The image is in the pod template of a live controller owner Ostiary admitted (app/kube/owners.py):
    # a verified repository in the cache may answer past the TTL (up to OWNER_MAX_AGE, never past its
    # signed expiry).
    owner_proved: bool = False
    # A dry run (AdmissionReview request.dryRun): verified like any other, but nothing durable is
    # written — no trust record is created or updated, and a first use is not cached.
    dry_run: bool = False


class TokenCounter(Protocol):
    @property
    def requests_made(self) -> int: ...


class RoleFetcher(Protocol):
    """Fetches one TUF role's bytes: app.notary.client.NotaryClient (the network) and
    app.offline.replay.ReplayClient (a capture) play it. No judging here: the walker verifies."""

    @property
    def tokens(self) -> TokenCounter: ...

    def fetch_role(
        self,
        server: str,
        gun: str,
        role: str,
        *,
        deadline: float,
        credentials: Sequence[tuple[str, str]] = (),
        account: Callable[[int], None] | None = None,
    ) -> bytes: ...

    def close(self) -> None: ...
