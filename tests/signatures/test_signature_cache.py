"""The cache of verified signature facts (app/signatures/cache.py) from the attacker's side, with the real
verifiers reading Debian's docker-registry and the HTTPS lookaside store of the signing world, on an
injected clock:

- a key removed from or replaced in the Secret: the next verification reads and verifies again, and
  proves nothing for the old key (cosign, simple signing);
- a success for key A never answers a requirement of key B, even under the same Secret name;
- a keyless success under one trusted root never answers under another;
- a tag moved to an unsigned digest: within the TTL the tag keeps resolving to the signed digest (what
  the Pod is pinned to), after it the unsigned digest is found and proves nothing;
- an entry lives no longer than the TTL, nor than the OpenPGP expiry of a signature it proved;
- Notation: a second gather within the TTL reads nothing; another trust store (another root, the same
  root in another store, a TSA store added), level or trusted identities is verified again; an entry
  is not served to a verifier's clock past a certificate's notAfter or a signature's expiry, nor to a
  clock (an offline run's --at) before a certificate was valid.

`test_the_saving` prints what the cache saves for a Deployment of many Pods (reads and time), a
measurement, not an assertion on time.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from app.images import parse_image
from app.notary.client import NotaryClient
from app.signatures import keyless
from app.signatures.cache import SignatureCache
from app.signatures.cosign import CosignVerifier
from app.signatures.notation import NotationVerifier
from app.signatures.port import NOTATION_STORE_KEYS, SignatureRequest
from app.signatures.registry import RegistryReader
from app.signatures.service import SignatureService
from app.signatures.simple import SimpleVerifier
from tests.support import cosign_signing as cs
from tests.support import notation_signing as ns
from tests.support.keyless_signing import TestSigstore
from tests.support.simple_signing import SigningWorld

TTL = 60.0
KEY_REQUIREMENT = {"format": "cosign", "index": 0, "type": "key", "error": None, "secrets": ["app/k"]}
ISSUER = "https://issuer.ostiary.test"
SUBJECT = "release@example.com"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingReader(RegistryReader):
    """The real reader, counting the GETs it sends (registry and store)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gets = 0

    def _get(self, url, **kwargs):  # type: ignore[no-untyped-def, override]
        self.gets += 1
        return super()._get(url, **kwargs)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with SigningWorld(tmp_path_factory.mktemp("signature-cache") / "w") as w:
        w.push = cs.Pusher(w.registry_url)  # type: ignore[attr-defined]  # one, so every image is new
        yield w


def reader(w: SigningWorld) -> CountingReader:
    return CountingReader(NotaryClient(ca_file=w.ca_file), endpoints={w.registry_host: w.registry_url})


def proves(facts: dict) -> bool:
    """What the Rego library requires of a key requirement: a signature, by a key of the requirement,
    of the digest the reference resolves to."""
    return facts["verified"] is True and any(
        s["error"] is None and s["key_id"] in facts["keys"] and s["digest"] == facts["digest"]
        for s in facts["signatures"]
    )


def cosign_request(w: SigningWorld, repo: str, *keys, tag: str = "v1") -> SignatureRequest:
    return SignatureRequest(
        image=parse_image(f"{w.registry_host}/{repo}:{tag}"),
        requirement=KEY_REQUIREMENT,
        keys=tuple(("app/k", cs.public_pem(k).encode()) for k in keys),
    )


def deadline() -> float:
    return time.monotonic() + 30


def signed_image(w: SigningWorld, repo: str, key, tag: str = "v1") -> str:
    push = w.push
    digest = push.image(repo, tag)
    data = cs.payload(f"{w.registry_host}/{repo}", digest)
    push.legacy_signature(repo, digest, [cs.legacy_layer(key, data)])
    return digest


# ---- cosign, key-based ----------------------------------------------------------------------------------


