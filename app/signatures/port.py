"""The verifier port: what a signature verifier is asked (SignatureRequest) and what it is
(SignatureVerifier). Request types live here, apart from any network code, so the ports
(app/ports.py) and the admission code import no verifier."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.images import ImageRef

# The Secret keys of a Notation trust store (policy.notation.caSecret): Notation's named stores
# x509/ca, x509/signingAuthority and x509/tsa, one key each (docs/signatures.md).
NOTATION_STORE_KEYS = {"ca": "ca.crt", "signingAuthority": "signingAuthority.crt", "tsa": "tsa.crt"}


@dataclass(frozen=True)
class SignatureRequest:
    """One requirement of one image: verify `image` as `requirement` (the planned requirement,
    docs/rego-input.md) asks, with the key material read from its Secrets."""

    image: ImageRef
    requirement: Mapping[str, Any]  # echoed in the facts, so Rego proves them for exactly this requirement
    keys: tuple[tuple[str, bytes], ...] = ()  # (secret "namespace/name", its key material), in order
    key_errors: tuple[str, ...] = ()  # why a key Secret could not be used (missing, no `key`)
    credentials: tuple[tuple[str, str], ...] = ()  # registry (username, password) from pull secrets
    store_credentials: tuple[tuple[str, str], ...] = ()  # for the signature store (simple: storeSecret)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def format(self) -> str:
        value = self.requirement.get("format")
        return value if isinstance(value, str) else ""


class SignatureVerifier(Protocol):
    """One signature format. `verify` never raises for a failure of the image: it returns facts
    (app.signatures.facts) with `verified` false and an `error`."""

    format: str

    def verify(self, request: SignatureRequest, deadline: float) -> dict: ...
