"""Keyless cosign end to end: `ostiary serve --policy-dir --sigstore-trusted-root` (a real subprocess
with its local OPA) admits or denies Deployments through POST /admit, reading Debian's
docker-registry (bundles through the fallback tag `sha256-<hex>`).

Two sources of keyless bundles:
- the real production bundle of the fixtures (keyless/cosign-attestation:empty, replayed), which is
  an *attestation*: `cosign verify` v2.6.5 accepts it as a signature, Ostiary must not, even for the
  right identity (the certificate, chain and Rekor proofs all verify: the reason says so);
- keyless *signatures* made now by a test Sigstore (tests/support/keyless_signing.py), trusted through
  a trusted_root.json that lists the public-good root's CAs and logs and the test ones (an operator's
  root may list several), with hostile variants.
"""

from __future__ import annotations

import json

import pytest

from tests.support import cosign_signing as cs
from tests.support.keyless_signing import TestSigstore
from tests.support.serve import deployment_review, message, patch_of
from tests.support.simple_signing import FIXTURES, SigningWorld, serve_policies

HOST = "registry.test:5000"
REAL_ISSUER = "https://github.com/login/oauth"
ISSUER = "https://token.actions.githubusercontent.com"
WORKFLOW = "https://github.com/org/app/.github/workflows/release.yml@refs/heads/main"


def policy(namespace: str, pattern: str, *identities: dict) -> dict:
    return {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ImagePolicy",
        "metadata": {"name": "keyless", "namespace": namespace},
        "spec": {"repositories": [{"name": pattern, "policy": {"cosign": {"identities": list(identities)}}}]},
    }


class Made:
    def __init__(self, w: SigningWorld, sigstore: TestSigstore):
        push = cs.Pusher(w.registry_url)
        self.reg = w.registry_host
        self.digests: dict[str, str] = {}

        def signed(repo: str, **kwargs) -> str:
            d = self.digests[repo] = push.image(f"made/{repo}", "v1")
            statement = kwargs.pop("statement", None) or cs.statement(d)
            push.bundle_signature(f"made/{repo}", d, sigstore.bundle(statement, **kwargs))
            return d

        workflow = dict(subject=WORKFLOW, issuer=ISSUER, extensions={"githubWorkflowRepository": "org/app"})
        signed("good", **workflow)
        signed("other-subject", subject="https://github.com/evil/app/.github/workflows/x.yml@refs/heads/main",
               issuer=ISSUER, extensions={"githubWorkflowRepository": "evil/app"})  # fmt: skip
        signed("other-issuer", subject=WORKFLOW, issuer="https://issuer.attacker.example",
               extensions={"githubWorkflowRepository": "org/app"})  # fmt: skip
        d = self.digests["attest"] = push.image("made/attest", "v1")
        push.bundle_signature(
            "made/attest", d, sigstore.bundle(cs.statement(d, "https://slsa.dev/provenance/v1"), **workflow)
        )
        d = self.digests["swap"] = push.image("made/swap", "v1")
        push.bundle_signature("made/swap", d, sigstore.bundle(cs.statement(self.digests["good"]), **workflow))
        d = self.digests["tampered"] = push.image("made/tampered", "v1")
        good = json.loads(sigstore.bundle(cs.statement(d), **workflow))
        entry = good["verificationMaterial"]["tlogEntries"][0]
        entry["integratedTime"] = str(int(entry["integratedTime"]) + 1)  # the SET no longer covers it
        push.bundle_signature("made/tampered", d, json.dumps(good).encode())
        d = self.digests["rogue"] = push.image("made/rogue", "v1")
        push.bundle_signature("made/rogue", d, TestSigstore("rogue").bundle(cs.statement(d), **workflow))
        # a keyless legacy `.sig` (a certificate annotation): refused with its reason
        d = self.digests["legacy"] = push.image("made/legacy", "v1")
        push.legacy_signature("made/legacy", d, [(cs.payload(f"{self.reg}/made/legacy", d), "c2ln")])
        self.digests["unsigned"] = push.image("made/unsigned", "v1")


@pytest.fixture(scope="module")
def signing(tmp_path_factory):
    sigstore = TestSigstore()
    with SigningWorld(tmp_path_factory.mktemp("keyless") / "w") as w:
        w.replay_fixtures("keyless/cosign-attestation")
        yield w, sigstore, Made(w, sigstore)


def _combined_root(sigstore: TestSigstore) -> bytes:
    public = json.loads((FIXTURES / "keyless" / "trusted_root.production.json").read_text())
    test = json.loads(sigstore.trusted_root())
    public["certificateAuthorities"] += test["certificateAuthorities"]
    public["tlogs"] += test["tlogs"]
    return json.dumps(public).encode()