def test_a_key_replaced_in_the_secret_is_verified_again_and_proves_nothing(world):
    a, b = cs.new_key(), cs.new_key()
    digest = signed_image(world, "cache/replaced", a)
    clock = Clock()
    cache = SignatureCache(TTL, monotonic=clock)
    verifier = CosignVerifier(reader(world), cache=cache)
    first = verifier.verify(cosign_request(world, "cache/replaced", a), deadline())
    assert proves(first) and first["digest"] == digest
    again = verifier.verify(cosign_request(world, "cache/replaced", a), deadline())
    assert again == first and cache.stats()["hits"] == 1
    # the Secret `app/k` now holds key B only (same requirement, same Secret name): verified again
    replaced = verifier.verify(cosign_request(world, "cache/replaced", b), deadline())
    assert not proves(replaced), replaced
    assert "does not verify with any key" in replaced["signatures"][0]["error"]
    assert cache.stats()["hits"] == 1


def test_a_key_removed_from_the_secret_is_verified_again(world):
    a, b = cs.new_key(), cs.new_key()
    signed_image(world, "cache/removed", a)
    cache = SignatureCache(TTL, monotonic=Clock())
    verifier = CosignVerifier(reader(world), cache=cache)
    assert proves(verifier.verify(cosign_request(world, "cache/removed", a, b), deadline()))
    removed = verifier.verify(cosign_request(world, "cache/removed", b), deadline())
    assert not proves(removed), removed
    assert cache.stats()["hits"] == 0


def test_a_success_for_key_a_never_answers_a_requirement_of_key_b(world):
    a, b = cs.new_key(), cs.new_key()
    signed_image(world, "cache/a-only", a)
    cache = SignatureCache(TTL, monotonic=Clock())
    verifier = CosignVerifier(reader(world), cache=cache)
    assert proves(verifier.verify(cosign_request(world, "cache/a-only", a), deadline()))
    for _ in range(2):  # neither the first nor a repeated requirement of B is A's success
        facts = verifier.verify(cosign_request(world, "cache/a-only", b), deadline())
        assert not proves(facts), facts
    # another requirement (another Secret) with key B: not A's success either
    other = SignatureRequest(
        image=parse_image(f"{world.registry_host}/cache/a-only:v1"),
        requirement={**KEY_REQUIREMENT, "secrets": ["app/b"]},
        keys=(("app/b", cs.public_pem(b).encode()),),
    )
    assert not proves(verifier.verify(other, deadline()))


def test_a_tag_moved_to_an_unsigned_digest_is_denied_after_the_ttl(world):
    key = cs.new_key()
    signed = signed_image(world, "cache/moved", key)
    clock = Clock()
    cache = SignatureCache(TTL, monotonic=clock)
    verifier = CosignVerifier(reader(world), cache=cache)
    assert verifier.verify(cosign_request(world, "cache/moved", key), deadline())["digest"] == signed
    unsigned = world.push.image("cache/moved", "v1")  # the tag moves
    # within the TTL the tag still resolves to the signed digest: the Pod is pinned there, never to
    # the unsigned one
    within = verifier.verify(cosign_request(world, "cache/moved", key), deadline())
    assert within["digest"] == signed and proves(within)
    clock.now += TTL
    after = verifier.verify(cosign_request(world, "cache/moved", key), deadline())
    assert after["digest"] == unsigned
    assert not proves(after) and after["signatures"] == [], after


def test_an_entry_is_verified_again_after_the_ttl(world):
    key = cs.new_key()
    digest = signed_image(world, "cache/ttl", key)
    clock = Clock()
    cache = SignatureCache(TTL, monotonic=clock)
    r = reader(world)
    verifier = CosignVerifier(r, cache=cache)
    ref = SignatureRequest(
        image=parse_image(f"{world.registry_host}/cache/ttl@{digest}"),
        requirement=KEY_REQUIREMENT,
        keys=(("app/k", cs.public_pem(key).encode()),),
    )
    assert proves(verifier.verify(ref, deadline()))
    reads = r.gets
    clock.now += TTL - 1
    assert proves(verifier.verify(ref, deadline())) and r.gets == reads  # from the cache
    clock.now += 1
    assert proves(verifier.verify(ref, deadline())) and r.gets > reads  # read and verified again
    assert cache.stats()["hits"] == 1 and cache.stats()["misses"] == 2


