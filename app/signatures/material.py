"""What every signature format reads the same way: the key material of a requirement's Secrets (one
loop, a per-format reader), strict JSON documents and objects (the keys a document must and may have,
no other) and base64 text. Each format passes its own error type, so its messages stay its own.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from app.notary.canonical import load_json
from app.signatures.port import SignatureRequest

T = TypeVar("T")


def key_secret(secret: str) -> str:
    """How a Secret of key material is named in a reason (cosign, simple signing)."""
    return f"key secret {secret}"


def load_material(
    request: SignatureRequest,
    read: Callable[[str, bytes], Iterable[T]],
    refused: type[Exception] | tuple[type[Exception], ...],
    name: Callable[[str], str] = key_secret,
) -> tuple[list[T], list[str]]:
    """What `read(secret, material)` finds in each Secret of the requirement (request.keys, in order),
    and why a Secret gave nothing: the request's own key errors (a Secret missing, no `key`), then one
    reason per Secret `read` refused (an exception of type `refused`), as "<name(secret)>: <why>"."""
    found: list[T] = []
    errors = list(request.key_errors)
    for secret, material in request.keys:
        try:
            found.extend(read(secret, material))
        except refused as exc:
            errors.append(f"{name(secret)}: {exc}")
    return found, errors


def strict_json(data: bytes, what: str, error: Callable[[str], Exception]) -> object:
    """`data` as strict JSON (no floats, NaN or duplicated keys: app/notary/canonical.py), else raises
    `error("<what> is not strict JSON: <why>")`."""
    try:
        return load_json(data)
    except (ValueError, RecursionError) as exc:
        raise error(f"{what} is not strict JSON: {exc}") from None


def b64_text(value: object, what: str, limit: int, error: Callable[[str], Exception]) -> bytes:
    """The bytes of standard base64 text of at most `limit` characters, else raises `error`."""
    if not isinstance(value, str) or not value or len(value) > limit:
        raise error(f"{what} is not base64 text of at most {limit} characters")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise error(f"{what} is not valid base64") from None


def pem_blocks(
    material: bytes, label: str, limit: int, error: Callable[[str], Exception], too_many: str
) -> list[bytes]:
    """The `-----BEGIN <label>-----` PEM blocks of `material`, in order, each with a final newline (a
    linear scan, no regex); raises `error` for a block without its END line and `error(too_many)` past
    `limit` blocks."""
    begin, end_line = f"-----BEGIN {label}-----".encode(), f"-----END {label}-----".encode()
    blocks: list[bytes] = []
    at = 0
    while (start := material.find(begin, at)) >= 0:
        end = material.find(end_line, start)
        if end < 0:
            raise error(f"a {label} block has no END line")
        at = end + len(end_line)
        blocks.append(material[start:at] + b"\n")
        if len(blocks) > limit:
            raise error(too_many)
    return blocks


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """`cert` is directly issued by `issuer` (names and signature); False also for a signature
    algorithm `cryptography` cannot check."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def exact_object(
    value: object,
    required: set[str],
    optional: set[str],
    where: str,
    error: Callable[[str], Exception],
    refused: str = "refused",
) -> dict:
    """`value` when it is a JSON object with every key of `required`, and no key outside `required` and
    `optional`; else raises `error(<why, naming where>)`."""
    if not isinstance(value, dict):
        raise error(f"{where} is not a JSON object")
    missing = required - set(value)
    unknown = set(value) - required - optional
    if missing:
        raise error(f"{where} lacks {', '.join(sorted(missing))}")
    if unknown:
        raise error(f"{where} has unknown keys {', '.join(sorted(unknown))} ({refused})")
    return value
