"""The facts document (docs/internals.md, `input.images[i].trust`) built from verified trust data.

Python states facts; the Rego policy decides. `build_facts` is called by
TrustedRepository.facts (verified True); `failure_facts` describes a failure (verified False).
Built from plain values (digests, role summaries, keys, a release function): this module imports
nothing of the metadata or the state machine, so it can be read, and tested, on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from app.notary.errors import (
    DeadlineExceeded,
    FetchError,
    RoleNotServed,
    ServerNotAllowed,
    ServiceError,
    TrustError,
)
from app.notary.keys import (
    KeyFormatError,
    certificate_problem,
    load_pem_public_key,
    load_public_key,
    material_fingerprint,
    public_key_bytes,
    signer_key_ids,
)

# tag -> (the digest docker pull resolves it to, or None and why docker refuses): the verifier's
# TrustedRepository.docker_release, which walks the roles in Docker's order.
Release = Callable[[str], tuple[str | None, str | None]]


def select_targets(
    digests: Mapping[str, Mapping[str, str]], tag: str | None, digest: str | None, release: Release
) -> dict[str, dict[str, Any]]:
    """The `targets` part: the tag asked for; for a digest-only reference every tag signed with it.

    With neither tag nor digest, every signed tag (for inspection tools). `released` is what Docker
    would pull (None when Docker refuses the tag; `refused` then says why).
    """

    def entry(name: str, role_digests: Mapping[str, str]) -> dict[str, Any]:
        released, refused = release(name)
        return {"released": released, "refused": refused, "roles": dict(sorted(role_digests.items()))}

    if tag is not None:
        return {tag: entry(tag, digests.get(tag, {}))}
    if digest is not None:
        wanted = digest.lower()
        return {
            name: entry(name, role_digests)
            for name, role_digests in sorted(digests.items())
            if wanted in role_digests.values()
        }
    return {name: entry(name, role_digests) for name, role_digests in sorted(digests.items())}


def signer_facts(
    signers: Sequence[tuple[str, str, str]],
    keys: Iterable[tuple[str, str, str]] = (),
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """One entry per required signer: the key IDs under which its key appears.

    `keys` are (keyid, keytype, public) of the verified trust data; an ID is listed when its public
    key equals the signer's, together with the IDs computed from the PEM itself. A signer given as
    a certificate that is not valid at `now` (expired or not yet valid) authorises nothing: its
    entry gets an error and no key IDs.
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
            "name": name,
            "secret": secret,
            "role": f"targets/{name}",
            "keyids": [],
            "error": None,
            "key": material_fingerprint(pem),
        }
        try:
            own = signer_key_ids(pem)
            key, cert = load_pem_public_key(pem)
            material = public_key_bytes(key)
        except (KeyFormatError, ValueError, TypeError):
            item["error"] = f"secret {secret}: publicKey is not a PEM public key or certificate"
            result.append(item)
            continue
        problem = certificate_problem(cert, now) if cert is not None and now is not None else None
        if problem is not None:
            item["error"] = f"secret {secret}: the signer's certificate does not authorise: {problem}"
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
    release: Release,
    now: datetime,
    root_trust: str | None = None,
    root_pins: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "verified": True,
        "root_trust": root_trust,
        "root_pins": sorted(root_pins),
        "error": None,
        "error_role": None,
        "server": server,
        "gun": gun,
        "tag": tag,
        "digest": digest,
        "targets": select_targets(digests, tag, digest, release),
        "roles": {role: dict(value) for role, value in roles.items()},
        "signers": signer_facts(signers, keys, now),
    }


class FailureFacts(dict):
    """The facts of an image whose trust data did not verify (a plain dict to OPA and to JSON), with
    ``unavailable``: whether the failure was the trust service's or the server's (not reached, an
    unexpected status, a timeout, an internal error) rather than a verdict on the trust data. The
    audit (app/audit) reports such an image as ``error``, never as a policy failure or a pass."""

    unavailable: bool = False


def unavailable_error(error: TrustError) -> bool:
    """True when `error` says nothing about the image's trust data: it could not be had or checked
    (a role the server answers 404 for is an answer: "not signed there")."""
    if isinstance(error, (RoleNotServed, ServerNotAllowed)):
        return False
    return isinstance(error, (FetchError, ServiceError, DeadlineExceeded))


def failure_facts(
    server: str | None,
    gun: str,
    tag: str | None,
    digest: str | None,
    error: TrustError,
    signers: Sequence[tuple[str, str, str]],
) -> dict[str, Any]:
    """The facts of an image whose trust data did not verify: verified False, with the error."""
    facts = FailureFacts(
        {
            "verified": False,
            "root_trust": None,
            "root_pins": [],
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
    )
    facts.unavailable = unavailable_error(error)
    return facts
