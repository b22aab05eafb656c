"""Red Hat simple signing (Portieris' `simple` policy): one requirement (`signedBy`) of one image.

What is checked here, in Python (the facts then say what each signature proves; the Rego library
decides keys, digest and identity, rego/ostiary/signatures.rego):

1. The requirement's key Secrets hold OpenPGP public keys in the accepted profile (openpgp.py).
2. The manifest digest the reference resolves to: for a tag, the sha256 of the manifest bytes the
   registry serves now; for a digest reference, the digest itself.
3. The lookaside store (`storeURL`): `<storeURL>/<repository path>@sha256=<hex>/signature-N` for
   N = 1, 2, … until the first 404, at most MAX_SIGNATURES of at most MAX_SIGNATURE_BYTES each.
   Any other answer than 200 or 404 fails the requirement (fail closed: a store that errors could
   be hiding the signature that counts, or serving one it should not).
4. Each signature: an OpenPGP signed message verifying with one of the keys, whose literal data is
   the JSON `{"critical": {"identity": {"docker-reference"}, "image": {"docker-manifest-digest"},
   "type": "atomic container signature"}, "optional": {…}}` with no other key in `critical` (or its
   members) and none beside `critical` and `optional` at the top.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from app.errors import VerificationError
from app.images import ImageRef
from app.notary.canonical import load_json
from app.signatures import openpgp
from app.signatures.cache import SignatureCache, fingerprint, no_cache
from app.signatures.facts import failure_facts, signature_entry, verified_facts
from app.signatures.material import exact_object, load_material
from app.signatures.port import SignatureRequest
from app.signatures.registry import (
    ReadError,
    RegistryUnavailable,
    SignatureReads,
    read_failure,
)

FORMAT = "simple"
MAX_SIGNATURES = 16
MAX_SIGNATURE_BYTES = openpgp.MAX_MESSAGE_BYTES
SIGNATURE_TYPE = "atomic container signature"


class PayloadError(VerificationError, ValueError):
    """The signed payload is not a simple-signing claim Ostiary accepts."""


def _exact_object(value: object, keys: set[str], optional: set[str], where: str) -> dict:
    return exact_object(value, keys, optional, where, PayloadError, "refused, as containers/image does")


def parse_claim(payload: bytes) -> tuple[str, str]:
    """(docker-reference, docker-manifest-digest) of a simple-signing payload, strictly."""
    try:
        document = load_json(payload)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"the signed payload is not strict JSON: {exc}") from None
    top = _exact_object(document, {"critical"}, {"optional"}, "the signed payload")
    critical = _exact_object(top["critical"], {"identity", "image", "type"}, set(), "critical")
    if critical["type"] != SIGNATURE_TYPE:
        raise PayloadError(f"critical.type is {critical['type']!r}, not {SIGNATURE_TYPE!r}")
    identity = _exact_object(critical["identity"], {"docker-reference"}, set(), "critical.identity")
    image = _exact_object(critical["image"], {"docker-manifest-digest"}, set(), "critical.image")
    reference, digest = identity["docker-reference"], image["docker-manifest-digest"]
    if not isinstance(reference, str) or not isinstance(digest, str):
        raise PayloadError("the signed identity and digest must be strings")
    return reference, digest


def load_keys(request: SignatureRequest) -> tuple[list[openpgp.PublicKey], list[str]]:
    """The usable keys of the requirement's Secrets, and why a Secret gave none."""
    return load_material(
        request, lambda _secret, material: openpgp.read_public_keys(material), openpgp.OpenPGPError
    )