def test_a_failed_read_is_never_kept(world):
    key = cs.new_key()
    cache = SignatureCache(TTL, monotonic=Clock())
    verifier = CosignVerifier(reader(world), cache=cache)
    missing = verifier.verify(cosign_request(world, "cache/not-there", key), deadline())
    assert missing["verified"] is False and "has no manifest" in missing["error"]
    assert cache.stats()["entries"] == 0 and cache.stats()["tags"] == 0


# ---- keyless ------------------------------------------------------------------------------------------


def test_a_keyless_success_under_one_trusted_root_never_answers_under_another(world):
    sigstore, other = TestSigstore(), TestSigstore("other")
    push = world.push
    digest = push.image("cache/keyless", "v1")
    push.bundle_signature(
        "cache/keyless", digest, sigstore.bundle(cs.statement(digest), subject=SUBJECT, issuer=ISSUER)
    )
    cache = SignatureCache(TTL, monotonic=Clock())
    r = reader(world)
    trusted = CosignVerifier(
        r, cache=cache, trusted_root=keyless.read_trusted_root(sigstore.trusted_root(), "a")
    )
    elsewhere = CosignVerifier(
        r, cache=cache, trusted_root=keyless.read_trusted_root(other.trusted_root(), "b")
    )
    request = SignatureRequest(
        image=parse_image(f"{world.registry_host}/cache/keyless:v1"),
        requirement={"format": "cosign", "index": 0, "type": "keyless", "error": None,
                     "identities": [{"issuer": ISSUER, "subject": SUBJECT}]},
    )  # fmt: skip
    facts = trusted.verify(request, deadline())
    (signature,) = facts["signatures"]
    assert signature["error"] is None and signature["digest"] == digest, facts
    assert trusted.verify(request, deadline()) == facts and cache.stats()["hits"] == 1
    refused = elsewhere.verify(request, deadline())
    (signature,) = refused["signatures"]
    assert "is not in the trusted root" in signature["error"], refused
    assert cache.stats()["hits"] == 1


# ---- simple signing -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpg_keys(world):
    a, b = world.gpg_key("cache-a"), world.gpg_key("cache-b")
    return {"a": (a, world.public_key(a)), "b": (b, world.public_key(b))}


def simple_request(w: SigningWorld, repo: str, armoured: str) -> SignatureRequest:
    return SignatureRequest(
        image=parse_image(f"{w.registry_host}/{repo}:v1"),
        requirement={"format": "simple", "index": 0, "type": "signedBy", "error": None,
                     "store": {"url": w.store_url, "secret": None}},
        keys=(("app/k", armoured.encode()),),
    )  # fmt: skip


def simple_payload(reference: str, digest: str) -> bytes:
    return (
        b'{"critical":{"identity":{"docker-reference":"%s"},"image":{"docker-manifest-digest":"%s"},'
        b'"type":"atomic container signature"},"optional":null}' % (reference.encode(), digest.encode())
    )


def test_simple_a_key_replaced_in_the_secret_is_verified_again(world, gpg_keys):
    (fpr_a, pub_a), (_, pub_b) = gpg_keys["a"], gpg_keys["b"]
    digest = world.push.image("cache/simple", "v1")
    payload = simple_payload(f"{world.registry_host}/cache/simple:v1", digest)
    world.put_signature("cache/simple", digest, 1, world.sign_payload(fpr_a, payload))
    cache = SignatureCache(TTL, monotonic=Clock())
    verifier = SimpleVerifier(reader(world), cache=cache)
    first = verifier.verify(simple_request(world, "cache/simple", pub_a), deadline())
    assert proves(first), first
    assert verifier.verify(simple_request(world, "cache/simple", pub_a), deadline()) == first
    assert cache.stats()["hits"] == 1
    replaced = verifier.verify(simple_request(world, "cache/simple", pub_b), deadline())
    assert not proves(replaced), replaced
    assert "does not verify with any trusted key" in replaced["signatures"][0]["error"]


