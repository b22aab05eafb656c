"""ownerReferences: a child is approved without re-verification only for a real owner with the same images.

There is no controller-manager, so the tests create the ReplicaSets and Pods a controller would,
with ownerReferences to a real Deployment — and to forged or missing owners. The policy is
tightened after the owner was admitted, so "approved by owner" and "verified in full" give
different verdicts for the same image.
"""

from __future__ import annotations

import pytest

from tests.e2e.k8s import denied, eventually

pytestmark = pytest.mark.e2e

OLD = "registry.example.com/team/app:1.0"  # admitted when the Deployment was made, no longer allowed
NEW = "registry.example.com/team/app:2.0"  # allowed now


def owner_ref(obj: dict, uid: str | None = None, name: str | None = None) -> dict:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": name or obj["metadata"]["name"],
        "uid": uid or obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


@pytest.fixture
def deployment(kube, namespace, ostiary):
    kube.policy(namespace, [{"name": "registry.example.com/team/app"}], name="team")
    created = kube.deployment(namespace, OLD)
    created.setdefault("apiVersion", "apps/v1")
    created.setdefault("kind", "Deployment")
    # Tighten: from now on only tag 2.0 passes full verification.
    kube.policy(namespace, [{"name": "registry.example.com/team/app:2.0"}], name="team")
    return created


def test_a_replicaset_of_the_real_deployment_with_its_images_is_approved(
    kube, namespace, deployment, ostiary
):
    rs = kube.replicaset(namespace, OLD, owner=owner_ref(deployment))
    assert rs["spec"]["template"]["spec"]["containers"][0]["image"] == OLD
    approval = f"created by Deployment {namespace}/{deployment['metadata']['name']}"
    eventually(lambda: approval in ostiary.log(400))  # the decision log says why
    # ... and a Pod of that ReplicaSet too (the chain Deployment -> ReplicaSet -> Pod).
    rs.setdefault("apiVersion", "apps/v1")
    rs.setdefault("kind", "ReplicaSet")
    kube.pod(namespace, OLD, owner=owner_ref(rs))


def test_without_an_owner_the_same_image_is_verified_in_full_and_denied(kube, namespace, deployment):
    assert OLD in denied(kube.replicaset, namespace, OLD)


def test_a_forged_owner_uid_is_verified_in_full(kube, namespace, deployment):
    forged = owner_ref(deployment, uid="00000000-0000-0000-0000-000000000000")
    assert OLD in denied(kube.replicaset, namespace, OLD, owner=forged)
    assert OLD in denied(
        kube.pod, namespace, OLD, owner={**forged, "apiVersion": "apps/v1", "kind": "ReplicaSet"}
    )


def test_a_nonexistent_owner_is_verified_in_full(kube, namespace, deployment):
    ghost = owner_ref(deployment, name="no-such-deployment")
    assert OLD in denied(kube.replicaset, namespace, OLD, owner=ghost)


def test_an_image_the_owner_does_not_carry_is_verified_in_full(kube, namespace, deployment):
    other = "registry.example.com/team/app:1.1"
    assert other in denied(kube.replicaset, namespace, other, owner=owner_ref(deployment))
    # an extra container beside the owner's one is not in the template either
    assert OLD in denied(
        kube.replicaset,
        namespace,
        OLD,
        "registry.example.com/team/app:1.0-extra",
        owner=owner_ref(deployment),
    )


def test_a_child_with_a_newly_allowed_image_passes_on_its_own(kube, namespace, deployment):
    kube.replicaset(namespace, NEW, owner=owner_ref(deployment))
