"""cosign through the whole path: kube-apiserver -> Ostiary (serve --kube) -> the world's docker-registry
-> OPA -> pinned object. Signatures are made in Python in cosign's exact shapes (tests/support/
cosign_signing.py); the key is a Secret in the workload's namespace under an ImagePolicy there."""

from __future__ import annotations

import base64

import pytest

from tests.e2e.k8s import denied
from tests.support import cosign_signing as cs

pytestmark = [pytest.mark.e2e, pytest.mark.world]


@pytest.fixture(scope="module")
def signed(world_scenario):
    push = cs.Pusher(world_scenario.world.registry_url)
    host = world_scenario.registry_host
    key = cs.new_key("p256")
    images = {}
    for name in ("legacy", "bundle", "unsigned", "rogue"):
        images[name] = push.image(f"e2e-cosign/{name}", "v1")
    d = images["legacy"]
    push.legacy_signature(
        "e2e-cosign/legacy", d, [cs.legacy_layer(key, cs.payload(f"{host}/e2e-cosign/legacy", d))]
    )
    d = images["bundle"]
    push.bundle_signature("e2e-cosign/bundle", d, cs.bundle(key, cs.statement(d)))
    d = images["rogue"]
    rogue = cs.new_key("p256")
    push.legacy_signature(
        "e2e-cosign/rogue", d, [cs.legacy_layer(rogue, cs.payload(f"{host}/e2e-cosign/rogue", d))]
    )
    return host, key, images


def cosign_policy(kube, namespace: str, host: str, key) -> None:
    kube.core.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "release-cosign"},
            "data": {"cosign.pub": base64.b64encode(cs.public_pem(key).encode()).decode()},
        },
    )
    kube.policy(
        namespace,
        [{"name": f"{host}/e2e-cosign/*", "policy": {"cosign": {"keys": [{"keySecret": "release-cosign"}]}}}],
        name="cosign",
    )


@pytest.mark.parametrize("name", ["legacy", "bundle"])
def test_a_cosign_signed_image_is_admitted_and_pinned(kube, world_namespace, signed, name):
    host, key, images = signed
    cosign_policy(kube, world_namespace, host, key)
    pod = kube.pod(world_namespace, f"{host}/e2e-cosign/{name}:v1")
    assert pod["spec"]["containers"][0]["image"] == f"{host}/e2e-cosign/{name}:v1@{images[name]}"


@pytest.mark.parametrize(
    ("name", "reason"), [("unsigned", "no signature found"), ("rogue", "does not verify")]
)
def test_unsigned_and_wrongly_signed_images_are_denied(kube, world_namespace, signed, name, reason):
    host, key, _ = signed
    cosign_policy(kube, world_namespace, host, key)
    message = denied(kube.pod, world_namespace, f"{host}/e2e-cosign/{name}:v1")
    assert "cosign key requirement 0" in message and reason in message, message
