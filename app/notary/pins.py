"""Pinned roots (an Ostiary extension, policy `trust.rootSecrets` and `serve --root-pins`).

A pinned repository is not trusted on first use: its root.json must be signed, to the root role's
threshold, by pinned public keys or by keys whose certificates a pinned CA issued (docs/trust.md).
This module reads the pinned material (RootPin) and checks a parsed Root against it; the state
machine (trusted.py) calls check_pinned_root when a root is loaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from app.notary.errors import CertificateError, ThresholdNotMet
from app.notary.keys import (
    MAX_PEM_CHARS,
    X509_KEY_TYPES,
    KeyFormatError,
    certificate_problem,
    load_certificate,
    load_pem_public_key,
    load_public_key,
    public_key_bytes,
)
from app.notary.metadata import Root
from app.yamlio import DocumentError, load, read_text

MAX_PIN_BLOCKS = 64  # PEM blocks in one root secret


@dataclass(frozen=True)
class RootPin:
    """Root-of-trust material from one Secret: public keys (SPKI DER, from PEM keys or certificates)
    that may sign root.json, and CA certificates that must have issued the root keys' certificates.
    `error` says why the Secret could not be used; a pin with an error fails the image (closed)."""

    secret: str
    keys: tuple[bytes, ...] = ()
    cas: tuple[bytes, ...] = ()  # DER certificates
    error: str | None = None

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for item in (*sorted(self.keys), b"--", *sorted(self.cas), b"--", (self.error or "").encode()):
            digest.update(hashlib.sha256(item).digest())
        return digest.hexdigest()


def pem_blocks(text: str, limit: int = MAX_PIN_BLOCKS) -> list[str]:
    """Every complete PEM block of `text` (one pass over the lines; the text is bounded first)."""
    if len(text) > MAX_PEM_CHARS * limit:
        raise KeyFormatError(f"PEM text is {len(text)} characters, more than {MAX_PEM_CHARS * limit}")
    blocks: list[str] = []
    current: list[str] | None = None
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if line.startswith("-----BEGIN "):
            current = [line]
        elif current is not None:
            current.append(line)
            if line.startswith("-----END "):
                blocks.append("\n".join(current) + "\n")
                current = None
                if len(blocks) > limit:
                    raise KeyFormatError(f"more than {limit} PEM blocks")
    return blocks


def root_pin(secret: str, public_keys: str | None, ca_certificates: str | None) -> RootPin:
    """Parse a root secret's `publicKeys` (PEM keys and/or certificates) and `caCertificates`."""
    keys: list[bytes] = []
    cas: list[bytes] = []
    try:
        for block in pem_blocks(public_keys or ""):
            key, _cert = load_pem_public_key(block)
            keys.append(public_key_bytes(key))
        for block in pem_blocks(ca_certificates or ""):
            key, cert = load_pem_public_key(block)
            if cert is None:
                raise KeyFormatError("caCertificates holds a PEM block that is not a certificate")
            cas.append(cert.public_bytes(serialization.Encoding.DER))
    except (KeyFormatError, ValueError) as exc:
        return RootPin(secret, error=f"secret {secret}: root material cannot be read: {exc}")
    if not keys and not cas:
        return RootPin(
            secret, error=f"secret {secret} holds neither `publicKeys` nor `caCertificates` PEM blocks"
        )
    return RootPin(secret, tuple(keys), tuple(cas))


def default_root_pins(document: object, origin: str) -> dict[str, tuple[RootPin, ...]]:
    """`serve --root-pins FILE`: {trust server URL: {publicKeys: PEM, caCertificates: PEM}} -> pins per
    server (URL as written; the service normalizes it). Raises ValueError naming the entry when the
    file is not such a mapping or its material cannot be used: a bad pin file must stop the start."""
    if not isinstance(document, dict):
        raise ValueError(f"{origin}: expected a mapping of trust server URL to root material")  # noqa: TRY004
    pins: dict[str, tuple[RootPin, ...]] = {}
    for server, entry in document.items():
        if not isinstance(server, str) or not isinstance(entry, dict):
            raise ValueError(  # noqa: TRY004
                f"{origin}: entry {server!r} must map a server URL to publicKeys/caCertificates"
            )
        unknown = set(entry) - {"publicKeys", "caCertificates"}
        if unknown:
            raise ValueError(f"{origin}: {server}: unknown fields {sorted(unknown)}")
        keys, cas = entry.get("publicKeys"), entry.get("caCertificates")
        if not all(v is None or isinstance(v, str) for v in (keys, cas)):
            raise ValueError(f"{origin}: {server}: publicKeys and caCertificates must be PEM text")
        pin = root_pin(f"{origin} [{server}]", keys, cas)
        if pin.error:
            raise ValueError(pin.error)
        pins[server] = (pin,)
    return pins


def load_default_root_pins(path: str) -> dict[str, tuple[RootPin, ...]]:
    """Read a `--root-pins` YAML file (see default_root_pins); ValueError with the reason."""
    try:
        document = load(read_text(path), path)
    except DocumentError as exc:
        raise ValueError(f"cannot read root pins: {exc}") from None
    return default_root_pins(document, path)


def _issued_by(cert: x509.Certificate, cas: Sequence[x509.Certificate], now: datetime) -> bool:
    for ca in cas:
        try:
            constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            continue  # not marked as a CA: it authorises nothing
        if not constraints.ca or certificate_problem(ca, now) is not None:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def check_pinned_root(root: Root, gun: str, pins: Sequence[RootPin], now: datetime) -> None:
    """root.json must be signed, to the root role's threshold, by distinct root keys that are pinned
    keys or whose certificates a pinned CA issued (only keys whose signatures verified count)."""
    names = ", ".join(pin.secret for pin in pins)
    problems = [pin.error for pin in pins if pin.error]
    if problems:
        raise CertificateError("root", "; ".join(problems))
    pinned_keys = {key for pin in pins for key in pin.keys}
    cas = [x509.load_der_x509_certificate(der) for pin in pins for der in pin.cas]
    matched: set[bytes] = set()
    for keyid in root.signed_by:
        key = root.keys[keyid]
        material = public_key_bytes(load_public_key(key.keytype, key.public))
        if (
            material in pinned_keys
            or cas
            and key.keytype in X509_KEY_TYPES
            and _issued_by(load_certificate(key.public), cas, now)
        ):
            matched.add(material)
    threshold = root.roles["root"].threshold
    if len(matched) < threshold:
        raise ThresholdNotMet(
            "root",
            f"root.json of {gun} is signed by {len(matched)} of the {threshold} required root keys pinned "
            f"in secret(s) {names} (its root keys: {', '.join(root.roles['root'].keyids)}); "
            "no trust on first use for a pinned repository",
        )