class SimpleVerifier:
    format = FORMAT

    def __init__(
        self,
        reader: SignatureReads,
        *,
        clock: Callable[[], float] = time.time,
        cache: SignatureCache | None = None,
    ):
        self.reader = reader
        self.clock = clock
        self.cache = cache or no_cache()  # verified facts and tag resolutions (cache.py)

    @SignatureCache.single_flight
    def verify(self, request: SignatureRequest, deadline: float) -> dict:
        requirement = request.requirement
        if isinstance(requirement.get("error"), str):
            return failure_facts(FORMAT, requirement, requirement["error"])
        keys, key_errors = load_keys(request)
        if key_errors or not keys:
            return failure_facts(FORMAT, requirement, "; ".join(key_errors) or "the requirement names no key")
        store = requirement.get("store") or {}
        base = store.get("url") if isinstance(store, Mapping) else None
        if not isinstance(base, str) or not base.startswith(("https://", "http://")):
            return failure_facts(
                FORMAT,
                requirement,
                "policy.simple.storeURL is not set: Ostiary reads simple signatures from a lookaside store "
                "only (the registry signature extension API is not supported)",
            )
        try:
            material = fingerprint(k.fingerprint for k in keys)
            digest, key, cached = self.cache.lookup(self.reader, request, deadline, FORMAT, material)
            if cached is not None:
                return cached
            expiries: list[int] = []
            signatures = self._signatures(request, base.rstrip("/"), digest, keys, deadline, expiries)
        except ReadError as exc:
            return failure_facts(
                FORMAT, requirement, str(exc), unavailable=isinstance(exc, RegistryUnavailable)
            )
        facts = verified_facts(FORMAT, requirement, digest, [k.fingerprint for k in keys], signatures)
        # a verified signature that expires ends the entry's life with it (openpgp.verify_message)
        return self.cache.put(key, facts, valid_until=min(expiries) if expiries else None)

    def discover(
        self, image: ImageRef, store_url: str, credentials: tuple[tuple[str, str], ...], deadline: float
    ) -> tuple[str, int]:
        """Every read `verify` makes for `image` under `store_url`, with no key (for `ostiary trust
        capture`): the digest and how many signature files were found. Raises ReadError."""
        request = SignatureRequest(image=image, requirement={"format": FORMAT}, credentials=credentials)
        digest = no_cache().resolve(self.reader, request, deadline)
        return digest, len(self._signatures(request, store_url.rstrip("/"), digest, [], deadline))

    def _signatures(
        self,
        request: SignatureRequest,
        base: str,
        digest: str,
        keys: list[openpgp.PublicKey],
        deadline: float,
        expiries: list[int] | None = None,
    ) -> list[dict]:
        """The signatures in the store for `digest`, each verified; the expiry times (epoch seconds) of
        those that verified are appended to `expiries`."""
        found = []
        prefix = f"{base}/{request.image.repository}@{digest.replace(':', '=', 1)}"
        for n in range(1, MAX_SIGNATURES + 2):
            url = f"{prefix}/signature-{n}"
            if n > MAX_SIGNATURES:
                found.append(
                    signature_entry(
                        url, error=f"more than {MAX_SIGNATURES} signatures; the rest are not read"
                    )
                )
                break
            answer = self.reader.store_get(
                url, deadline, request.store_credentials, limit=MAX_SIGNATURE_BYTES
            )
            if answer.status == 404:
                break
            if answer.status != 200:
                raise read_failure("signature store", answer.status, url)
            found.append(self._one(url, answer.body, keys, expiries))
        return found

    def _one(self, url: str, body: bytes, keys: list[openpgp.PublicKey], expiries: list[int] | None) -> dict:
        try:
            message = openpgp.verify_message(body, keys, int(self.clock()))
        except openpgp.OpenPGPError as exc:
            return signature_entry(url, error=f"OpenPGP: {exc}")
        if message.expires is not None and expiries is not None:
            expiries.append(message.expires)
        try:
            reference, signed = parse_claim(message.payload)
        except PayloadError as exc:
            return signature_entry(url, key_id=message.signer.fingerprint, error=str(exc))
        return signature_entry(url, key_id=message.signer.fingerprint, identity=reference, digest=signed)