def test_simple_an_entry_ends_when_the_signature_it_proved_expires(world, gpg_keys):
    fpr_a, pub_a = gpg_keys["a"]
    digest = world.push.image("cache/expiring", "v1")
    payload = simple_payload(f"{world.registry_host}/cache/expiring:v1", digest)
    signed = world.gpg("--local-user", fpr_a, "--default-sig-expire", "1d", "--sign", data=payload)
    world.put_signature("cache/expiring", digest, 1, signed)
    wall = Clock()
    wall.now = time.time()
    cache = SignatureCache(TTL, monotonic=Clock(), clock=wall)
    verifier = SimpleVerifier(reader(world), cache=cache, clock=wall)
    assert proves(verifier.verify(simple_request(world, "cache/expiring", pub_a), deadline()))
    assert proves(verifier.verify(simple_request(world, "cache/expiring", pub_a), deadline()))
    assert cache.stats()["hits"] == 1
    wall.now += 2 * 86400  # the monotonic clock has not moved: the TTL has not run out, the signature has
    expired = verifier.verify(simple_request(world, "cache/expiring", pub_a), deadline())
    assert not proves(expired), expired
    assert "has expired" in expired["signatures"][0]["error"]
    assert cache.stats()["hits"] == 1


# ---- what it saves ------------------------------------------------------------------------------------


def test_the_saving(world):
    """A Deployment of 50 replicas (one admission per Pod, as a ReplicaSet makes them): reads and time
    without the cache and with it. Printed (pytest -s), not asserted on time."""
    key = cs.new_key()
    signed_image(world, "cache/saving", key)
    pods = 50
    results = {}
    for name, cache in (("no cache", SignatureCache(0)), ("cache", SignatureCache(TTL))):
        r = reader(world)
        verifier = CosignVerifier(r, cache=cache)
        started = time.perf_counter()
        for _ in range(pods):
            assert proves(verifier.verify(cosign_request(world, "cache/saving", key), deadline()))
        results[name] = (r.gets, time.perf_counter() - started)
    print()
    for name, (gets, seconds) in results.items():
        print(
            f"signature cache, {pods} admissions of one cosign-signed tag, {name}: {gets} registry reads, {seconds * 1000:.0f} ms"
        )
    assert results["cache"][0] < results["no cache"][0] / 10


# ---- through `ostiary serve`: the next admission after a Secret change --------------------------------


def test_serve_a_key_replaced_in_the_secret_denies_the_next_admission(world, tmp_path):
    """`ostiary serve --policy-dir` (real OPA) with a cache TTL of 10 minutes: the key Secret is replaced
    in the policy directory; once Ostiary has read the new Secret, the next admission verifies again
    and is denied (no cached success of the old key answers it)."""
    from tests.signatures.test_cosign_admit import cosign_policy, secret
    from tests.support.serve import deployment_review, message, patch_of
    from tests.support.simple_signing import serve_policies

    a, b = cs.new_key(), cs.new_key()
    digest = signed_image(world, "cache/serve", a)
    host = world.registry_host
    docs = [secret("k", "team", key=cs.public_pem(a)), cosign_policy("team", f"{host}/cache/*", "k")]
    extra = ("--registry-endpoint", f"{host}={world.registry_url}", "--trust-cache-ttl", "600")
    with serve_policies(tmp_path, docs, *extra) as server:

        def admit() -> dict:
            return server.admit(deployment_review(f"{host}/cache/serve:v1", namespace="team"))["response"]

        for _ in range(2):  # the second from the cache
            response = admit()
            assert response["allowed"] is True, message(response)
            assert digest in json.dumps(patch_of(response))  # pinned
        (tmp_path / "policies" / "000-secret.json").write_text(
            json.dumps(secret("k", "team", key=cs.public_pem(b)))
        )
        deadline = time.monotonic() + 60  # the policy directory is read again every 2 s
        while (response := admit())["allowed"] is True and time.monotonic() < deadline:
            time.sleep(0.5)
        assert response["allowed"] is False, "still admitted with the old key's cached success"
        assert "does not verify with any key" in message(response), message(response)