@pytest.fixture(scope="module")
def ostiary(signing, tmp_path_factory):
    w, sigstore, made = signing
    tmp = tmp_path_factory.mktemp("ostiary-keyless")
    root = tmp / "trusted_root.json"
    root.write_bytes(_combined_root(sigstore))
    reg = made.reg
    docs = [
        policy("real", f"{HOST}/keyless/*", {"issuer": REAL_ISSUER, "subject": "cody@soyland.com"}),
        policy("exact", f"{reg}/made/*", {"issuer": ISSUER, "subject": WORKFLOW}),
        policy(
            "regexp",
            f"{reg}/made/*",
            {
                "issuerRegExp": "https://token\\.actions\\.githubusercontent\\.com",
                "subjectRegExp": "https://github\\.com/org/app/\\.github/workflows/[^@]+@refs/heads/main",
                "githubWorkflowRepository": "org/app",
            },
        ),
        # the regular expression must match the whole value: `org` alone matches none
        policy("partial", f"{reg}/made/*", {"issuer": ISSUER, "subjectRegExp": "org"}),
        policy(
            "wrong-repo",
            f"{reg}/made/*",
            {"issuer": ISSUER, "subject": WORKFLOW, "githubWorkflowRepository": "org/other"},
        ),  # fmt: skip
        policy(
            "either",
            f"{reg}/made/*",
            {"issuer": "https://nobody.example", "subject": "x"},
            {"issuerRegExp": "https://issuer\\.attacker\\.example", "subject": WORKFLOW},
        ),  # fmt: skip
    ]
    with serve_policies(
        tmp,
        docs,
        "--registry-endpoint", f"{HOST}={w.registry_url}",
        "--registry-endpoint", f"{reg}={w.registry_url}",
        "--sigstore-trusted-root", str(root),
    ) as server:  # fmt: skip
        yield server


def admit(ostiary, image: str, namespace: str) -> dict:
    body = deployment_review(image, namespace=namespace)
    response = ostiary.admit(body)["response"]
    assert response["uid"] == body["request"]["uid"]
    return response


def pinned_to(response: dict) -> str | None:
    ops = [op for op in patch_of(response) if op["path"].endswith("/image")]
    return ops[0]["value"] if ops else None


def test_the_real_keyless_attestation_is_not_a_signature(ostiary):
    response = admit(ostiary, f"{HOST}/keyless/cosign-attestation:empty", "real")
    assert response["allowed"] is False, message(response)
    text = message(response)
    assert "cosign keyless requirement" in text, text
    # every proof verified (it names whose certificate it is); refused for what it signs
    assert "an attestation (predicateType 'https://cosign.sigstore.dev/attestation/v1')" in text, text
    assert "cody@soyland.com" in text, text


@pytest.mark.parametrize("namespace", ["exact", "regexp"])
def test_the_right_identity_admits_and_pins(ostiary, signing, namespace):
    _, _, made = signing
    image = f"{made.reg}/made/good:v1"
    response = admit(ostiary, image, namespace)
    assert response["allowed"] is True, message(response)
    assert pinned_to(response) == f"{image}@{made.digests['good']}"


def test_any_one_identity_suffices(ostiary, signing):
    _, _, made = signing
    assert admit(ostiary, f"{made.reg}/made/other-issuer:v1", "either")["allowed"] is True
    assert admit(ostiary, f"{made.reg}/made/good:v1", "either")["allowed"] is False


@pytest.mark.parametrize(
    ("repo", "namespace", "reason"),
    [
        ("other-subject", "exact", "no identity accepts it"),
        ("other-subject", "regexp", "no identity accepts it"),
        ("other-issuer", "exact", "certificate of issuer https://issuer.attacker.example"),
        ("other-issuer", "regexp", "no identity accepts it"),
        ("good", "partial", "no identity accepts it"),
        ("good", "wrong-repo", "no identity accepts it"),
        ("attest", "exact", "an attestation (predicateType 'https://slsa.dev/provenance/v1')"),
        ("swap", "exact", "(a signature of another image)"),
        ("tampered", "exact", "signed entry timestamp does not verify"),
        ("rogue", "exact", "is not in the trusted root"),
        ("legacy", "exact", "legacy `.sig` signatures are not read for keyless requirements"),
        ("unsigned", "exact", "no signature found"),
    ],
)
def test_refused_with_the_reason(ostiary, signing, repo, namespace, reason):
    _, _, made = signing
    response = admit(ostiary, f"{made.reg}/made/{repo}:v1", namespace)
    assert response["allowed"] is False, f"made/{repo} admitted in {namespace}"
    text = message(response)
    assert reason in text, text
    assert "cosign keyless requirement" in text, text
