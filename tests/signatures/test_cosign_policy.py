"""The cosign policy extension: validated strictly (schema.py; the CRDs carry the same fields),
translated with its identity rule spelled out, and a verifier stuck on a registry that never answers
gives facts naming the format by the deadline (never a hang)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from app.images import parse_image
from app.notary import clock as clocks
from app.policies.model import PolicyError
from app.policies.schema import parse_policy_document
from app.policies.translate import policy_data
from app.signatures.cosign import CosignVerifier
from app.signatures.port import SignatureRequest
from app.signatures.registry import RegistryReader
from app.signatures.service import SignatureService
from tests.support import cosign_signing as cs

ROOT = Path(__file__).resolve().parents[2]


def doc(cosign: object, kind: str = "ClusterImagePolicy") -> dict:
    metadata = {"name": "p"} if kind == "ClusterImagePolicy" else {"name": "p", "namespace": "team"}
    return {
        "apiVersion": "ostiary.dev/v1",
        "kind": kind,
        "metadata": metadata,
        "spec": {"repositories": [{"name": "registry.example.com/*", "policy": {"cosign": cosign}}]},
    }


def test_a_cosign_policy_is_accepted_and_translated_with_its_identity_rule():
    resource = parse_policy_document(doc({"keys": [{"keySecret": "k", "keySecretNamespace": "keys"}]}), "x#0")
    policy = policy_data(resource)["repositories"][0]["policy"]
    assert policy["cosign"]["signedIdentity"] == {"type": "matchRepository"}
    resource = parse_policy_document(
        doc(
            {
                "keys": [{"keySecret": "k"}],
                "signedIdentity": {"type": "matchExactRepository", "dockerRepository": "nginx"},
            }
        ),
        "x#0",
    )
    identity = policy_data(resource)["repositories"][0]["policy"]["cosign"]["signedIdentity"]
    assert identity["repository"] == "docker.io/library/nginx"


@pytest.mark.parametrize(
    ("cosign", "field"),
    [
        ({}, "cosign"),
        ({"keys": []}, "cosign.keys"),
        ({"keys": [{}]}, "cosign.keys[0]"),
        ({"keys": [{"keySecret": "k", "keyPath": "/etc/k"}]}, "cosign.keys[0].keyPath"),
        ({"keys": [{"keySecret": "k"}] * 17}, "cosign.keys"),
        ({"keys": [{"keySecret": "k"}], "signedIdentity": {"type": "matchExact"}}, "signedIdentity.type"),
        (
            {"keys": [{"keySecret": "k"}], "signedIdentity": {"type": "matchExactRepository"}},
            "signedIdentity",
        ),
        (
            {"keys": [{"keySecret": "k"}], "signedIdentity": {"type": "remapIdentity", "prefix": "a"}},
            "signedIdentity",
        ),
        ({"keys": [{"keySecret": "k"}], "rekor": True}, "cosign.rekor"),
    ],
)
def test_malformed_cosign_policies_are_refused_naming_the_field(cosign, field):
    with pytest.raises(PolicyError) as caught:
        parse_policy_document(doc(cosign), "x#0")
    assert field in str(caught.value), str(caught.value)


def test_the_crds_carry_the_same_cosign_fields():
    for name in ("imagepolicies", "clusterimagepolicies"):
        crd = yaml.safe_load((ROOT / f"helm/ostiary/crds/{name}.ostiary.dev.yaml").read_text())
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        policy = spec["properties"]["repositories"]["items"]["properties"]["policy"]["properties"]
        cosign = policy["cosign"]
        assert cosign["anyOf"] == [{"required": ["keys"]}, {"required": ["identities"]}]
        assert set(cosign["properties"]) == {"keys", "identities", "signedIdentity"}
        assert set(cosign["properties"]["keys"]["items"]["properties"]) == {"keySecret", "keySecretNamespace"}
        assert cosign["properties"]["signedIdentity"]["properties"]["type"]["enum"] == [
            "matchRepository",
            "matchExactRepository",
            "remapIdentity",
        ]


def test_a_registry_that_never_answers_gives_facts_by_the_deadline():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # accepted, never answered
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    service = SignatureService(
        [CosignVerifier(RegistryReader(endpoints={"registry.example.com": f"http://127.0.0.1:{port}"}))]
    )
    request = SignatureRequest(
        image=parse_image("registry.example.com/team/app:1.0"),
        requirement={"format": "cosign", "index": 0},
        keys=(("ns/k", cs.public_pem(cs.new_key("p256")).encode()),),
    )
    try:
        started = time.monotonic()
        (facts,) = service.gather([request], clocks.monotonic() + 1.0)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        service.close()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()
    assert facts["verified"] is False
    assert facts["format"] == "cosign"
    assert "cosign" in facts["error"] or "registry.example.com" in facts["error"], facts["error"]
    assert elapsed < 10, elapsed  # the deadline is 1 s; a wide margin for a loaded machine