# ---- Notation -----------------------------------------------------------------------------------------

NOTATION_REQUIREMENT = {
    "format": "notation", "index": 0, "type": "signedBy", "key_secret": {"name": "ca", "namespace": "app"},
    "identities": ["*"], "level": "strict", "validations": {}, "stores": ["ca"], "error": None,
}  # fmt: skip


def notation_signed(w: SigningWorld, repo: str, chain: ns.Chain, **envelope) -> str:
    """An image signed with `chain` (JWS, as notation writes it), listed in its fallback tag."""
    push = w.push  # type: ignore[attr-defined]
    digest = push.image(repo, "v1")
    ns.push_signature(push, repo, digest, ns.jws(chain, ns.target(push, repo, digest), **envelope))
    return digest


def notation_request(w: SigningWorld, repo: str, *stores: tuple[str, str], **requirement) -> SignatureRequest:
    """A requirement of the trust store Secret app/ca holding `stores` ((store, PEM), ...)."""
    return SignatureRequest(
        image=parse_image(f"{w.registry_host}/{repo}:v1"),
        requirement={**NOTATION_REQUIREMENT, **requirement},
        keys=tuple((f"app/ca {NOTATION_STORE_KEYS[store]}", pem.encode()) for store, pem in stores),
    )


def notation_proves(facts: dict) -> bool:
    """A signature by a trust anchor of the requirement, of the digest, that passed every validation."""
    return facts["verified"] is True and any(
        s["error"] is None
        and s["key_id"] in facts["keys"]
        and s["digest"] == facts["digest"]
        and not any(s["failures"].values())
        for s in facts["signatures"]
    )


def at(moment: dt.datetime) -> Clock:
    clock = Clock()
    clock.now = moment.timestamp()
    return clock


def test_notation_a_second_gather_within_the_ttl_reads_nothing(world):
    chain = ns.Chain.create()
    digest = notation_signed(world, "cache/notation", chain)
    r = reader(world)
    cache = SignatureCache(TTL, monotonic=Clock())
    service = SignatureService([NotationVerifier(r, cache=cache, clock=at(ns.NOW))])
    try:
        request = notation_request(world, "cache/notation", ("ca", chain.root_pem()))
        (first,) = service.gather([request], deadline())
        assert notation_proves(first) and first["digest"] == digest, first
        reads = r.gets
        (second,) = service.gather([request], deadline())
        assert second == first and r.gets == reads  # no registry read at all
        assert cache.stats()["hits"] == 1 and cache.stats()["stored"] == 1
    finally:
        service.close()


def test_notation_another_trust_store_level_or_identity_is_verified_again(world):
    chain, other = ns.Chain.create(), ns.Chain.create()
    root, tsa = chain.root_pem(), ns.TSA.create().root_pem()
    notation_signed(world, "cache/notation-key", chain)
    r = reader(world)
    cache = SignatureCache(TTL, monotonic=Clock())
    verifier = NotationVerifier(r, cache=cache, clock=at(ns.NOW))

    def verify(*stores: tuple[str, str], **requirement) -> dict:
        return verifier.verify(
            notation_request(world, "cache/notation-key", *stores, **requirement), deadline()
        )

    assert notation_proves(verify(("ca", root)))
    assert notation_proves(verify(("ca", root))) and cache.stats()["hits"] == 1
    # the Secret now holds another root (same Secret, same key): verified again, proves nothing
    replaced = verify(("ca", other.root_pem()))
    assert not notation_proves(replaced), replaced
    assert "does not contain any trusted certificate" in replaced["signatures"][0]["failures"]["authenticity"]
    # the same root, moved to the signingAuthority store: not the ca store's success
    moved = verify(("signingAuthority", root))
    assert not notation_proves(moved), moved
    # a TSA store added, another level, other trusted identities: each verified again (none is a hit)
    for stores, requirement in (
        ((("ca", root), ("tsa", tsa)), {}),
        ((("ca", root),), {"level": "audit"}),
        ((("ca", root),), {"identities": ["x509.subject: C=US, ST=WA, O=Ostiary Made, CN=Made Signer"]}),
    ):
        reads = r.gets
        assert notation_proves(verify(*stores, **requirement))
        assert r.gets > reads, requirement
    assert cache.stats()["hits"] == 1


