"""The one facts shape of every signature format (docs/rego-input.md, `images[i].signatures[j]`).

Python states what it verified; the Rego library (rego/ostiary/signatures.rego) decides:

    {"format": "simple", "requirement": {...the planned requirement...},
     "verified": true, "error": null,
     "digest": "sha256:…",            # the digest of the manifest the reference resolves to
     "keys": ["<key id>", …],          # the key material the requirement's Secrets hold
     "signatures": [{"source": "<where it was found>", "key_id": "<key that verified>" | null,
                     "identity": "<signed docker-reference>" | null,
                     "identity_ref": {"name", "tag", "digest"} | null,
                     "digest": "<signed manifest digest>" | null, "error": null | "why not"}]}

`verified` says the signatures could be looked for (the registry and the store answered); each
signature then says what it proves or why it proves nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.images import InvalidImageReference, parse_image

MAX_ERROR_CHARS = 400


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def identity_ref(reference: str) -> dict[str, Any] | None:
    """A signed docker-reference parsed as images are (name normalized, tag, digest); None when
    it is not an image reference."""
    try:
        ref = parse_image(reference)
    except InvalidImageReference:
        return None
    last = reference.rsplit("/", 1)[-1].split("@", 1)[0]
    return {"name": ref.name, "tag": ref.tag if ":" in last else None, "digest": ref.digest}


def signature_entry(
    source: str,
    *,
    key_id: str | None = None,
    identity: str | None = None,
    digest: str | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "source": source,
        "key_id": key_id,
        "identity": identity,
        "identity_ref": identity_ref(identity) if identity is not None else None,
        "digest": digest,
        "error": _short(error) if error is not None else None,
    }


def verified_facts(
    format: str,
    requirement: Mapping[str, Any],
    digest: str,
    keys: Sequence[str],
    signatures: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    return {
        "format": format,
        "requirement": dict(requirement),
        "verified": True,
        "error": None,
        "digest": digest,
        "keys": list(keys),
        "signatures": [dict(s) for s in signatures],
    }


class FailureFacts(dict):
    """Facts of a requirement whose signatures could not be looked for. `unavailable` (not part of the
    JSON OPA sees) says the registry or store could not answer, as the Notary facts' flag does: the
    audit reports such an image as `error`, not as a policy failure."""

    unavailable: bool = False


def failure_facts(
    format: str,
    requirement: Mapping[str, Any],
    error: str,
    digest: str | None = None,
    *,
    unavailable: bool = False,
) -> dict[str, Any]:
    facts = FailureFacts(
        {
            "format": format,
            "requirement": dict(requirement),
            "verified": False,
            "error": _short(error),
            "digest": digest,
            "keys": [],
            "signatures": [],
        }
    )
    facts.unavailable = unavailable
    return facts
