"""The facts document (docs/internals.md, `input.images[i].trust`) built from verified trust data.

Python states facts; the Rego policy decides. `build_facts` is called by
TrustedRepository.facts (verified True); `failure_facts` describes a failure (verified False).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from app.notary.errors import TrustError
from app.notary.keys import (
    KeyFormatError,
    load_pem_public_key,
    load_public_key,
    public_key_bytes,
    signer_key_ids,
)

RELEASES_ROLE = "targets/releases"
TARGETS_ROLE = "targets"


def released_digest(role_digests: Mapping[str, str]) -> str | None:
    """Docker's rule: targets/releases wins over targets; other delegations never release."""
    return role_digests.get(RELEASES_ROLE) or role_digests.get(TARGETS_ROLE)


def select_targets(
    digests: Mapping[str, Mapping[str, str]], tag: str | None, digest: str | None
) -> dict[str, dict[str, Any]]:
    """The `targets` part: the tag asked for; for a digest-only reference every tag signed with it.

    With neither tag nor digest, every signed tag (for inspection tools).
    """

    def entry(role_digests: Mapping[str, str]) -> dict[str, Any]:
        return {"released": released_digest(role_digests), "roles": dict(sorted(role_digests.items()))}

    if tag is not None:
        return {tag: entry(digests.get(tag, {}))}
    if digest is not None:
        wanted = digest.lower()
        return {
            name: entry(role_digests)
            for name, role_digests in sorted(digests.items())
            if wanted in role_digests.values()
        }
    return {name: entry(role_digests) for name, role_digests in sorted(digests.items())}


def signer_facts(
    signers: Sequence[tuple[str, str, str]], keys: Iterable[tuple[str, str, str]] = ()
) -> list[dict[str, Any]]:
    """One entry per required signer: the key IDs under which its key appears.

    `keys` are (keyid, keytype, public) of the verified trust data; an ID is listed when its public
    key equals the signer's, together with the IDs computed from the PEM itself.
    """
    known: list[tuple[str, bytes]] = []
    for keyid, keytype, public in keys:
        try:
            known.append((keyid, public_key_bytes(load_public_key(keytype, public))))
        except (KeyFormatError, ValueError, TypeError):
            continue
    result = []
    for secret, name, pem in signers:
        item: dict[str, Any] = {
            "name": name, "secret": secret, "role": f"targets/{name}", "keyids": [], "error": None,
        }
        try:
            own = signer_key_ids(pem)
            material = public_key_bytes(load_pem_public_key(pem)[0])
        except (KeyFormatError, ValueError, TypeError):
            item["error"] = f"secret {secret}: publicKey is not a PEM public key or certificate"
        else:
            matches = [keyid for keyid, key_material in known if key_material == material]
            item["keyids"] = sorted(set(matches) | set(own))
        result.append(item)
    return result


def build_facts(
    *,
    server: str | None,
    gun: str,
    tag: str | None,
    digest: str | None,
    digests: Mapping[str, Mapping[str, str]],
    roles: Mapping[str, Mapping[str, Any]],
    signers: Sequence[tuple[str, str, str]],
    keys: Iterable[tuple[str, str, str]],
) -> dict[str, Any]:
    return {
        "verified": True,
        "error": None,
        "error_role": None,
        "server": server,
        "gun": gun,
        "tag": tag,
        "digest": digest,
        "targets": select_targets(digests, tag, digest),
        "roles": {role: dict(value) for role, value in roles.items()},
        "signers": signer_facts(signers, keys),
    }


def failure_facts(
    server: str | None,
    gun: str,
    tag: str | None,
    digest: str | None,
    error: TrustError,
    signers: Sequence[tuple[str, str, str]],
) -> dict[str, Any]:
    """The facts of an image whose trust data did not verify: verified False, with the error."""
    return {
        "verified": False,
        "error": str(error),
        "error_role": getattr(error, "role", None),
        "server": server,
        "gun": gun,
        "tag": tag,
        "digest": digest,
        "targets": {},
        "roles": {},
        "signers": signer_facts(signers),
    }
