"""Signed images through the whole path: apiserver -> Ostiary -> real notary-server -> OPA -> pinned object."""

from __future__ import annotations

import base64

import pytest

from tests.e2e.k8s import denied, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.world]


def trust_policy(kube, namespace: str, scenario, signer_secrets: list[str] | None = None) -> None:
    trust = {"enabled": True, "trustServer": scenario.notary_url}
    if signer_secrets:
        trust["signerSecrets"] = [{"name": s} for s in signer_secrets]
    kube.policy(
        namespace,
        [{"name": f"{scenario.registry_host}/ostiary/*", "policy": {"trust": trust}}],
        name="trusted",
    )


def signer_secret(kube, namespace: str, name: str, signer: str, public_pem: str) -> None:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    kube.core.create_namespaced_secret(
        namespace, {"metadata": {"name": name}, "data": {"name": b64(signer), "publicKey": b64(public_pem)}}
    )


def test_a_signed_image_is_admitted_and_pinned_to_its_signed_digest(kube, world_namespace, world_scenario):
    signed = world_scenario["signed"]
    trust_policy(kube, world_namespace, world_scenario)
    pod = kube.pod(world_namespace, signed.reference)
    assert pod["spec"]["containers"][0]["image"] == signed.pinned
    stored = kube.core.read_namespaced_pod(pod["metadata"]["name"], world_namespace)
    assert stored.spec.containers[0].image == f"{signed.registry}/{signed.repo}:{signed.tag}@{signed.digest}"


def test_an_unsigned_image_is_denied(kube, world_namespace, world_scenario):
    trust_policy(kube, world_namespace, world_scenario)
    for key in ("unsigned", "no-trust"):
        assert world_scenario[key].reference in denied(
            kube.pod, world_namespace, world_scenario[key].reference
        )


def test_a_deployment_is_pinned_and_its_replicaset_is_approved_by_owner(
    kube, world_namespace, world_scenario, world_ostiary
):
    signed = world_scenario["signed"]
    trust_policy(kube, world_namespace, world_scenario)
    deployment = kube.deployment(world_namespace, signed.reference)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == signed.pinned
    owner = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
        "uid": deployment["metadata"]["uid"],
        "controller": True,
    }
    rs = kube.replicaset(world_namespace, signed.pinned, owner=owner)
    assert rs["spec"]["template"]["spec"]["containers"][0]["image"] == signed.pinned
    approval = f"created by Deployment {world_namespace}/{deployment['metadata']['name']}"
    eventually(lambda: approval in world_ostiary.log(400))  # the decision log says why
    # The unpinned reference is not what the owner carries: verified in full (and pinned).
    rs2 = kube.replicaset(world_namespace, signed.reference, owner=owner)
    assert rs2["spec"]["template"]["spec"]["containers"][0]["image"] == signed.pinned


def test_signer_secrets_are_read_from_the_api(kube, world_namespace, world_scenario):
    image = world_scenario["signer-pem"]
    signer_secret(kube, world_namespace, "alice-key", "alice", world_scenario.alice_pem)
    signer_secret(kube, world_namespace, "mallory-key", "mallory", world_scenario.mallory_pem)
    trust_policy(kube, world_namespace, world_scenario, ["alice-key"])
    assert kube.pod(world_namespace, image.reference)["spec"]["containers"][0]["image"] == image.pinned
    trust_policy(kube, world_namespace, world_scenario, ["mallory-key"])
    assert image.reference in denied(kube.pod, world_namespace, image.reference)
