"""What every signature format reads the same way: the key material of a requirement's Secrets (one
loop, a per-format reader) and strict JSON objects (the keys a document must and may have, no other).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

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


def exact_object(
    value: Any,
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
