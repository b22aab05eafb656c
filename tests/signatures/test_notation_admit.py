"""Notation signatures end to end: `ostiary serve --policy-dir` (a real subprocess with its local OPA)
admits or denies Deployments through POST /admit, against Debian's docker-registry (no referrers API:
the fallback tag `sha256-<hex>`) and go-containerregistry's registry with the referrers API
(tools/refreg).

Two sources of signatures:
- the captured fixtures (../shared/fixtures/signatures, made by notation v1.3.2, JWS and COSE),
  replayed into both registries; every strict Notation verdict of expected.json must be Ostiary's.
  The Notation trust policy of each case becomes a `policy.notation` (its trust store's root
  certificate in the CA Secret, its trustedIdentities as they are). The two `trusted-permissive`
  cases are not replayed: Ostiary implements the strict level only, and a policy asking for
  permissive is refused (test_permissive_level_is_refused);
- signatures made now in Python in notation's shapes (tests/support/notation_signing.py), with the
  hostile variants: a forged root with the trusted root's name, a tampered payload, an unknown
  critical header, a verification plugin, a leaf without codeSigning or that is a CA, an expired
  signature, a size mismatch, an algorithm not matching the key, a tenant's CA Secret.

Each case has its own namespace with an ImagePolicy, so one server carries every policy at once.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import time
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.signatures.test_cosign_admit import admit, pinned_to, secret
from tests.signatures.test_cosign_referrers import _refreg
from tests.support import cosign_signing as cs
from tests.support import notation_signing as ns
from tests.support.procs import die_with_parent
from tests.support.serve import message, stop
from tests.support.simple_signing import FIXTURES, SigningWorld, serve_policies
from tests.support.world import free_port

HOST = "registry.test:5000"
REPOS = ("ostiary/notation-jws", "ostiary/notation-cose", "ostiary/notation-expiry")
STORES = {"ca:ostiary-test": "trusted-root.crt", "ca:ostiary-other": "other-root.crt"}
LABEL = "notation trust policy"


def _cases(registry: str) -> list[dict]:
    cases = json.loads((FIXTURES / "expected.json").read_text())["cases"]
    return [c for c in cases if c["format"].startswith("notation") and c["registry"] == registry]


def _trust_policy(case: dict) -> dict:
    name = Path(case["settings"]["trust_policy"]).name
    (policy,) = json.loads((FIXTURES / "policies/notation" / name).read_text())["trustPolicies"]
    return policy


def notation_policy(namespace: str, pattern: str, ca_secret: str, identities: list[str], **extra) -> dict:
    return {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ImagePolicy",
        "metadata": {"name": "signed", "namespace": namespace},
        "spec": {
            "repositories": [
                {
                    "name": pattern,
                    "policy": {"notation": {"caSecret": ca_secret, "trustedIdentities": identities, **extra}},
                }
            ]
        },
    }


def _fixture_documents(cases: list[dict]) -> list[dict]:
    docs = []
    for i, case in enumerate(cases):
        policy = _trust_policy(case)
        (store,) = policy["trustStores"]
        pem = (FIXTURES / "keys/public/notation" / STORES[store]).read_text()
        docs += [
            secret("ca", f"case-{i:02d}", **{"ca.crt": pem}),
            notation_policy(
                f"case-{i:02d}",
                f"{HOST}/*",
                "ca",
                policy["trustedIdentities"],
                signatureVerification=policy["signatureVerification"],
            ),
        ]
    return docs


def _check_case(ostiary, case: dict, index: int) -> None:
    response = admit(ostiary, case["reference"], f"case-{index:02d}")
    name = case["reference"].split("@")[0]
    if case["verdict"] == "accept":
        assert response["allowed"] is True, message(response)
        if case["settings"]["trust_policy"].endswith("permissive.json"):  # what notation only logs, warned
            assert any("only logged" in w for w in response.get("warnings") or []), response
        if "@" not in case["reference"]:
            assert pinned_to(response) == f"{name}@{case['resolved_digest']}"
    else:
        assert response["allowed"] is False, (
            f"{case['id']} was admitted; notation said: {case['tool_output']}"
        )
        assert LABEL in message(response), message(response)


# ---- signatures made now ------------------------------------------------------------------------------


class Made:
    """Images and signatures made now, in repositories made/* of the test registry."""

    def __init__(self, registry_url: str, host: str):
        push = cs.Pusher(registry_url)
        self.reg = host
        self.chain = ns.Chain.create("rsa2048")
        root = (self.chain.root, self.chain.root_key)  # type: ignore[attr-defined]
        self.digests: dict[str, str] = {}

        def sign(repo: str, envelope_of, media_type: str = ns.JWS, chain: ns.Chain | None = None) -> str:
            d = self.digests[repo] = push.image(f"made/{repo}", "v1")
            descriptor = ns.target(push, f"made/{repo}", d)
            ns.push_signature(
                push, f"made/{repo}", d, envelope_of(chain or self.chain, descriptor), media_type
            )
            return d

        sign("good", lambda c, t: ns.jws(c, t))
        sign("cose", lambda c, t: ns.cose(c, t), ns.COSE)
        sign("ec", lambda c, t: ns.jws(c, t), chain=ns.Chain.create("p256", root=root))
        sign("ec-cose", lambda c, t: ns.cose(c, t), ns.COSE, chain=ns.Chain.create("p384", root=root))
        # a root made by the attacker with the trusted root's very name, and a leaf it issued
        forged = ns.Chain.create("rsa2048")
        forged_root_key = forged.root_key  # type: ignore[attr-defined]
        twin = ns.certificate(
            self.chain.root.subject, forged_root_key, self.chain.root.subject, forged_root_key, ca=True
        )
        forged_leaf = ns.certificate(
            self.chain.certs[0].subject, forged.leaf_key, twin.subject, forged_root_key, ca=False
        )
        forged.certs = [forged_leaf, twin]
        sign("forged", lambda c, t: ns.jws(c, t), chain=forged)
        # the trusted key signs one payload, the envelope carries another
        sign("tampered", lambda c, t: ns.jws(c, {**t, "size": t["size"] + 1}, signed_payload=ns.payload(t)))
        sign(
            "crit",
            lambda c, t: ns.jws(
                c, t, extra_protected={"x-unknown": 1}, crit=["io.cncf.notary.signingScheme", "x-unknown"]
            ),
        )
        sign(
            "crit-cose",
            lambda c, t: ns.cose(
                c, t, extra_protected={"x-unknown": 1}, crit=["io.cncf.notary.signingScheme", "x-unknown"]
            ),
            ns.COSE,
        )
        sign(
            "plugin", lambda c, t: ns.jws(c, t, extra_protected={"io.cncf.notary.verificationPlugin": "evil"})
        )
        sign(
            "server-eku",
            lambda c, t: ns.jws(c, t),
            chain=ns.Chain.create(root=root, eku=[ExtendedKeyUsageOID.SERVER_AUTH]),
        )
        sign("ca-leaf", lambda c, t: ns.jws(c, t), chain=ns.Chain.create(root=root, ca=True))
        sign("expired", lambda c, t: ns.jws(c, t, expiry=ns.NOW - dt.timedelta(minutes=1)))
        sign("size", lambda c, t: ns.jws(c, {**t, "size": t["size"] + 1}))
        sign(
            "media",
            lambda c, t: ns.jws(
                c, {**t, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}
            ),
        )
        sign("alg", lambda c, t: ns.jws(c, t, algorithm="PS384"), chain=ns.Chain.create("rsa2048", root=root))
        sign(
            "cert-expired",
            lambda c, t: ns.jws(c, t),
            chain=ns.Chain.create(
                root=root,
                not_before=ns.NOW - dt.timedelta(days=2),
                not_after=ns.NOW + dt.timedelta(seconds=1),
            ),
        )
        # a referrer whose leaf certificate loads but whose subject does not parse (cryptography parses
        # lazily), listed before a valid signature: it must not hide the valid one
        d = self.digests["poisoned"] = push.image("made/poisoned", "v1")
        descriptor = ns.target(push, "made/poisoned", d)
        poisoned = json.loads(ns.jws(self.chain, descriptor))
        der = bytearray(self.chain.certs[0].public_bytes(serialization.Encoding.DER))
        der[der.rfind(b"Made Signer")] = 0xFF  # invalid UTF-8 in the subject's UTF8String
        poisoned["header"]["x5c"][0] = base64.b64encode(bytes(der)).decode()
        ns.push_signature(push, "made/poisoned", d, json.dumps(poisoned).encode())
        ns.push_signature(push, "made/poisoned", d, ns.jws(self.chain, descriptor))
        # swap: a real signature of `good` presented as another image's (subject re-pointed)
        d = self.digests["swap"] = push.image("made/swap", "v1")
        good = ns.jws(self.chain, ns.target(push, "made/good", self.digests["good"]))
        ns.push_signature(push, "made/swap", d, good)
        # an image with no signature at all (level skip admits it, every other level denies it)
        self.digests["unsigned"] = push.image("made/unsigned", "v1")
        # RFC 3161: a certificate expired since, saved by a timestamp of a trusted TSA from its validity
        self.tsa = ns.TSA.create(not_before=ns.NOW - dt.timedelta(days=10))
        then = ns.NOW - dt.timedelta(hours=12)  # the test root is valid from NOW - 1 day
        lapsed = ns.Chain.create(
            root=root, not_before=ns.NOW - dt.timedelta(hours=20), not_after=ns.NOW - dt.timedelta(hours=1)
        )
        sign(
            "ts-lapsed",
            lambda c, t: ns.jws(c, t, signing_time=then, timestamper=lambda sig: self.tsa.stamp(sig, then)),
            chain=lapsed,
        )
        sign(
            "ts-cose",
            lambda c, t: ns.cose(c, t, timestamper=lambda sig: self.tsa.stamp(sig, ns.NOW)),
            ns.COSE,
        )
        # the same, but the timestamp is of another signature
        sign(
            "ts-other",
            lambda c, t: ns.jws(
                c, t, signing_time=then, timestamper=lambda sig: self.tsa.stamp(b"x" + sig, then)
            ),
            chain=lapsed,
        )
        # notary.x509.signingAuthority: a signing authority's root, an authentic signing time
        self.authority = ns.Chain.create("p256", org="Made Authority")
        sign("authority", lambda c, t: ns.jws(c, t, authority=ns.NOW), chain=self.authority)


def _made_documents(made: Made) -> list[dict]:
    reg, root = made.reg, made.chain.root_pem()
    leaf = "x509.subject: C=US, ST=WA, O=Ostiary Made, CN=Made Signer"
    return [
        secret("ca", "m-any", **{"ca.crt": root}),
        notation_policy("m-any", f"{reg}/made/*", "ca", ["*"]),
        secret("ca", "m-subject", **{"ca.crt": root}),
        notation_policy(
            "m-subject", f"{reg}/made/*", "ca", [leaf], signatureVerification={"level": "strict"}
        ),
        secret("ca", "m-wrong", **{"ca.crt": root}),
        notation_policy(
            "m-wrong", f"{reg}/made/*", "ca", ["x509.subject: C=US, ST=WA, O=Ostiary Made, CN=Other"]
        ),
        # a CA Secret that holds no certificate
        secret("ca", "m-nocert", **{"ca.crt": "not a certificate"}),
        notation_policy("m-nocert", f"{reg}/made/*", "ca", ["*"]),
        # a ClusterImagePolicy whose CA Secret would come from the workload's namespace
        {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ClusterImagePolicy",
            "metadata": {"name": "tenant-cas"},
            "spec": {
                "repositories": [
                    {
                        "name": f"{reg}/made/*",
                        "policy": {
                            "notation": {
                                "caSecret": "ca",
                                "caSecretNamespace": "tenant",
                                "trustedIdentities": ["*"],
                            }
                        },
                    }
                ]
            },
        },
        secret("ca", "tenant", **{"ca.crt": root}),
        # the verification levels
        *[
            doc
            for ns_, verification in LEVELS.items()
            for doc in (
                secret("ca", ns_, **{"ca.crt": root}),
                notation_policy(ns_, f"{reg}/made/*", "ca", ["*"], signatureVerification=verification),
            )
        ],
        {
            **notation_policy("m-skip", f"{reg}/made/*", "ca", ["*"]),
            "spec": {
                "repositories": [
                    {
                        "name": f"{reg}/made/*",
                        "policy": {"notation": {"signatureVerification": {"level": "skip"}}},
                    }
                ]
            },
        },
        # trust stores: ca + tsa, ca alone, signingAuthority
        secret("ca", "m-tsa", **{"ca.crt": root, "tsa.crt": made.tsa.root_pem()}),
        notation_policy("m-tsa", f"{reg}/made/*", "ca", ["*"], trustStores=["ca", "tsa"]),
        secret("ca", "m-tsa-other", **{"ca.crt": root, "tsa.crt": ns.TSA.create().root_pem()}),
        notation_policy("m-tsa-other", f"{reg}/made/*", "ca", ["*"], trustStores=["ca", "tsa"]),
        secret("ca", "m-sa", **{"signingAuthority.crt": made.authority.root_pem()}),
        notation_policy("m-sa", f"{reg}/made/*", "ca", ["*"], trustStores=["signingAuthority"]),
        secret("ca", "m-sa-as-ca", **{"ca.crt": made.authority.root_pem()}),
        notation_policy("m-sa-as-ca", f"{reg}/made/*", "ca", ["*"]),
    ]


LEVELS = {
    "m-strict": {"level": "strict"},
    "m-permissive": {"level": "permissive"},
    "m-audit": {"level": "audit"},
    "m-strict-log-expiry": {"level": "strict", "override": {"expiry": "log"}},
}


# ---- docker-registry (fallback tag) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing(tmp_path_factory):
    with SigningWorld(tmp_path_factory.mktemp("notation") / "w") as w:
        w.replay_fixtures(*REPOS)
        yield w, Made(w.registry_url, w.registry_host)


@pytest.fixture(scope="module")
def ostiary(signing, tmp_path_factory):
    w, made = signing
    with serve_policies(
        tmp_path_factory.mktemp("ostiary-notation"),
        _fixture_documents(_cases("distribution")) + _made_documents(made),
        "--registry-endpoint", f"{HOST}={w.registry_url}",
        "--registry-endpoint", f"{w.registry_host}={w.registry_url}",
    ) as server:  # fmt: skip
        yield server


@pytest.mark.parametrize(
    "index", range(len(_cases("distribution"))), ids=[c["id"] for c in _cases("distribution")]
)
def test_fixture_verdicts_are_the_real_tools(ostiary, index):
    _check_case(ostiary, _cases("distribution")[index], index)


def test_the_permissive_fixture_cases_are_replayed():
    """notation accepts an expired certificate or an expired signature under `permissive`; those two
    captured cases are among the verdicts above (test_fixture_verdicts_are_the_real_tools), with their
    trust policy's level."""
    permissive = [
        c for c in _cases("distribution") if c["settings"]["trust_policy"].endswith("permissive.json")
    ]
    assert len(permissive) == 2 and {c["verdict"] for c in permissive} == {"accept"}


@pytest.mark.parametrize("repo", ["good", "cose", "ec", "ec-cose"])
def test_made_signatures_are_admitted_and_pinned(ostiary, signing, repo):
    _, made = signing
    response = admit(ostiary, f"{made.reg}/made/{repo}:v1", "m-any")
    assert response["allowed"] is True, message(response)
    assert pinned_to(response) == f"{made.reg}/made/{repo}:v1@{made.digests[repo]}"


def test_a_malformed_certificate_does_not_hide_a_valid_signature(ostiary, signing):
    _, made = signing
    response = admit(ostiary, f"{made.reg}/made/poisoned:v1", "m-any")
    assert response["allowed"] is True, message(response)
    assert pinned_to(response) == f"{made.reg}/made/poisoned:v1@{made.digests['poisoned']}"


def test_trusted_subject_is_matched_attribute_by_attribute(ostiary, signing):
    _, made = signing
    assert admit(ostiary, f"{made.reg}/made/good:v1", "m-subject")["allowed"] is True
    response = admit(ostiary, f"{made.reg}/made/good:v1", "m-wrong")
    assert response["allowed"] is False
    assert "does not match the trusted identities" in message(response), message(response)


HOSTILE = {
    "forged": "does not contain any trusted certificate",
    "tampered": "does not verify with the signing certificate's key",
    "crit": "critical header 'x-unknown' is not understood",
    "crit-cose": "critical header 'x-unknown' is not understood",
    "plugin": "verification plugin",
    "server-eku": "lacks codeSigning",
    "ca-leaf": "is a CA certificate",
    "expired": "the signature expired at",
    "size": "content descriptor mismatch",
    "media": "content descriptor mismatch",
    "alg": "does not match the signing key",
    "swap": "content descriptor mismatch",  # alpha-style swap: a real signature of made/good
}


@pytest.mark.parametrize("repo", sorted(HOSTILE))
def test_hostile_variants_are_denied_with_the_reason(ostiary, signing, repo):
    _, made = signing
    response = admit(ostiary, f"{made.reg}/made/{repo}:v1", "m-any")
    assert response["allowed"] is False, f"made/{repo} was admitted"
    assert LABEL in message(response) and HOSTILE[repo] in message(response), message(response)


def test_certificate_expired_since_signing_is_denied(ostiary, signing):
    """Valid at the signing time, expired now, no RFC 3161 timestamp: denied (notation's rule)."""
    _, made = signing
    time.sleep(max(0.0, (ns.NOW + dt.timedelta(seconds=2) - dt.datetime.now(dt.UTC)).total_seconds()))
    response = admit(ostiary, f"{made.reg}/made/cert-expired:v1", "m-any")
    assert response["allowed"] is False
    assert "verification time" in message(response), message(response)


def test_unusable_ca_secret_and_tenant_namespace_are_denied(ostiary, signing):
    _, made = signing
    response = admit(ostiary, f"{made.reg}/made/good:v1", "m-nocert")
    assert response["allowed"] is False and "no PEM CERTIFICATE block" in message(response), message(response)
    response = admit(ostiary, f"{made.reg}/made/good:v1", "tenant")
    assert response["allowed"] is False
    assert "workload's own namespace" in message(response), message(response)


# ---- the registry with the referrers API ------------------------------------------------------------


@pytest.fixture(scope="module")
def refreg(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refreg-notation")
    port = free_port()
    with open(tmp / "refreg.log", "ab") as log:
        proc = subprocess.Popen(
            [_refreg(), f"127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if requests.get(f"{url}/v2/", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (
                "refreg did not start: " + (tmp / "refreg.log").read_text()[-500:]
            )
            time.sleep(0.1)
        done = subprocess.run(
            [
                "python3", str(FIXTURES / "replay.py"), url, "--capture", "referrers-api",
                "--repo", "ostiary/notation-jws", "--repo", "ostiary/notation-cose",
            ],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"replay.py failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        push = cs.Pusher(url)
        chain = ns.Chain.create("p256")
        d = push.image("made/api", "v1")
        ns.push_signature(push, "made/api", d, ns.jws(chain, ns.target(push, "made/api", d)), fallback=False)
        yield url, f"127.0.0.1:{port}", chain, d
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def ostiary_api(refreg, tmp_path_factory):
    url, host, chain, _ = refreg
    docs = _fixture_documents(_cases("referrers-api"))
    docs += [
        secret("ca", "m-api", **{"ca.crt": chain.root_pem()}),
        notation_policy("m-api", f"{host}/made/*", "ca", ["*"]),
    ]
    with serve_policies(
        tmp_path_factory.mktemp("ostiary-notation-api"),
        docs,
        "--registry-endpoint", f"{HOST}={url}",
        "--registry-endpoint", f"{host}={url}",
    ) as server:  # fmt: skip
        yield server


@pytest.mark.parametrize(
    "index", range(len(_cases("referrers-api"))), ids=[c["id"] for c in _cases("referrers-api")]
)
def test_fixture_verdicts_through_the_referrers_api(ostiary_api, index):
    _check_case(ostiary_api, _cases("referrers-api")[index], index)


def test_signature_listed_only_by_the_referrers_api_is_admitted(ostiary_api, refreg):
    url, host, _, digest = refreg
    assert (
        requests.get(f"{url}/v2/made/api/manifests/{digest.replace(':', '-')}", timeout=5).status_code == 404
    )
    response = admit(ostiary_api, f"{host}/made/api:v1", "m-api")
    assert response["allowed"] is True, message(response)
    assert pinned_to(response) == f"{host}/made/api:v1@{digest}"


# ---- verification levels (Notation's trust policy table) --------------------------------------------------

# (namespace, image) -> allowed, a text of the denial or the warning
LEVEL_CASES = {
    # an untrusted chain (a forged root): authenticity, enforced by strict and permissive, logged by audit
    ("m-strict", "forged"): (
        False,
        "authenticity: the signature's certificate chain does not contain any trusted",
    ),
    ("m-permissive", "forged"): (False, "does not contain any trusted certificate"),
    ("m-audit", "forged"): (True, "authenticity failed and is only logged at this level"),
    # a signing certificate expired since signing, no timestamp: the authentic timestamp validation
    ("m-strict", "cert-expired"): (False, "authenticTimestamp: verification time"),
    ("m-permissive", "cert-expired"): (True, "authenticTimestamp failed and is only logged"),
    ("m-audit", "cert-expired"): (True, "authenticTimestamp failed and is only logged"),
    # an expired signature: expiry; strict with the override expiry: log admits it too
    ("m-strict", "expired"): (False, "expiry: the signature expired at"),
    ("m-permissive", "expired"): (True, "expiry failed and is only logged"),
    ("m-strict-log-expiry", "expired"): (True, "expiry failed and is only logged"),
    ("m-strict-log-expiry", "cert-expired"): (False, "verification time"),
    # integrity is enforced at every level; no signature is a denial at every level but skip
    ("m-audit", "tampered"): (False, "does not verify with the signing certificate's key"),
    ("m-audit", "swap"): (False, "content descriptor mismatch"),
    ("m-audit", "unsigned"): (False, "no signature found"),
    ("m-strict", "unsigned"): (False, "no signature found"),
    ("m-skip", "unsigned"): (True, None),
    ("m-skip", "tampered"): (True, None),
    # a clean signature: admitted with no warning at every level
    ("m-audit", "good"): (True, None),
    ("m-permissive", "good"): (True, None),
    # RFC 3161 timestamps: a certificate expired since signing, saved by a trusted TSA's timestamp
    ("m-tsa", "ts-lapsed"): (True, None),
    ("m-tsa", "ts-cose"): (True, None),
    ("m-strict", "ts-lapsed"): (False, "verification time"),  # no TSA store: the timestamp is not read
    ("m-tsa-other", "ts-lapsed"): (False, "does not reach a trusted TSA certificate"),
    ("m-tsa", "ts-other"): (False, "the timestamp is not over this signature"),
    # notary.x509.signingAuthority: trusted by a signingAuthority store only
    ("m-sa", "authority"): (True, None),
    ("m-sa-as-ca", "authority"): (
        False,
        "of the signingAuthority trust store, as its signing scheme notary.x509.signingAuthority",
    ),
    ("m-sa", "good"): (False, "of the ca trust store, as its signing scheme notary.x509 requires"),
}


@pytest.mark.parametrize("case", sorted(LEVEL_CASES), ids=lambda c: f"{c[0]}-{c[1]}")
def test_verification_levels_enforce_or_log_as_notation(ostiary, signing, case):
    namespace, repo = case
    allowed, text = LEVEL_CASES[case]
    _, made = signing
    if repo == "cert-expired":  # its certificate expires a second after NOW
        time.sleep(max(0.0, (ns.NOW + dt.timedelta(seconds=2) - dt.datetime.now(dt.UTC)).total_seconds()))
    response = admit(ostiary, f"{made.reg}/made/{repo}:v1", namespace)
    warnings = response.get("warnings") or []
    assert response["allowed"] is allowed, message(response)
    if not allowed:
        assert LABEL in message(response) and text in message(response), message(response)
    elif text is None:
        assert not [w for w in warnings if "notation" in w], warnings
    else:
        assert any(text in w and "notation trust policy (level" in w for w in warnings), warnings
    if allowed and namespace != "m-skip":
        assert pinned_to(response) == f"{made.reg}/made/{repo}:v1@{made.digests[repo]}"
    if namespace == "m-skip":
        assert pinned_to(response) is None  # nothing verified, nothing pinned
