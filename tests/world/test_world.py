"""The test world is real: trust data served by a running notary-server verifies, the registry serves
the pushed manifests, and the world starts fast and leaves nothing behind.

The checks here are written independently of app/notary (a small verifier of their own), so a bug in
the world and a bug in Ostiary's verifier cannot hide each other.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.support.world import MANIFEST_V2, NotaryWorld, canonical_json, tuf_key_id

pytestmark = pytest.mark.world

SIGNER_IMAGES = ("signer-pem", "signer-cert")


# ---------------------------------------------------------------------- a tiny independent TUF check


def fetch(scn, key: str, role: str) -> requests.Response:
    img = scn[key]
    return requests.get(
        f"{img.notary_url}/v2/{img.gun}/_trust/tuf/{role}.json", verify=img.ca_file, timeout=10
    )


def load(scn, key: str, role: str) -> tuple[dict, bytes]:
    r = fetch(scn, key, role)
    assert r.status_code == 200, f"{key} {role}: HTTP {r.status_code} {r.text[:200]}"
    return r.json(), r.content


def public_key_of(key: dict):
    keytype, pub = key["keytype"], base64.b64decode(key["keyval"]["public"])
    if keytype in ("ecdsa-x509", "ed25519-x509", "rsa-x509"):
        return keytype, x509.load_pem_x509_certificate(pub).public_key()
    if keytype == "ed25519":
        return keytype, ed25519.Ed25519PublicKey.from_public_bytes(pub)
    return keytype, serialization.load_der_public_key(pub)


def verify_signatures(doc: dict, keys: dict, keyids: list[str], threshold: int) -> set[str]:
    """Key IDs (of keyids) whose signature over canonical JSON of doc["signed"] verifies."""
    msg = canonical_json(doc["signed"])
    good = set()
    for sig in doc["signatures"]:
        kid = sig["keyid"]
        if kid not in keyids:
            continue
        _, pub = public_key_of(keys[kid])
        raw = base64.b64decode(sig["sig"])
        if sig["method"] == "ecdsa":
            assert len(raw) == 64, "ecdsa signatures are raw r||s"
            der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
            pub.verify(der, msg, ec.ECDSA(hashes.SHA256()))
        elif sig["method"] == "eddsa":
            pub.verify(raw, msg)
        else:
            raise AssertionError(f"unexpected signature method {sig['method']}")
        good.add(kid)
    assert len(good) >= threshold, f"only {len(good)} of {threshold} signatures verified"
    return good


def check_key_ids(keys: dict) -> None:
    for kid, key in keys.items():
        assert tuf_key_id(key["keytype"], key["keyval"]["public"]) == kid


def check_meta(meta: dict, content: bytes) -> None:
    assert meta["length"] == len(content)
    assert base64.b64decode(meta["hashes"]["sha256"]) == hashlib.sha256(content).digest()
    assert base64.b64decode(meta["hashes"]["sha512"]) == hashlib.sha512(content).digest()


def verified_chain(scn, key: str) -> dict:
    """Fetch and verify root -> timestamp -> snapshot -> targets (and delegations) of one image's GUN.
    Returns {role: signed document}."""
    root, _ = load(scn, key, "root")
    rkeys = root["signed"]["keys"]
    check_key_ids(rkeys)
    roles = root["signed"]["roles"]
    verify_signatures(root, rkeys, roles["root"]["keyids"], roles["root"]["threshold"])

    ts, _ = load(scn, key, "timestamp")
    verify_signatures(ts, rkeys, roles["timestamp"]["keyids"], roles["timestamp"]["threshold"])
    snap, snap_bytes = load(scn, key, "snapshot")
    check_meta(ts["signed"]["meta"]["snapshot"], snap_bytes)
    verify_signatures(snap, rkeys, roles["snapshot"]["keyids"], roles["snapshot"]["threshold"])

    out = {"root": root, "timestamp": ts, "snapshot": snap}
    targets, t_bytes = load(scn, key, "targets")
    check_meta(snap["signed"]["meta"]["targets"], t_bytes)
    verify_signatures(targets, rkeys, roles["targets"]["keyids"], roles["targets"]["threshold"])
    out["targets"] = targets
    dele = targets["signed"].get("delegations") or {"keys": {}, "roles": []}
    check_key_ids(dele["keys"])
    for role in dele["roles"]:
        name = role["name"]
        if name not in snap["signed"]["meta"]:
            continue  # a delegation nothing was ever signed into
        doc, raw = load(scn, key, name)
        check_meta(snap["signed"]["meta"][name], raw)
        verify_signatures(doc, dele["keys"], role["keyids"], role["threshold"])
        out[name] = doc
    return out


def target_digest(doc: dict, tag: str) -> str | None:
    t = doc["signed"]["targets"].get(tag)
    if t is None:
        return None
    return "sha256:" + base64.b64decode(t["hashes"]["sha256"]).hex()


# ---------------------------------------------------------------------- the world itself


def test_world_starts_fast(world):
    assert world.world.startup_seconds is not None
    assert world.world.startup_seconds < 10, world.world.startup_seconds
    assert world.build_seconds < 30, world.build_seconds


def test_services_are_healthy_over_tls_and_http(world):
    r = requests.get(f"{world.notary_url}/_notary_server/health", verify=world.ca_file, timeout=5)
    assert r.status_code == 200 and r.json() == {}
    assert world.notary_url.startswith("https://127.0.0.1:")
    r = requests.get(f"http://{world.registry_host}/v2/", timeout=5)
    assert r.status_code == 200
    assert r.headers.get("Docker-Distribution-Api-Version") == "registry/2.0"


def test_tls_needs_the_world_ca(world):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{world.notary_url}/_notary_server/health", timeout=5)


@pytest.mark.parametrize("key", ["signed", "unsigned", "no-trust", "signer-pem", "signer-cert"])
def test_registry_serves_manifest_by_digest(world, key):
    img = world[key]
    r = requests.get(
        f"http://{img.registry}/v2/{img.repo}/manifests/{img.digest}",
        headers={"Accept": MANIFEST_V2},
        timeout=5,
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"] == MANIFEST_V2
    assert "sha256:" + hashlib.sha256(r.content).hexdigest() == img.digest
    assert r.headers["Docker-Content-Digest"] == img.digest
    assert len(r.content) == img.size
    r = requests.head(
        f"http://{img.registry}/v2/{img.repo}/manifests/{img.tag}", headers={"Accept": MANIFEST_V2}, timeout=5
    )
    assert r.headers["Docker-Content-Digest"] == img.digest


def test_pushes_are_deterministic(world):
    again = world.world.push("ostiary/determinism", "v1", seed="signed")
    assert again.digest == world["signed"].digest


@pytest.mark.parametrize("key", ["signed", "unsigned", "signer-pem", "signer-cert"])
def test_trust_data_verifies(world, key):
    chain = verified_chain(world, key)
    ts = chain["timestamp"]
    assert [s["method"] for s in ts["signatures"]] == ["ecdsa"]  # notary-signer, ecdsa: like Docker Hub
    assert [s["method"] for s in chain["snapshot"]["signatures"]] == ["ecdsa"]
    root = chain["root"]["signed"]
    ts_key = root["keys"][root["roles"]["timestamp"]["keyids"][0]]
    assert ts_key["keytype"] == "ecdsa"
    for kid in root["roles"]["root"]["keyids"]:
        rk = root["keys"][kid]
        assert rk["keytype"] == "ecdsa-x509"
        cert = x509.load_pem_x509_certificate(base64.b64decode(rk["keyval"]["public"]))
        cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
        assert cn == world[key].gun


@pytest.mark.parametrize("key", ["signed", "signer-pem", "signer-cert"])
def test_signed_tag_is_in_its_roles(world, key):
    img = world[key]
    chain = verified_chain(world, key)
    assert img.signed_roles
    for role in img.signed_roles:
        assert target_digest(chain[role], img.tag) == img.digest, role
        assert chain[role]["signed"]["targets"][img.tag]["length"] == img.size
    for role in set(chain) - set(img.signed_roles) - {"root", "timestamp", "snapshot"}:
        assert target_digest(chain[role], img.tag) is None, role


def test_unsigned_tag_is_in_no_role(world):
    img = world["unsigned"]
    chain = verified_chain(world, "unsigned")
    assert target_digest(chain["targets"], img.tag) is None
    assert target_digest(chain["targets"], "v0") is not None
    assert set(chain) == {"root", "timestamp", "snapshot", "targets"}


def test_no_trust_repository_is_404(world):
    assert fetch(world, "no-trust", "root").status_code == 404
    assert fetch(world, "no-trust", "timestamp").status_code == 404


@pytest.mark.parametrize("key", ["signed", *SIGNER_IMAGES])
def test_releases_role_in_snapshot(world, key):
    snap, _ = load(world, key, "snapshot")
    assert "targets/releases" in snap["signed"]["meta"]


def test_alice_delegation_is_a_pem_ecdsa_key(world):
    targets, _ = load(world, "signer-pem", "targets")
    dele = targets["signed"]["delegations"]
    roles = {r["name"]: r for r in dele["roles"]}
    assert set(roles) == {"targets/releases", "targets/alice"}
    (kid,) = roles["targets/alice"]["keyids"]
    assert dele["keys"][kid]["keytype"] == "ecdsa"
    assert kid == world.alice.ecdsa_key_id
    assert roles["targets/releases"]["keyids"] == [kid]
    doc, _ = load(world, "signer-pem", "targets/alice")
    assert [s["keyid"] for s in doc["signatures"]] == [kid]


def test_bob_delegation_is_a_certificate(world):
    targets, _ = load(world, "signer-cert", "targets")
    dele = targets["signed"]["delegations"]
    roles = {r["name"]: r for r in dele["roles"]}
    (kid,) = roles["targets/bob"]["keyids"]
    assert dele["keys"][kid]["keytype"] == "ecdsa-x509"
    assert kid == world.bob.x509_key_id != world.bob.ecdsa_key_id
    pem = base64.b64decode(dele["keys"][kid]["keyval"]["public"]).decode()
    assert pem == world.bob.cert_pem


def test_mallory_is_nowhere(world):
    for key in ("signed", *SIGNER_IMAGES):
        targets, _ = load(world, key, "targets")
        assert not world.mallory.key_ids & set(targets["signed"]["delegations"]["keys"])
    assert world.mallory_pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert world.mallory_pem != world.alice_pem


# ---------------------------------------------------------------------- other shapes of world


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def test_local_trust_service_signs_with_ed25519_and_stop_leaves_nothing():
    t0 = time.monotonic()
    with NotaryWorld(trust_service="local") as w:
        started = time.monotonic() - t0
        assert started < 10
        pids = [p.popen.pid for p in w._procs]
        assert len(pids) == 2  # notary-server, docker-registry: no signer
        d = w.push_image("x/y", "v1", seed="local")
        w.sign("x/y", "v1", d, w.size_of(d))
        ts = w.tuf("x/y", "timestamp").json()
        assert [s["method"] for s in ts["signatures"]] == ["eddsa"]
        root = w.tuf("x/y", "root").json()["signed"]
        assert root["keys"][root["roles"]["snapshot"]["keyids"][0]]["keytype"] == "ed25519"
        tmp = w.dir
    assert not any(_alive(p) for p in pids)
    assert not tmp.exists()


def test_remote_world_stop_kills_signer_too():
    w = NotaryWorld().start()
    try:
        names = [p.name for p in w._procs]
        assert sorted(names) == ["docker-registry", "notary-server", "notary-signer"]
        pids = [p.popen.pid for p in w._procs]
    finally:
        w.stop()
    assert not any(_alive(p) for p in pids)


def test_scenario_images_are_distinct(world):
    digests = {img.digest for img in world.images.values()}
    assert len(digests) == len(world.images)
    assert json.dumps(sorted(world.images)) == json.dumps(
        sorted(["signed", "unsigned", "no-trust", "signer-pem", "signer-cert"])
    )


# ---------------------------------------------------------------------- Ostiary's trust facts (app/notary)
#
# TrustService against the real world. Imported inside the fixture so that a broken app/notary fails
# these tests only, never the checks of the world above.


@pytest.fixture(scope="module")
def trust(world):
    from app.notary.service import TrustService

    service = TrustService(ca_file=world.ca_file)
    yield service
    service.close()


def gather(trust, world, refs_and_signers):
    """[(image reference, ((secret, name, pem), ...))] -> facts, one gather under one deadline."""
    from app.images import parse_image
    from app.notary.service import Signer, TrustRequest

    requests_ = [
        TrustRequest(
            image=parse_image(ref),
            server=world.notary_url,
            signers=tuple(Signer(secret=s, name=n, public_key_pem=p) for s, n, p in signers),
        )
        for ref, signers in refs_and_signers
    ]
    return trust.gather(requests_, time.monotonic() + 10.0)


def one(trust, world, ref, signers=()):
    (facts,) = gather(trust, world, [(ref, signers)])
    return facts


@pytest.mark.parametrize("key", ["signed", "signer-pem", "signer-cert"])
def test_facts_signed_tag_is_released_at_the_pushed_digest(trust, world, key):
    img = world[key]
    facts = one(trust, world, img.reference)
    assert facts["verified"] is True, facts["error"]
    assert facts["error"] is None
    assert facts["gun"] == img.gun
    assert facts["tag"] == img.tag and facts["digest"] is None
    assert facts["targets"][img.tag]["released"] == img.digest
    assert facts["targets"][img.tag]["roles"] == {role: img.digest for role in img.signed_roles}
    for role in img.signed_roles:
        assert facts["roles"][role]["signed_by"], role


def test_facts_releases_wins_and_both_roles_are_reported(trust, world):
    img = world["signed"]
    facts = one(trust, world, img.reference)
    assert set(facts["targets"][img.tag]["roles"]) == {"targets", "targets/releases"}
    assert facts["roles"]["targets/releases"]["signed_by"] == [world.releaser.ecdsa_key_id]


def test_facts_unsigned_tag_is_not_released(trust, world):
    img = world["unsigned"]
    facts = one(trust, world, img.reference)
    assert facts["verified"] is True, facts["error"]
    assert facts["targets"][img.tag]["released"] is None
    assert not facts["targets"][img.tag]["roles"]


def test_facts_repository_without_trust_data_is_not_verified(trust, world):
    facts = one(trust, world, world["no-trust"].reference)
    assert facts["verified"] is False
    assert facts["error"]
    assert facts["error_role"] == "root"
    assert facts["targets"] == {} or all(t["released"] is None for t in facts["targets"].values())


def test_facts_signer_alice_pem_key_signed(trust, world):
    img = world["signer-pem"]
    facts = one(trust, world, img.reference, [("alice-key", "alice", world.alice_pem)])
    assert facts["verified"] is True, facts["error"]
    (signer,) = facts["signers"]
    assert signer["name"] == "alice" and signer["secret"] == "alice-key"
    assert signer["role"] == "targets/alice" and signer["error"] is None
    signed_by = set(facts["roles"]["targets/alice"]["signed_by"])
    assert {world.alice.ecdsa_key_id} <= signed_by
    assert set(signer["keyids"]) & signed_by
    assert facts["targets"][img.tag]["roles"]["targets/alice"] == img.digest


def test_facts_wrong_signer_key_matches_nothing(trust, world):
    img = world["signer-pem"]
    facts = one(trust, world, img.reference, [("alice-key", "alice", world.mallory_pem)])
    assert facts["verified"] is True, facts["error"]  # the repository verifies; mallory just did not sign
    (signer,) = facts["signers"]
    signed_by = set(facts["roles"]["targets/alice"]["signed_by"])
    assert not world.mallory.key_ids & signed_by
    assert not set(signer["keyids"]) & signed_by
    assert not set(signer["keyids"]) & set(facts["roles"]["targets/alice"]["keyids"])


def test_facts_signer_bob_certificate(trust, world):
    img = world["signer-cert"]
    for pem in (world.bob.cert_pem, world.bob.public_pem):  # the certificate, or its bare public key
        facts = one(trust, world, img.reference, [("bob-key", "bob", pem)])
        assert facts["verified"] is True, facts["error"]
        (signer,) = facts["signers"]
        signed_by = set(facts["roles"]["targets/bob"]["signed_by"])
        assert world.bob.x509_key_id in signed_by
        assert world.bob.x509_key_id in signer["keyids"], "the key as it appears in the trust data"
        assert signer["error"] is None


def test_facts_signer_not_delegated_in_this_repository(trust, world):
    facts = one(trust, world, world["signed"].reference, [("alice-key", "alice", world.alice_pem)])
    assert facts["verified"] is True, facts["error"]
    assert "targets/alice" not in facts["roles"]
    assert "targets/alice" not in facts["targets"][world["signed"].tag]["roles"]


def test_facts_digest_reference_lists_the_tags_signed_with_it(trust, world):
    img = world["signer-cert"]
    facts = one(trust, world, f"{img.gun}@{img.digest}")
    assert facts["verified"] is True, facts["error"]
    assert facts["tag"] is None and facts["digest"] == img.digest
    assert facts["targets"][img.tag]["released"] == img.digest


def test_facts_whole_scenario_in_one_gather(trust, world):
    keys = ["signed", "unsigned", "no-trust", "signer-pem", "signer-cert"]
    facts = gather(trust, world, [(world[k].reference, ()) for k in keys])  # under one 10 s deadline
    by_key = dict(zip(keys, facts, strict=True))
    for k in keys:
        assert by_key[k]["gun"] == world[k].gun
    assert [by_key[k]["verified"] for k in keys] == [True, True, False, True, True]
    released = {k: by_key[k]["targets"].get("v1", {}).get("released") for k in keys}
    assert released == {
        "signed": world["signed"].digest,
        "unsigned": None,
        "no-trust": None,
        "signer-pem": world["signer-pem"].digest,
        "signer-cert": world["signer-cert"].digest,
    }


def test_facts_from_a_local_ed25519_server():
    """notary-server's in-process trust service signs timestamp and snapshot with eddsa: verified too."""
    from app.images import parse_image
    from app.notary.service import TrustRequest, TrustService

    with NotaryWorld(trust_service="local") as w:
        d = w.push_image("team/app", "v1", seed="local-facts")
        w.sign("team/app", "v1", d, w.size_of(d))
        service = TrustService(ca_file=w.ca_file)
        try:
            (facts,) = service.gather(
                [TrustRequest(image=parse_image(w.image_ref("team/app", "v1")), server=w.notary_url)],
                time.monotonic() + 10,
            )
        finally:
            service.close()
    assert facts["verified"] is True, facts["error"]
    assert facts["targets"]["v1"]["released"] == d


def test_a_port_taken_between_probe_and_bind_is_retried(monkeypatch):
    """free_port() can race with another process; the world then starts again on other ports."""
    import socket

    import tests.support.world as world_module

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        real, calls = world_module.free_port, []

        def racy_free_port():
            calls.append(1)
            return taken if len(calls) <= 2 else real()  # notary-server's and the registry's first ports

        monkeypatch.setattr(world_module, "free_port", racy_free_port)
        with NotaryWorld() as w:
            assert not w.notary_url.endswith(f":{taken}")
            assert not w.registry_host.endswith(f":{taken}")
            assert w.tuf("nothing/here", "root").status_code == 404
            assert requests.get(f"{w.registry_url}/v2/", timeout=5).status_code == 200
        assert len(calls) > 3
