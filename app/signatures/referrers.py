"""The OCI 1.1 referrers of an image, read the same way for cosign bundles and Notation signatures:
the referrers API listing and the `sha256-<hex>` tag fallback (each an OCI image index), every
referrer manifest of an accepted artifact type read once, at most MAX_REFERRERS per image.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeGuard

from app.signatures.facts import signature_entry
from app.signatures.material import strict_json
from app.signatures.port import SignatureRequest
from app.signatures.registry import SignatureReads

MAX_REFERRERS = 32  # referrer manifests read per image
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def is_digest(value: object) -> TypeGuard[str]:
    """A sha256 digest as OCI writes it: "sha256:" and 64 lowercase hex digits."""
    return (
        isinstance(value, str)
        and len(value) == 71
        and value.startswith("sha256:")
        and all(c in "0123456789abcdef" for c in value[7:])
    )


def index_descriptors(body: bytes, error: Callable[[str], Exception]) -> list[Mapping[str, Any]]:
    """The descriptors (objects) of a referrers listing, which must be an OCI image index."""
    document = strict_json(body, "the referrers index", error)
    if not isinstance(document, dict) or not isinstance(document.get("manifests"), list):
        raise error("the referrers index has no manifests list")
    if document.get("mediaType", OCI_INDEX) != OCI_INDEX:
        raise error("the referrers listing is not an OCI image index")
    return [d for d in document["manifests"] if isinstance(d, dict)]


def listings(
    reader: SignatureReads, request: SignatureRequest, digest: str, deadline: float
) -> list[tuple[str, bytes]]:
    """(where, body) of each listing of `digest`'s referrers the registry has: the API, the fallback tag."""
    image = request.image
    found = []
    api = reader.referrers(image, digest, deadline, request.credentials)
    if api is not None:
        found.append((f"{image.name} referrers API", api))
    tag = digest.replace(":", "-", 1)
    fallback = reader.manifest(image, tag, deadline, request.credentials)
    if fallback is not None:
        found.append((f"{image.name}:{tag}", fallback.body))
    return found


def read_referrers(
    reader: SignatureReads,
    request: SignatureRequest,
    digest: str,
    deadline: float,
    *,
    kinds: Collection[str],
    error: type[Exception],
    read_one: Callable[[str, str], dict | None],
) -> list[dict]:
    """The signature entries of `digest`'s referrers: `read_one(referrer digest, where)` for each
    referrer manifest whose artifact type is one of `kinds` (or not given), each once, in listing
    order; a listing that is not an index (an `error`) and referrers past MAX_REFERRERS are entries
    with the reason. `read_one` answers None for a referrer that is no signature of this format."""
    image = request.image
    listed: set[str] = set()
    found: list[dict] = []
    for where, body in listings(reader, request, digest, deadline):
        try:
            descriptors = index_descriptors(body, error)
        except error as exc:
            found.append(signature_entry(where, error=str(exc)))
            continue
        for descriptor in descriptors:
            artifact = descriptor.get("artifactType")
            if isinstance(artifact, str) and artifact not in kinds:
                continue  # another kind of referrer (another format's signature, an SBOM, ...)
            ref = descriptor.get("digest")
            if descriptor.get("mediaType") != OCI_MANIFEST or not is_digest(ref) or ref in listed:
                continue
            if len(listed) >= MAX_REFERRERS:
                found.append(
                    signature_entry(
                        where, error=f"more than {MAX_REFERRERS} referrers; the rest are not read"
                    )
                )
                return found
            listed.add(ref)
            entry = read_one(ref, f"{image.name}@{ref} (from {where})")
            if entry is not None:
                found.append(entry)
    return found
