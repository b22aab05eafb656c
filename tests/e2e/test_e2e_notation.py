"""Notation through the whole path: kube-apiserver -> Ostiary (serve --kube) -> the world's
docker-registry (fallback tag) -> OPA -> pinned object. Signatures are made in Python in notation's
shapes (tests/support/notation_signing.py); the CA certificate is a Secret in the workload's
namespace under an ImagePolicy there. The CRDs accept `policy.notation` with Notation's levels and
refuse others; at the audit level a signature under an untrusted CA is admitted with a Warning the
kube-apiserver hands to the client, where strict denies it."""

from __future__ import annotations

import base64
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e.k8s import denied
from tests.support import cosign_signing as cs
from tests.support import notation_signing as ns

pytestmark = [pytest.mark.e2e, pytest.mark.world]


@pytest.fixture(scope="module")
def signed(world_scenario):
    push = cs.Pusher(world_scenario.world.registry_url)
    host = world_scenario.registry_host
    chain = ns.Chain.create("rsa2048")
    other = ns.Chain.create("p256", org="Someone Else")
    images = {name: push.image(f"e2e-notation/{name}", "v1") for name in ("jws", "cose", "unsigned", "rogue")}

    def sign(name: str, envelope, media_type: str = ns.JWS) -> None:
        repo = f"e2e-notation/{name}"
        ns.push_signature(push, repo, images[name], envelope(ns.target(push, repo, images[name])), media_type)

    sign("jws", lambda t: ns.jws(chain, t))
    sign("cose", lambda t: ns.cose(chain, t), ns.COSE)
    sign("rogue", lambda t: ns.jws(other, t))
    return host, chain, images


def notation_policy(kube, namespace: str, host: str, chain: ns.Chain, level: str = "strict") -> None:
    try:
        kube.core.create_namespaced_secret(
            namespace,
            {
                "metadata": {"name": "release-notation"},
                "data": {"ca.crt": base64.b64encode(chain.root_pem().encode()).decode()},
            },
        )
    except ApiException as exc:  # a second policy in the same namespace keeps the Secret
        if exc.status != 409:
            raise
    kube.policy(
        namespace,
        [
            {
                "name": f"{host}/e2e-notation/*",
                "policy": {
                    "notation": {
                        "caSecret": "release-notation",
                        "trustedIdentities": ["x509.subject: C=US, ST=WA, O=Ostiary Made, CN=Made Signer"],
                        "signatureVerification": {"level": level},
                    }
                },
            }
        ],
        name="notation",
    )


@pytest.mark.parametrize("name", ["jws", "cose"])
def test_a_notation_signed_image_is_admitted_and_pinned(kube, world_namespace, signed, name):
    host, chain, images = signed
    notation_policy(kube, world_namespace, host, chain)
    pod = kube.pod(world_namespace, f"{host}/e2e-notation/{name}:v1")
    assert pod["spec"]["containers"][0]["image"] == f"{host}/e2e-notation/{name}:v1@{images[name]}"


@pytest.mark.parametrize(
    ("name", "reason"),
    [("unsigned", "no signature found"), ("rogue", "does not contain any trusted certificate")],
)
def test_unsigned_and_untrusted_images_are_denied(kube, world_namespace, signed, name, reason):
    host, chain, _ = signed
    notation_policy(kube, world_namespace, host, chain)
    message = denied(kube.pod, world_namespace, f"{host}/e2e-notation/{name}:v1")
    assert "notation trust policy" in message and reason in message, message


def _cluster_policy(notation: dict) -> dict:
    return {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ClusterImagePolicy",
        "metadata": {"name": f"p-{uuid.uuid4().hex[:8]}"},
        "spec": {"repositories": [{"name": "*", "policy": {"notation": notation}}]},
    }


def test_audit_admits_an_untrusted_signature_with_a_warning_where_strict_denies(
    kube, world_namespace, signed
):
    host, chain, images = signed
    notation_policy(kube, world_namespace, host, chain, level="audit")
    pod = kube.pod(world_namespace, f"{host}/e2e-notation/rogue:v1")
    warnings = kube.api_client.last_response.getheader("Warning") or ""
    assert "notation trust policy (level audit): authenticity failed and is only logged" in warnings, warnings
    assert "does not contain any trusted certificate" in warnings, warnings
    assert pod["spec"]["containers"][0]["image"] == f"{host}/e2e-notation/rogue:v1@{images['rogue']}"
    # integrity is still enforced at audit: no signature is a denial
    message = denied(kube.pod, world_namespace, f"{host}/e2e-notation/unsigned:v1")
    assert "notation trust policy" in message and "no signature found" in message, message
    notation_policy(kube, world_namespace, host, chain, level="strict")
    message = denied(kube.pod, world_namespace, f"{host}/e2e-notation/rogue:v1")
    assert "authenticity: the signature's certificate chain does not contain any trusted" in message, message


def test_the_crds_accept_notation_and_refuse_other_levels(admin_client, crds):
    api = client.CustomObjectsApi(admin_client)
    good = {"caSecret": "ca", "caSecretNamespace": "keys", "trustedIdentities": ["*"]}
    created = api.create_cluster_custom_object(
        "ostiary.dev", "v1", "clusterimagepolicies", _cluster_policy(good)
    )
    assert created["spec"]["repositories"][0]["policy"]["notation"]["caSecret"] == "ca"
    for level in ("strict", "permissive", "audit"):
        api.create_cluster_custom_object(
            "ostiary.dev",
            "v1",
            "clusterimagepolicies",
            _cluster_policy({**good, "signatureVerification": {"level": level}}),
        )
    for bad, field in [
        ({**good, "signatureVerification": {"level": "lenient"}}, "signatureVerification.level"),
        ({"caSecret": "ca"}, "trustedIdentities"),
        ({**good, "trustedIdentities": []}, "trustedIdentities"),
    ]:
        with pytest.raises(ApiException) as caught:
            api.create_cluster_custom_object(
                "ostiary.dev", "v1", "clusterimagepolicies", _cluster_policy(bad)
            )
        assert caught.value.status == 422 and field in caught.value.body, caught.value.body
