"""ownerReferences: a real owner with the same images spares at most the trust fetch, never the decision.

There is no controller-manager, so the tests create the ReplicaSets and Pods a controller would,
with ownerReferences to a real Deployment — and to forged or missing owners. The policy is
tightened after the owner was admitted: the child is decided under the policy in force now, owner
or not. And an attacker who copies the uid of a real ReplicaSet of its namespace into the
ownerReferences of a privileged, hostPath or unlabelled Pod meets the custom rules exactly as
without the reference.
"""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from tests.e2e.k8s import denied, eventually, template, unique
from tests.e2e.webhook import INSTANCE_LABEL, Ostiary, running

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


def test_a_child_of_the_real_deployment_is_decided_under_the_policy_in_force(
    kube, namespace, deployment, ostiary
):
    """The owner admitted OLD under the old policy; its children are decided now, like any object."""
    assert OLD in denied(kube.replicaset, namespace, OLD, owner=owner_ref(deployment))
    approval = f"created by Deployment {namespace}/{deployment['metadata']['name']}"
    eventually(lambda: approval in ostiary.log(400))  # the owner was recognised, and still decided
    rs = kube.replicaset(namespace, NEW, owner=owner_ref(deployment))
    rs.setdefault("apiVersion", "apps/v1")
    rs.setdefault("kind", "ReplicaSet")
    kube.pod(namespace, NEW, owner=owner_ref(rs))  # the chain Deployment -> ReplicaSet -> Pod


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


# ---- the attacker's side: an ownerReference copied from a real ReplicaSet -----------------------

GUARDED = "guarded"
POD_RULES = """package ostiary.custom.podrules

pod_specs contains input.object.spec if input.request.kind.kind == "Pod"

pod_specs contains input.object.spec.template.spec if input.request.kind.kind == "ReplicaSet"

deny contains msg if {
\tsome spec in pod_specs
\tsome c in spec.containers
\tc.securityContext.privileged == true
\tmsg := sprintf("container %s may not be privileged", [c.name])
}

deny contains msg if {
\tsome spec in pod_specs
\tsome v in spec.volumes
\tv.hostPath
\tmsg := sprintf("volume %s may not be a hostPath", [v.name])
}

deny contains "a Pod must carry the label app" if {
\tinput.request.kind.kind == "Pod"
\tnot input.object.metadata.labels.app
}
"""


@pytest.fixture(scope="module")
def guarded(control_plane, admin_client, crds, ostiary, tmp_path_factory):
    """An Ostiary with a custom module denying privileged, hostPath and unlabelled Pods."""
    rego_dir = tmp_path_factory.mktemp("rego-guarded")
    (rego_dir / "podrules.rego").write_text(POD_RULES)
    instance = Ostiary(
        control_plane,
        GUARDED,
        tmp_path_factory.mktemp("ostiary-guarded"),
        select_instance=True,
        rego_dir=str(rego_dir),
    )
    with running(instance):
        yield instance


@pytest.fixture
def tenant(admin_client, guarded, kube) -> str:
    name = f"e2e-guarded-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(admin_client).create_namespace(
        {"metadata": {"name": name, "labels": {INSTANCE_LABEL: GUARDED}}}
    )
    kube.policy(name, [{"name": "registry.example.com/team/app"}], name="team")
    yield name
    client.CoreV1Api(admin_client).delete_namespace(name)


def _hostile_pod(name: str, variant: str, owner: dict | None) -> dict:
    container: dict = {"name": "c0", "image": OLD}
    spec: dict = {"containers": [container]}
    labels: dict | None = {"app": "e2e"}
    if variant == "privileged":
        container["securityContext"] = {"privileged": True}
    elif variant == "hostPath":
        spec["volumes"] = [{"name": "root", "hostPath": {"path": "/"}}]
        container["volumeMounts"] = [{"name": "root", "mountPath": "/host"}]
    else:
        labels = None
    metadata: dict = {"name": name}
    if labels:
        metadata["labels"] = labels
    if owner:
        metadata["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


@pytest.mark.parametrize("variant", ["privileged", "hostPath", "unlabelled"])
def test_a_copied_owner_reference_does_not_spare_the_custom_rules(kube, tenant, guarded, variant):
    rs = kube.replicaset(tenant, OLD)  # a real ReplicaSet of the tenant's namespace, same image
    rs.setdefault("apiVersion", "apps/v1")
    rs.setdefault("kind", "ReplicaSet")
    name = unique("pod")
    plain = denied(kube.core.create_namespaced_pod, tenant, _hostile_pod(name, variant, None))
    claimed = denied(kube.core.create_namespaced_pod, tenant, _hostile_pod(name, variant, owner_ref(rs)))
    assert "podrules" in plain
    assert claimed == plain  # exactly the same denial as without the reference
    # the owner was real and matched: the decision ran regardless
    eventually(lambda: f"created by ReplicaSet {tenant}/{rs['metadata']['name']}" in guarded.log(400))
    # and the same Pod without what the rules forbid is admitted, with or without the reference
    kube.pod(tenant, OLD, owner=owner_ref(rs))


def test_a_privileged_template_under_a_real_deployment_is_denied(kube, tenant):
    deployment = kube.deployment(tenant, OLD)
    deployment.setdefault("apiVersion", "apps/v1")
    deployment.setdefault("kind", "Deployment")
    body = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": unique("rs"), "ownerReferences": [owner_ref(deployment)]},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "e2e"}},
            "template": template(OLD),
        },
    }
    body["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    message = denied(kube.apps.create_namespaced_replica_set, tenant, body)
    assert "may not be privileged" in message
