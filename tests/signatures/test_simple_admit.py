"""Red Hat simple signing end to end: `ostiary serve --policy-dir` (a real subprocess with its local OPA)
admits or denies Deployments through POST /admit, against Debian's docker-registry and a lookaside
store served over HTTPS (storeURL).

Two sources of signatures:
- the captured fixtures (../shared/fixtures/signatures, made by skopeo 1.9.3 + GnuPG 2.2.40), replayed
  into the registry; every simple-signing verdict of expected.json must be Ostiary's verdict;
- signatures made now by skopeo `copy --sign-by` and gpg, with negative variants (wrong key,
  tampered bytes, an unknown critical key, a swapped digest).

Each case has its own namespace with an ImagePolicy, so one server carries every policy at once.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.support.serve import Ostiary, deployment_review, message, patch_of
from tests.support.simple_signing import FIXTURES, SigningWorld, serve_policies

HOST = "registry.test:5000"


def _simple_cases() -> list[dict]:
    cases = json.loads((FIXTURES / "expected.json").read_text())["cases"]
    return [c for c in cases if c["format"] == "simple-signing"]


def _identity(settings: dict) -> dict | None:
    identity = dict(settings["policy"]["signedIdentity"])
    kind = identity["type"]
    if kind.startswith("matchRepoDigestOrExact"):
        return None
    if kind == "exactRepository":  # containers/image's policy.json name for Portieris' matchExactRepository
        return {"type": "matchExactRepository", "dockerRepository": identity["dockerRepository"]}
    return identity


def secret(name: str, namespace: str, **data: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def image_policy(namespace: str, pattern: str, requirements: list[dict], store_url: str) -> dict:
    return {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ImagePolicy",
        "metadata": {"name": "signed", "namespace": namespace},
        "spec": {
            "repositories": [
                {"name": pattern, "policy": {"simple": {"requirements": requirements, "storeURL": store_url}}}
            ]
        },
    }


def signed_by(key_secret: str, identity: dict | None = None) -> dict:
    requirement: dict = {"type": "signedBy", "keySecret": key_secret}
    if identity is not None:
        requirement["signedIdentity"] = identity
    return requirement


class Made:
    """What the test made with skopeo + gpg now."""

    def __init__(self, w: SigningWorld):
        self.ed = w.gpg_key("made-ed")
        self.rsa = w.gpg_key("made-rsa", "rsa3072")
        self.app = w.sign_copy("ostiary/simple:alpha", "made/app:v1", self.ed)
        self.bravo = w.sign_copy("ostiary/simple:bravo", "made/rsa:v1", self.rsa)
        # tampered: a real signature with one byte of its signed claim flipped
        tampered = w.sign_copy("ostiary/simple:charlie", "made/tampered:v1", self.ed)
        for path in w.signature_files("made/tampered", tampered):
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x01
            path.write_bytes(bytes(data))
        self.tampered = tampered
        # an unknown key in `critical`: signed by the trusted key, refused for its content
        digest = w.digest("made/app:v1")
        claim = {
            "critical": {
                "identity": {"docker-reference": f"{w.registry_host}/made/critical:v1"},
                "image": {"docker-manifest-digest": w.digest("ostiary/simple:delta")},
                "type": "atomic container signature",
                "unexpected": {"x": 1},
            },
            "optional": {},
        }
        self.critical_digest = claim["critical"]["image"]["docker-manifest-digest"]
        copy = w.sign_copy("ostiary/simple:delta", "made/critical:v1", self.ed)
        assert copy == self.critical_digest
        for path in w.signature_files("made/critical", copy):
            path.unlink()
        w.put_signature("made/critical", copy, 1, w.sign_payload(self.ed, json.dumps(claim).encode()))
        # a swap: made/app's real signature presented as made/swap's (another digest)
        swap = w.sign_copy("ostiary/simple:echo", "made/swap:v1", self.rsa)
        for path in w.signature_files("made/swap", swap):
            path.unlink()
        own = w.signature_files("made/app", digest)[-1]  # the one skopeo made for made/app:v1
        w.put_signature("made/swap", swap, 1, own.read_bytes())
        self.swap = swap


@pytest.fixture(scope="module")
def signing(tmp_path_factory):
    with SigningWorld(tmp_path_factory.mktemp("signing") / "w") as w:
        w.replay_fixtures("ostiary/simple", "ostiary/simple-mirror")
        yield w, Made(w)


def _documents(w: SigningWorld, made: Made) -> list[dict]:
    docs: list[dict] = []
    keys = {p.name: p.read_text() for p in (FIXTURES / "keys/public/gpg").glob("*.asc")}
    for i, case in enumerate(_simple_cases()):
        ns = f"case-{i:02d}"
        key_file = Path(case["settings"]["policy"]["signedBy.keyPath"]).name
        docs.append(secret("k", ns, key=keys[key_file]))
        docs.append(
            image_policy(ns, f"{HOST}/ostiary/*", [signed_by("k", _identity(case["settings"]))], w.store_url)
        )
    reg = w.registry_host
    docs += [
        secret("ed", "made-ed", key=w.public_key(made.ed)),
        image_policy("made-ed", f"{reg}/made/*", [signed_by("ed")], w.store_url),
        secret("rsa", "made-rsa", key=w.public_key(made.rsa)),
        image_policy("made-rsa", f"{reg}/made/*", [signed_by("rsa")], w.store_url),
        secret("ed", "made-both", key=w.public_key(made.ed)),
        secret("rsa", "made-both", key=w.public_key(made.rsa)),
        image_policy("made-both", f"{reg}/made/*", [signed_by("ed"), signed_by("rsa")], w.store_url),
        # a ClusterImagePolicy whose key Secret would come from the workload's namespace
        {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ClusterImagePolicy",
            "metadata": {"name": "tenant-keys"},
            "spec": {
                "repositories": [
                    {
                        "name": f"{reg}/made/*",
                        "policy": {
                            "simple": {
                                "requirements": [{**signed_by("ed"), "keySecretNamespace": "tenant"}],
                                "storeURL": w.store_url,
                            }
                        },
                    }
                ]
            },
        },
        secret("ed", "tenant", key=w.public_key(made.ed)),
    ]
    return docs


@pytest.fixture(scope="module")
def ostiary(signing, tmp_path_factory):
    w, made = signing
    with serve_policies(
        tmp_path_factory.mktemp("ostiary-simple"),
        _documents(w, made),
        "--ca-file", w.ca_file,
        "--registry-endpoint", f"{HOST}={w.registry_url}",
        "--registry-endpoint", f"{w.registry_host}={w.registry_url}",
    ) as server:  # fmt: skip
        yield server


def admit(ostiary: Ostiary, image: str, namespace: str) -> dict:
    body = deployment_review(image, namespace=namespace)
    response = ostiary.admit(body)["response"]
    assert response["uid"] == body["request"]["uid"]
    return response


def pinned_to(response: dict) -> str | None:
    ops = [op for op in patch_of(response) if op["path"].endswith("/image")]
    return ops[0]["value"] if ops else None


@pytest.mark.parametrize("index", range(len(_simple_cases())), ids=[c["id"] for c in _simple_cases()])
def test_fixture_verdicts_are_the_real_tools(ostiary, index):
    case = _simple_cases()[index]
    response = admit(ostiary, case["reference"], f"case-{index:02d}")
    if case["verdict"] == "accept":
        assert response["allowed"] is True, message(response)
        name = case["reference"].split("@")[0]
        assert pinned_to(response) in (None, f"{name}@{case['resolved_digest']}"), patch_of(response)
        if "@" not in case["reference"]:
            assert pinned_to(response) == f"{name}@{case['resolved_digest']}"
    else:
        assert response["allowed"] is False, f"{case['id']} was admitted; skopeo said: {case['tool_output']}"
        assert "simple signing requirement 0" in message(response), message(response)


def test_signed_now_by_skopeo_is_admitted_and_pinned(ostiary, signing):
    w, made = signing
    response = admit(ostiary, f"{w.registry_host}/made/app:v1", "made-ed")
    assert response["allowed"] is True, message(response)
    assert pinned_to(response) == f"{w.registry_host}/made/app:v1@{made.app}"


def test_wrong_key_is_denied(ostiary, signing):
    w, _ = signing
    response = admit(ostiary, f"{w.registry_host}/made/app:v1", "made-rsa")
    assert response["allowed"] is False
    assert "does not verify with any trusted key" in message(response), message(response)


def test_every_requirement_must_hold(ostiary, signing):
    w, _ = signing
    response = admit(ostiary, f"{w.registry_host}/made/app:v1", "made-both")
    assert response["allowed"] is False
    assert "simple signing requirement 1" in message(response), message(response)
    assert "simple signing requirement 0" not in message(response), message(response)


def test_tampered_signature_is_denied(ostiary, signing):
    w, _ = signing
    response = admit(ostiary, f"{w.registry_host}/made/tampered:v1", "made-ed")
    assert response["allowed"] is False
    assert "OpenPGP" in message(response), message(response)


def test_unknown_critical_key_is_denied(ostiary, signing):
    w, _ = signing
    response = admit(ostiary, f"{w.registry_host}/made/critical:v1", "made-ed")
    assert response["allowed"] is False
    assert "unknown keys unexpected" in message(response), message(response)


def test_swapped_signature_is_denied(ostiary, signing):
    w, made = signing
    response = admit(ostiary, f"{w.registry_host}/made/swap:v1", "made-ed")
    assert response["allowed"] is False
    assert f"not {made.swap}" in message(response), message(response)


def test_cluster_policy_keys_never_come_from_the_workload_namespace(ostiary, signing):
    w, _ = signing
    response = admit(ostiary, f"{w.registry_host}/made/app:v1", "tenant")
    assert response["allowed"] is False
    assert "never come from there" in message(response), message(response)


def test_unsigned_image_is_denied_naming_the_store(ostiary, signing):
    w, _ = signing
    response = admit(ostiary, f"{HOST}/ostiary/simple:echo", "made-ed")
    # no ImagePolicy of made-ed matches registry.test: denied as unmatched, never admitted
    assert response["allowed"] is False