def test_notation_an_entry_is_not_served_past_the_certificate_not_after(world):
    """The monotonic clock does not move (the TTL never runs out); the verifier's clock passes the
    signing certificate's notAfter: verified again, and the expired certificate proves nothing."""
    root = ns.Chain.create()
    root_pair = (root.root, root.root_key)  # type: ignore[attr-defined]
    not_after = ns.NOW + dt.timedelta(hours=1)
    chain = ns.Chain.create(root=root_pair, not_after=not_after)
    notation_signed(world, "cache/notation-expiring", chain)
    r = reader(world)
    clock = at(ns.NOW)
    verifier = NotationVerifier(r, cache=SignatureCache(TTL, monotonic=Clock()), clock=clock)
    request = notation_request(world, "cache/notation-expiring", ("ca", root.root_pem()))
    assert notation_proves(verifier.verify(request, deadline()))
    clock.now = (not_after - dt.timedelta(minutes=1)).timestamp()
    reads = r.gets
    assert notation_proves(verifier.verify(request, deadline())) and r.gets == reads  # still from the cache
    clock.now = (not_after + dt.timedelta(seconds=1)).timestamp()
    expired = verifier.verify(request, deadline())
    assert r.gets > reads and not notation_proves(expired), expired
    assert "outside certificate" in expired["signatures"][0]["failures"]["authenticTimestamp"], expired


def test_notation_an_entry_is_not_served_past_the_signature_expiry(world):
    chain = ns.Chain.create()
    expiry = ns.NOW + dt.timedelta(minutes=10)
    notation_signed(world, "cache/notation-expiry", chain, expiry=expiry)
    clock = at(ns.NOW)
    verifier = NotationVerifier(reader(world), cache=SignatureCache(TTL, monotonic=Clock()), clock=clock)
    request = notation_request(world, "cache/notation-expiry", ("ca", chain.root_pem()))
    assert notation_proves(verifier.verify(request, deadline()))
    clock.now = (expiry + dt.timedelta(seconds=1)).timestamp()
    expired = verifier.verify(request, deadline())
    assert not notation_proves(expired), expired
    assert "the signature expired" in expired["signatures"][0]["failures"]["expiry"]


def test_notation_a_result_of_one_time_is_not_served_to_a_run_at_another(world):
    """Two verifiers on one cache, their clocks at different times (as offline runs with --at): a
    success at a time inside the certificate's validity answers neither a time before the certificate
    was valid nor one after it expired. (Offline runs have caches of their own, runtime.py; this holds
    even if one were shared.)"""
    root = ns.Chain.create()
    root_pair = (root.root, root.root_key)  # type: ignore[attr-defined]
    not_before, not_after = ns.NOW - dt.timedelta(hours=2), ns.NOW + dt.timedelta(hours=2)
    chain = ns.Chain.create(root=root_pair, not_before=not_before, not_after=not_after)
    notation_signed(world, "cache/notation-times", chain, signing_time=ns.NOW - dt.timedelta(hours=1))
    cache = SignatureCache(TTL, monotonic=Clock())
    r = reader(world)
    request = notation_request(world, "cache/notation-times", ("ca", root.root_pem()))

    def verify_at(moment: dt.datetime) -> dict:
        return NotationVerifier(r, cache=cache, clock=at(moment)).verify(request, deadline())

    assert notation_proves(verify_at(ns.NOW))
    for moment in (not_before - dt.timedelta(minutes=1), not_after + dt.timedelta(minutes=1)):
        reads = r.gets
        facts = verify_at(moment)
        assert r.gets > reads and not notation_proves(facts), (moment, facts)
    assert cache.stats()["hits"] == 0
