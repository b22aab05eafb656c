"""End to end on loopback: `ostiary serve` (a real subprocess, with its local OPA) admits Deployments
against the real notary-server and registry of the test world.

Policies (a temporary --policy-dir):
- ClusterImagePolicy "world": REG/ostiary/* needs trust (trustServer = the world's notary-server);
  REG/ostiary/signer-pem also needs signer alice (Secret alice-signer in ostiary-system, her PEM key);
  REG/ostiary/signer-cert needs signer "bob" but its Secret holds mallory's key (wrong signer).
- Namespace "mallory-ns" has an ImagePolicy (so only it applies there) that wants signer alice with
  mallory's PEM key in a Secret of that namespace: alice's real signature must not satisfy it.
"""

from __future__ import annotations

import base64

import pytest

from tests.support.serve import (
    OSTIARY,
    READY_TIMEOUT,
    deployment_review,
    message,
    patch_of,
    start_ready,
    stop,
    write_documents,
)

pytestmark = pytest.mark.world

SYSTEM_NS = "ostiary-system"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def signer_secret(name: str, namespace: str, signer: str, pem: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"name": b64(signer), "publicKey": b64(pem)},
    }


def policy_documents(world) -> list[dict]:
    reg, url = world.registry_host, world.notary_url

    def trust(*secrets: str) -> dict:
        t: dict = {"enabled": True, "trustServer": url}
        if secrets:
            t["signerSecrets"] = [{"name": s} for s in secrets]
        return {"trust": t}

    return [
        {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ClusterImagePolicy",
            "metadata": {"name": "world"},
            "spec": {
                "repositories": [
                    {"name": f"{reg}/ostiary/*", "policy": trust()},
                    {"name": f"{reg}/ostiary/signer-pem", "policy": trust("alice-signer")},
                    {"name": f"{reg}/ostiary/signer-cert", "policy": trust("bob-is-mallory")},
                ]
            },
        },
        signer_secret("alice-signer", SYSTEM_NS, "alice", world.alice_pem),
        signer_secret("bob-is-mallory", SYSTEM_NS, "bob", world.mallory_pem),
        {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ImagePolicy",
            "metadata": {"name": "wrong-signer", "namespace": "mallory-ns"},
            "spec": {"repositories": [{"name": f"{reg}/ostiary/*", "policy": trust("alice-is-mallory")}]},
        },
        signer_secret("alice-is-mallory", "mallory-ns", "alice", world.mallory_pem),
    ]


@pytest.fixture(scope="module")
def ostiary(world, tmp_path_factory):
    if not OSTIARY.exists():
        pytest.fail(
            f"{OSTIARY} is missing: install the project into its venv (pip install -e .)", pytrace=False
        )
    tmp = tmp_path_factory.mktemp("ostiary-serve")
    policies = write_documents(tmp / "policies", policy_documents(world))
    server = start_ready(tmp, policies, "--ca-file", world.ca_file)
    try:
        yield server
    finally:
        stop(server.proc)


def review(ostiary, *images: str, namespace: str = "default") -> tuple[dict, dict]:
    body = deployment_review(*images, namespace=namespace)
    answer = ostiary.admit(body)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == body["request"]["uid"]
    return body, response


def assert_pinned(response: dict, expected: dict[int, str]) -> None:
    """The patch sets container i's image to expected[i], and touches nothing else."""
    ops = patch_of(response)
    got = {}
    record = [op for op in ops if op["path"].startswith("/metadata")]  # ostiary.dev/original-images
    assert len(record) == (1 if ops else 0), ops
    ops = [op for op in ops if op not in record]
    for op in ops:
        assert op["op"] in ("replace", "add"), op
        prefix = "/spec/template/spec/containers/"
        assert op["path"].startswith(prefix) and op["path"].endswith("/image"), op
        got[int(op["path"][len(prefix) :].split("/")[0])] = op["value"]
    assert got == expected


def test_server_started(ostiary):
    assert ostiary.startup_seconds < READY_TIMEOUT


def test_signed_tag_is_admitted_and_pinned(ostiary, world):
    img = world["signed"]
    _, response = review(ostiary, img.reference)
    assert response["allowed"] is True, message(response)
    assert_pinned(response, {0: f"{img.registry}/{img.repo}:{img.tag}@{img.digest}"})


def test_already_pinned_image_gets_no_patch(ostiary, world):
    img = world["signed"]
    _, response = review(ostiary, img.pinned)
    assert response["allowed"] is True, message(response)
    assert patch_of(response) == []


def test_unsigned_tag_is_denied_naming_the_image(ostiary, world):
    img = world["unsigned"]
    _, response = review(ostiary, img.reference)
    assert response["allowed"] is False
    assert img.reference in message(response), message(response)
    assert "patch" not in response


def test_repository_without_trust_data_is_denied(ostiary, world):
    img = world["no-trust"]
    _, response = review(ostiary, img.reference)
    assert response["allowed"] is False
    assert img.repo in message(response), message(response)


def test_one_unsigned_image_denies_the_whole_deployment(ostiary, world):
    signed, unsigned = world["signed"], world["unsigned"]
    _, response = review(ostiary, signed.reference, unsigned.reference)
    assert response["allowed"] is False
    assert unsigned.repo in message(response), message(response)
    assert "patch" not in response


def test_signer_alice_pinned(ostiary, world):
    img = world["signer-pem"]
    _, response = review(ostiary, img.reference)
    assert response["allowed"] is True, message(response)
    assert_pinned(response, {0: img.pinned})


def test_two_images_both_pinned(ostiary, world):
    a, b = world["signed"], world["signer-pem"]
    _, response = review(ostiary, a.reference, b.reference)
    assert response["allowed"] is True, message(response)
    assert_pinned(response, {0: a.pinned, 1: b.pinned})


def test_wrong_signer_key_in_cluster_policy_is_denied(ostiary, world):
    img = world["signer-cert"]  # signed by bob; the policy's "bob" Secret holds mallory's key
    _, response = review(ostiary, img.reference)
    assert response["allowed"] is False
    assert img.reference in message(response), message(response)
    assert "bob" in message(response), message(response)


def test_wrong_signer_key_in_namespace_policy_is_denied(ostiary, world):
    img = world["signer-pem"]  # signed by alice; mallory-ns wants "alice" with mallory's key
    _, response = review(ostiary, img.reference, namespace="mallory-ns")
    assert response["allowed"] is False
    assert img.reference in message(response), message(response)
    assert "alice" in message(response), message(response)


def test_digest_reference_signed_under_a_tag_is_admitted(ostiary, world):
    img = world["signed"]
    _, response = review(ostiary, f"{img.gun}@{img.digest}")
    assert response["allowed"] is True, message(response)
    assert patch_of(response) == []


def test_tag_at_wrong_digest_is_denied(ostiary, world):
    img, other = world["signed"], world["signer-pem"]
    _, response = review(ostiary, f"{img.gun}:{img.tag}@{other.digest}")
    assert response["allowed"] is False
    assert other.digest in message(response), message(response)
