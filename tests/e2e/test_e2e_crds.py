"""The policy CRDs (helm/ostiary/crds/) reject malformed policies when they are applied."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.e2e

GROUP, VERSION = "ostiary.dev", "v1"


def cluster_policy(spec: dict) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterImagePolicy",
        "metadata": {"name": f"p-{uuid.uuid4().hex[:8]}"},
        "spec": spec,
    }


def create_cluster_policy(api_client, body: dict, **kwargs) -> dict:
    return client.CustomObjectsApi(api_client).create_cluster_custom_object(
        GROUP, VERSION, "clusterimagepolicies", body, **kwargs
    )


GOOD_SPEC = {
    "mode": "enforce",
    "repositories": [
        {"name": "docker.io/library/*"},
        {
            "name": "registry.example.com/team/*",
            "policy": {
                "trust": {
                    "enabled": True,
                    "trustServer": "https://notary.example.com:4443",
                    "signerSecrets": [{"name": "alice"}],
                },
                "mutateImage": True,
                "simple": {"requirements": [{"type": "signedBy", "keySecret": "k"}]},
                "cosign": {
                    "keys": [{"keySecret": "release-cosign", "keySecretNamespace": "keys"}],
                    "signedIdentity": {
                        "type": "matchExactRepository",
                        "dockerRepository": "registry.example.com/x",
                    },
                },
            },
        },
        {"name": "quay.io/*", "policy": None},
    ],
}


def test_a_well_formed_cluster_policy_is_accepted(admin_client, crds):
    created = create_cluster_policy(admin_client, cluster_policy(GOOD_SPEC))
    assert created["spec"]["repositories"][1]["policy"]["trust"]["signerSecrets"] == [{"name": "alice"}]
    assert created["spec"]["repositories"][1]["policy"]["simple"]["requirements"][0]["type"] == "signedBy"
    assert created["spec"]["repositories"][1]["policy"]["cosign"]["keys"][0]["keySecret"] == "release-cosign"


def test_a_well_formed_namespaced_policy_is_accepted(admin_client, crds, namespace):
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ImagePolicy",
        "metadata": {"name": "allow-hub"},
        "spec": {"repositories": [{"name": "*"}], "mode": "warn"},
    }
    created = client.CustomObjectsApi(admin_client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "imagepolicies", body
    )
    assert created["metadata"]["namespace"] == namespace


NOTATION = {"caSecret": "ca", "trustedIdentities": ["*"]}


def test_notation_levels_and_stores_are_accepted(admin_client, crds):
    for name, notation in (
        (
            "notation-audit",
            {**NOTATION, "trustStores": ["ca", "tsa"], "signatureVerification": {"level": "audit"}},
        ),
        ("notation-skip", {"signatureVerification": {"level": "skip"}}),
        (
            "notation-override",
            {**NOTATION, "signatureVerification": {"level": "strict", "override": {"revocation": "skip"}}},
        ),
    ):
        body = cluster_policy(
            {"repositories": [{"name": "registry.example/app", "policy": {"notation": notation}}]}
        )
        assert (
            create_cluster_policy(admin_client, body)["spec"]["repositories"][0]["policy"]["notation"]
            == notation
        ), name


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "spec.repositories"),
        ({"repositories": [{}]}, "spec.repositories[0].name"),
        ({"repositories": [{"name": ""}]}, "spec.repositories[0].name"),
        ({"repositories": [{"name": 7}]}, "spec.repositories[0].name"),
        ({"repositories": "nginx"}, "spec.repositories"),
        ({"mode": "audit", "repositories": [{"name": "*"}]}, "spec.mode"),
        (
            {"repositories": [{"name": "*", "policy": {"trust": {"enabled": "yes"}}}]},
            "spec.repositories[0].policy.trust.enabled",
        ),
        (
            {
                "repositories": [
                    {"name": "*", "policy": {"trust": {"trustServer": "http://notary.example.com"}}}
                ]
            },
            "spec.repositories[0].policy.trust.trustServer",
        ),
        (
            {"repositories": [{"name": "*", "policy": {"trust": {"trustServer": "https://"}}}]},
            "spec.repositories[0].policy.trust.trustServer",
        ),
        (
            {"repositories": [{"name": "*", "policy": {"trust": {"signerSecrets": [{}]}}}]},
            "spec.repositories[0].policy.trust.signerSecrets[0].name",
        ),
        (
            {"repositories": [{"name": "*", "policy": {"trust": {"signerSecrets": [{"name": ""}]}}}]},
            "spec.repositories[0].policy.trust.signerSecrets[0].name",
        ),
        (
            {"repositories": [{"name": "*", "policy": {"mutateImage": "no"}}]},
            "spec.repositories[0].policy.mutateImage",
        ),
        (
            {"repositories": [{"name": "*", "policy": {"simple": "signed"}}]},
            "spec.repositories[0].policy.simple",
        ),
        (
            {"repositories": [{"name": "*", "policy": {"cosign": {"keys": []}}}]},
            "spec.repositories[0].policy.cosign.keys",
        ),
        (
            {"repositories": [{"name": "*", "policy": {"cosign": {"keys": [{"keySecretNamespace": "k"}]}}}]},
            "spec.repositories[0].policy.cosign.keys[0].keySecret",
        ),
        (
            {
                "repositories": [
                    {
                        "name": "*",
                        "policy": {
                            "cosign": {"keys": [{"keySecret": "k"}], "signedIdentity": {"type": "exact"}}
                        },
                    }
                ]
            },
            "spec.repositories[0].policy.cosign.signedIdentity.type",
        ),
        (
            {
                "repositories": [
                    {
                        "name": "*",
                        "policy": {"notation": {**NOTATION, "signatureVerification": {"level": "lenient"}}},
                    }
                ]
            },
            "spec.repositories[0].policy.notation.signatureVerification.level",
        ),
        (
            {
                "repositories": [
                    {
                        "name": "*",
                        "policy": {
                            "notation": {
                                **NOTATION,
                                "signatureVerification": {
                                    "level": "strict",
                                    "override": {"revocation": "ignore"},
                                },
                            }
                        },
                    }
                ]
            },
            "spec.repositories[0].policy.notation.signatureVerification.override.revocation",
        ),
        (
            {"repositories": [{"name": "*", "policy": {"notation": {**NOTATION, "trustStores": ["x509"]}}}]},
            "spec.repositories[0].policy.notation.trustStores[0]",
        ),
        (  # only skip may leave out the trust store and the identities
            {
                "repositories": [
                    {"name": "*", "policy": {"notation": {"signatureVerification": {"level": "audit"}}}}
                ]
            },
            "spec.repositories[0].policy.notation",
        ),
    ],
)
def test_a_malformed_policy_is_refused_with_422_naming_the_field(admin_client, crds, spec, field):
    with pytest.raises(ApiException) as caught:
        create_cluster_policy(admin_client, cluster_policy(spec))
    assert caught.value.status == 422, caught.value.body
    assert field in caught.value.body


def test_a_policy_without_spec_is_refused(admin_client, crds):
    body = cluster_policy({})
    del body["spec"]
    with pytest.raises(ApiException) as caught:
        create_cluster_policy(admin_client, body)
    assert caught.value.status == 422


def test_a_misspelt_field_is_refused_under_strict_field_validation(admin_client, crds):
    """kubectl validates strictly by default: a typo such as `trsut` must not silently drop trust."""
    body = cluster_policy({"repositories": [{"name": "*", "policy": {"trsut": {"enabled": True}}}]})
    with pytest.raises(ApiException) as caught:
        create_cluster_policy(admin_client, body, field_validation="Strict")
    assert caught.value.status in (400, 422)
    assert "trsut" in caught.value.body


def test_a_policy_of_more_entries_than_the_bound_is_refused_by_the_crd(admin_client, crds):
    """app/policies/bounds.py MAX_ENTRIES is the CRDs' maxItems: the API server itself says no."""
    from app.policies.bounds import MAX_ENTRIES

    entries = [{"name": f"registry.example.com/team{i}/*"} for i in range(MAX_ENTRIES + 1)]
    with pytest.raises(ApiException) as caught:
        create_cluster_policy(admin_client, cluster_policy({"repositories": entries}))
    assert caught.value.status == 422, caught.value.body
    assert "spec.repositories" in caught.value.body and str(MAX_ENTRIES) in caught.value.body
    # exactly the bound is accepted (server-side dry run: nothing stays to weigh on other tests)
    create_cluster_policy(
        admin_client, cluster_policy({"repositories": entries[:MAX_ENTRIES]}), dry_run="All"
    )
