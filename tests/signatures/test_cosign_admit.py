"""cosign key-based signatures end to end: `ostiary serve --policy-dir` (a real subprocess with its
local OPA) admits or denies Deployments through POST /admit, against Debian's docker-registry
(no referrers API: bundles are found through the fallback tag `sha256-<hex>`).

Two sources of signatures:
- the captured fixtures (../shared/fixtures/signatures, made by cosign v2.6.5), replayed into the
  registry; every key-based cosign verdict of expected.json for docker-registry must be Ostiary's,
  except the two cases where cosign refused its own invocation (see CLI_ONLY);
- signatures made now in Python in cosign's exact shapes (tests/support/cosign_signing.py), with
  each key type cosign signs with and hostile variants (swap, moved tag, tampered payload, unknown
  critical key, attestation instead of signature, foreign identity, too many signatures, oversized
  or mis-subjected bundles).

Each case has its own namespace with an ImagePolicy, so one server carries every policy at once.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import requests

from tests.support import cosign_signing as cs
from tests.support.serve import deployment_review, message, patch_of
from tests.support.simple_signing import FIXTURES, SigningWorld, serve_policies

HOST = "registry.test:5000"
# cosign rejected these because of how it was invoked, not because of the image: a bundle verified
# without --trusted-root, and a bundle image verified without --new-bundle-format. Ostiary needs no
# trusted root for key-based signatures and always reads both formats (docs/signatures.md).
CLI_ONLY = ("/no-trusted-root", "/legacy-lookup")


def _cosign_cases() -> list[dict]:
    cases = json.loads((FIXTURES / "expected.json").read_text())["cases"]
    return [
        c
        for c in cases
        if c["format"] in ("cosign-legacy", "cosign-bundle") and c["registry"] == "distribution"
    ]


def secret(name: str, namespace: str, **data: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def cosign_policy(namespace: str, pattern: str, *key_secrets: str, identity: dict | None = None) -> dict:
    cosign: dict = {"keys": [{"keySecret": k} for k in key_secrets]}
    if identity is not None:
        cosign["signedIdentity"] = identity
    return {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ImagePolicy",
        "metadata": {"name": "signed", "namespace": namespace},
        "spec": {"repositories": [{"name": pattern, "policy": {"cosign": cosign}}]},
    }


class Made:
    """Images and signatures made now, in repositories made/* of the test registry."""

    def __init__(self, w: SigningWorld):
        push = cs.Pusher(w.registry_url)
        reg = w.registry_host
        self.reg = reg
        self.keys = {kind: cs.new_key(kind) for kind in ("p256", "ed25519", "rsa3072")}
        self.rogue = cs.new_key("p256")
        p256, ed, rsa_key = self.keys["p256"], self.keys["ed25519"], self.keys["rsa3072"]
        self.digests: dict[str, str] = {}

        def legacy(repo: str, key, identity: str | None = None, digest: str | None = None) -> str:
            d = self.digests.setdefault(repo, push.image(f"made/{repo}", "v1"))
            data = cs.payload(identity or f"{reg}/made/{repo}", digest or d)
            push.legacy_signature(f"made/{repo}", d, [cs.legacy_layer(key, data)])
            return d

        legacy("p256", p256)
        legacy("ed", ed)
        legacy("rsa", rsa_key)
        legacy("elsewhere", p256, identity=f"{reg}/made/not-this-one")
        legacy("mirror", p256, identity=f"{reg}/made/origin:v1")
        # a bundle by the Ed25519 key, and an image with one signature of each format and key
        d = self.digests["edbundle"] = push.image("made/edbundle", "v1")
        push.bundle_signature("made/edbundle", d, cs.bundle(ed, cs.statement(d)))
        d = legacy("both", p256)
        push.bundle_signature("made/both", d, cs.bundle(ed, cs.statement(d)))
        # an attestation (in-toto provenance) made with the trusted key: not a signature
        d = self.digests["attest"] = push.image("made/attest", "v1")
        push.bundle_signature(
            "made/attest", d, cs.bundle(p256, cs.statement(d, "https://slsa.dev/provenance/v1"))
        )
        # swap: a correct signature by the trusted key of another image's digest
        legacy("swap", p256, digest=self.digests["p256"])
        # a tag signed, then moved to an unsigned digest
        signed = legacy("moved", p256)
        self.moved_signed = signed
        self.digests["moved"] = push.image("made/moved", "v1")
        # tampered: the signature of one payload over another
        d = self.digests["tampered"] = push.image("made/tampered", "v1")
        good = cs.payload(f"{reg}/made/tampered", d)
        evil = good.replace(b'"optional":null', b'"optional":{"x":1}')
        push.legacy_signature("made/tampered", d, [(evil, cs.legacy_layer(p256, good)[1])])
        # an unknown key in `critical`, signed by the trusted key
        d = self.digests["critical"] = push.image("made/critical", "v1")
        data = cs.payload(f"{reg}/made/critical", d, unexpected={"x": 1})
        push.legacy_signature("made/critical", d, [cs.legacy_layer(p256, data)])
        # more signatures than are read: 32 by a rogue key, then the trusted one
        d = self.digests["many"] = push.image("made/many", "v1")
        data = cs.payload(f"{reg}/made/many", d)
        push.legacy_signature(
            "made/many", d, [cs.legacy_layer(self.rogue, data)] * 32 + [cs.legacy_layer(p256, data)]
        )
        # a trusted bundle whose referrer manifest names another subject, listed under this digest
        d = self.digests["subject"] = push.image("made/subject", "v1")
        other = push.image("made/subject", "other")
        referrer = push.bundle_signature("made/subject", other, cs.bundle(p256, cs.statement(d)))
        self._list_under(push, "made/subject", d, referrer)
        # a bundle larger than Ostiary reads
        d = self.digests["huge"] = push.image("made/huge", "v1")
        push.bundle_signature("made/huge", d, cs.bundle(p256, cs.statement(d)) + b" " * (300 * 1024))
        # never signed
        self.digests["unsigned"] = push.image("made/unsigned", "v1")

    @staticmethod
    def _list_under(push: cs.Pusher, repo: str, digest: str, referrer: str) -> None:
        body = requests.get(
            f"{push.url}/v2/{repo}/manifests/{referrer}", headers={"Accept": cs.OCI_MANIFEST}, timeout=10
        ).content
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": cs.OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": cs.OCI_MANIFEST,
                        "digest": referrer,
                        "size": len(body),
                        "artifactType": cs.EMPTY,
                    }
                ],
            }
        ).encode()
        push.manifest(repo, digest.replace(":", "-"), index, cs.OCI_INDEX)


@pytest.fixture(scope="module")
def signing(tmp_path_factory):
    with SigningWorld(tmp_path_factory.mktemp("cosign") / "w") as w:
        w.replay_fixtures("ostiary/cosign", "ostiary/cosign-bundle", "keyless/cosign-attestation")
        yield w, Made(w)


def _documents(w: SigningWorld, made: Made) -> list[dict]:
    docs: list[dict] = []
    keys = {p.name: p.read_text() for p in (FIXTURES / "keys/public/cosign").glob("*.pub")}
    for i, case in enumerate(_cosign_cases()):
        ns = f"case-{i:02d}"
        docs.append(secret("k", ns, key=keys[Path(case["settings"]["key"]).name]))
        docs.append(cosign_policy(ns, f"{HOST}/*", "k"))
    reg = made.reg
    pem = {kind: cs.public_pem(key) for kind, key in made.keys.items()}
    for kind in pem:
        docs += [secret("k", f"m-{kind}", key=pem[kind]), cosign_policy(f"m-{kind}", f"{reg}/made/*", "k")]
    docs += [
        # cosign's own Secret layout (cosign generate-key-pair k8s://…): the key is `cosign.pub`
        secret("cosign", "m-cosign-secret", **{"cosign.pub": pem["p256"], "cosign.key": "not read"}),
        cosign_policy("m-cosign-secret", f"{reg}/made/*", "cosign"),
        # one Secret, several keys: a signature by any of them
        secret("k", "m-any", key=pem["p256"] + pem["ed25519"]),
        cosign_policy("m-any", f"{reg}/made/*", "k"),
        # two key requirements: both must be satisfied
        secret("p", "m-two", key=pem["p256"]),
        secret("e", "m-two", key=pem["ed25519"]),
        cosign_policy("m-two", f"{reg}/made/*", "p", "e"),
        # identity rules for a signature that names another repository
        secret("k", "m-exact", key=pem["p256"]),
        cosign_policy(
            "m-exact",
            f"{reg}/made/*",
            "k",
            identity={"type": "matchExactRepository", "dockerRepository": f"{reg}/made/origin"},
        ),
        secret("k", "m-remap", key=pem["p256"]),
        cosign_policy(
            "m-remap",
            f"{reg}/made/*",
            "k",
            identity={
                "type": "remapIdentity",
                "prefix": f"{reg}/made/mirror",
                "signedPrefix": f"{reg}/made/origin",
            },
        ),
        # unusable key material
        secret("k", "m-weak", key=cs.public_pem(cs.new_key("rsa1024"))),
        cosign_policy("m-weak", f"{reg}/made/*", "k"),
        # a ClusterImagePolicy whose key Secret would come from the workload's namespace
        {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ClusterImagePolicy",
            "metadata": {"name": "tenant-keys"},
            "spec": {
                "repositories": [
                    {
                        "name": f"{reg}/made/*",
                        "policy": {"cosign": {"keys": [{"keySecret": "k", "keySecretNamespace": "tenant"}]}},
                    }
                ]
            },
        },
        secret("k", "tenant", key=pem["p256"]),
    ]
    return docs


@pytest.fixture(scope="module")
def ostiary(signing, tmp_path_factory):
    w, made = signing
    with serve_policies(
        tmp_path_factory.mktemp("ostiary-cosign"),
        _documents(w, made),
        "--registry-endpoint", f"{HOST}={w.registry_url}",
        "--registry-endpoint", f"{w.registry_host}={w.registry_url}",
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


# ---- the real tool's verdicts ----------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(_cosign_cases())), ids=[c["id"] for c in _cosign_cases()])
def test_fixture_verdicts_are_the_real_tools(ostiary, index):
    case = _cosign_cases()[index]
    response = admit(ostiary, case["reference"], f"case-{index:02d}")
    expected = "accept" if case["id"].endswith(CLI_ONLY) else case["verdict"]
    name = case["reference"].split("@")[0]
    if expected == "accept":
        assert response["allowed"] is True, message(response)
        assert pinned_to(response) in (None, f"{name}@{case['resolved_digest']}"), patch_of(response)
        if "@" not in case["reference"]:
            assert pinned_to(response) == f"{name}@{case['resolved_digest']}"
    else:
        assert response["allowed"] is False, f"{case['id']} was admitted; cosign said: {case['tool_output']}"
        assert "cosign key requirement 0" in message(response), message(response)


def test_fixture_swap_is_refused_for_the_digest(ostiary):
    index = next(
        i
        for i, c in enumerate(_cosign_cases())
        if c["id"].startswith("cosign-legacy/distribution/cosign:delta")
    )
    response = admit(ostiary, f"{HOST}/ostiary/cosign:delta", f"case-{index:02d}")
    assert response["allowed"] is False
    assert "signs digest sha256:08203b7d" in message(response), message(response)


def test_keyless_attestation_is_not_a_key_signature(ostiary):
    index = next(
        i for i, c in enumerate(_cosign_cases()) if c["settings"]["key"].endswith("cosign-trusted.pub")
    )
    response = admit(ostiary, f"{HOST}/keyless/cosign-attestation:empty", f"case-{index:02d}")
    assert response["allowed"] is False, message(response)


# ---- made now: key types and discovery ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("repo", "namespace"),
    [
        ("p256", "m-p256"),
        ("ed", "m-ed25519"),
        ("rsa", "m-rsa3072"),
        ("edbundle", "m-ed25519"),
        ("p256", "m-cosign-secret"),
        ("p256", "m-any"),
        ("ed", "m-any"),
        ("both", "m-two"),
        ("mirror", "m-exact"),
        ("mirror", "m-remap"),
    ],
)
def test_signed_is_admitted_and_pinned(ostiary, signing, repo, namespace):
    _, made = signing
    image = f"{made.reg}/made/{repo}:v1"
    response = admit(ostiary, image, namespace)
    assert response["allowed"] is True, message(response)
    assert pinned_to(response) == f"{image}@{made.digests[repo]}"


def test_wrong_key_is_denied(ostiary, signing):
    _, made = signing
    response = admit(ostiary, f"{made.reg}/made/p256:v1", "m-ed25519")
    assert response["allowed"] is False
    assert "does not verify with any key of the key secret" in message(response), message(response)


def test_every_key_requirement_must_hold(ostiary, signing):
    _, made = signing
    response = admit(ostiary, f"{made.reg}/made/p256:v1", "m-two")
    assert response["allowed"] is False
    assert "cosign key requirement 1" in message(response), message(response)
    assert "cosign key requirement 0" not in message(response), message(response)


# ---- made now: refused --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repo", "namespace", "reason"),
    [
        ("swap", "m-p256", "not {swap} (a signature of another image)"),
        ("moved", "m-p256", "no signature found"),
        ("tampered", "m-p256", "does not verify with any key"),
        ("critical", "m-p256", "unknown keys unexpected"),
        ("attest", "m-p256", "an attestation (predicateType 'https://slsa.dev/provenance/v1')"),
        ("elsewhere", "m-p256", "signed identity"),
        ("mirror", "m-p256", "signed identity"),
        ("elsewhere", "m-exact", "signed identity"),
        ("many", "m-p256", "more than 32 signatures"),
        ("subject", "m-p256", "subject is not"),
        ("huge", "m-p256", "larger than 262144 bytes"),
        ("unsigned", "m-p256", "no signature found"),
        ("p256", "m-weak", "RSA of 1024 bits"),
        ("p256", "tenant", "never come from there"),
    ],
)
def test_refused(ostiary, signing, repo, namespace, reason):
    _, made = signing
    response = admit(ostiary, f"{made.reg}/made/{repo}:v1", namespace)
    assert response["allowed"] is False, f"made/{repo} admitted in {namespace}"
    text = message(response)
    assert reason.format(swap=made.digests.get("swap", "")) in text, text
    assert "cosign key requirement 0" in text, text


def test_moved_tag_was_signed_before(signing):
    """The moved case is a real move: the tag's first digest is signed by the trusted key."""
    _, made = signing
    assert made.moved_signed != made.digests["moved"]


def test_metrics_count_cosign_requirements(ostiary, signing):
    _, made = signing
    admit(ostiary, f"{made.reg}/made/p256:v1", "m-p256")
    admit(ostiary, f"{made.reg}/made/p256:v1", "m-weak")
    text = requests.get(f"{ostiary.url}/metrics", timeout=10).text
    counts = {
        line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ostiary_signature_requirements_total{")
    }
    assert counts.get('format="cosign",outcome="verified"', 0) >= 1, counts
    assert counts.get('format="cosign",outcome="not_verified"', 0) >= 1, counts


def test_metrics_count_the_signature_cache(ostiary, signing):
    """The second admission of the same image under the same keys is answered from the cache."""
    _, made = signing
    for _ in range(2):
        assert admit(ostiary, f"{made.reg}/made/ed:v1", "m-ed25519")["allowed"] is True

    def value(name: str) -> float:
        text = requests.get(f"{ostiary.url}/metrics", timeout=10).text
        return next(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")
        )

    assert value("ostiary_signature_cache_hits_total") >= 1
    assert value("ostiary_signature_cache_stored_total") >= 1
    assert value("ostiary_signature_cache_entries") >= 1
    assert value("ostiary_signature_cache_bytes") > 0
