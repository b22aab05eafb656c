"""Ostiary as the admission webhook of a real kube-apiserver: policies from the API decide.

Most policies here have no trust requirement (allow or deny by pattern), so these tests do not
depend on a Notary server; test_e2e_trust.py has the signed-image case.
"""

from __future__ import annotations

import time

import pytest
from kubernetes.client.rest import ApiException

from tests.e2e.k8s import denied, eventually, unique

pytestmark = pytest.mark.e2e

ALLOWED = "registry.example.com/allowed/app:1.0"
OTHER_ALLOWED = "registry.example.com/allowed/sidecar:2.1"
DISALLOWED = "registry.example.com/forbidden/app:1.0"


@pytest.fixture
def ns(kube, namespace, ostiary):
    """A namespace whose ImagePolicy allows registry.example.com/allowed/* only."""
    kube.policy(namespace, [{"name": "registry.example.com/allowed/*"}], name="allow-allowed")
    return namespace


def test_a_pod_with_an_allowed_image_is_admitted(kube, ns):
    pod = kube.pod(ns, ALLOWED)
    assert pod["spec"]["containers"][0]["image"] == ALLOWED  # no trust policy: nothing to pin
    assert kube.core.read_namespaced_pod(pod["metadata"]["name"], ns)


def test_a_pod_with_a_disallowed_image_is_denied_naming_it(kube, ns):
    message = denied(kube.pod, ns, ALLOWED, DISALLOWED)
    assert DISALLOWED in message


def test_an_init_container_counts(kube, ns):
    assert DISALLOWED in denied(kube.pod, ns, ALLOWED, init=(DISALLOWED,))


@pytest.mark.parametrize(
    "kind",
    ["deployment", "replicaset", "statefulset", "daemonset", "job", "cronjob", "replication_controller"],
)
def test_every_workload_kind_is_checked(kube, ns, kind):
    create = getattr(kube, kind)
    created = create(ns, ALLOWED, OTHER_ALLOWED)
    assert created["metadata"]["uid"]
    assert DISALLOWED in denied(create, ns, ALLOWED, DISALLOWED)


def test_a_cronjob_init_container_counts(kube, ns):
    assert DISALLOWED in denied(kube.cronjob, ns, ALLOWED, init=(DISALLOWED,))


def test_an_invalid_image_name_is_denied_as_invalid(kube, ns):
    message = denied(kube.pod, ns, "registry.example.com/allowed/App:1")
    assert "invalid" in message.lower()


def test_a_namespace_without_any_policy_denies(kube, namespace, ostiary):
    """No ImagePolicy here and no ClusterImagePolicy matching: deny (fail closed)."""
    assert "registry.example.com/nothing/x:1" in denied(
        kube.pod, namespace, "registry.example.com/nothing/x:1"
    )


def test_policy_changes_apply_to_the_next_admission(kube, ns):
    denied(kube.pod, ns, DISALLOWED)
    begin = time.monotonic()
    kube.policy(
        ns,
        [{"name": "registry.example.com/allowed/*"}, {"name": "registry.example.com/forbidden/*"}],
        name="allow-allowed",
    )  # returns once every Ostiary's OPA holds the new module
    print(f"\npolicy change in force in OPA {time.monotonic() - begin:.2f}s after the API call")
    pod = kube.pod(ns, DISALLOWED)
    # Tightened again: an UPDATE of the unchanged pod is checked too, and denied.
    kube.policy(ns, [{"name": "registry.example.com/allowed/*"}], name="allow-allowed")
    message = denied(
        kube.core.patch_namespaced_pod,
        pod["metadata"]["name"],
        ns,
        {"metadata": {"labels": {"touched": "yes"}}},
    )
    assert DISALLOWED in message


def test_deleting_the_last_namespace_policy_falls_back_to_cluster_policies(kube, ns):
    kube.pod(ns, ALLOWED)
    kube.delete_policy(ns, "allow-allowed")
    eventually(lambda: _is_denied(kube, ns, ALLOWED))


def _is_denied(kube, ns, image) -> bool:
    try:
        kube.pod(ns, image, dry_run=True)
    except ApiException as exc:
        return exc.status in (400, 403)
    return False


def test_a_namespace_policy_overrides_the_cluster_policy(kube, admin_client, ostiary):
    from kubernetes import client

    core = client.CoreV1Api(admin_client)
    plain, own = unique("e2e-plain"), unique("e2e-own")
    for name in (plain, own):
        core.create_namespace({"metadata": {"name": name}})
    cluster_name = unique("cluster")
    try:
        kube.policy(None, [{"name": "registry.example.com/cluster-ok/*"}], name=cluster_name)
        kube.policy(own, [{"name": "registry.example.com/ns-ok/*"}], name="own")
        # No ImagePolicy in `plain`: the ClusterImagePolicy applies.
        kube.pod(plain, "registry.example.com/cluster-ok/app:1")
        denied(kube.pod, plain, "registry.example.com/ns-ok/app:1")
        # `own` has an ImagePolicy: only it applies, the cluster policy does not.
        kube.pod(own, "registry.example.com/ns-ok/app:1")
        denied(kube.pod, own, "registry.example.com/cluster-ok/app:1")
    finally:
        kube.delete_policy(None, cluster_name)
        for name in (plain, own):
            core.delete_namespace(name)


def test_warn_mode_admits_a_violation_with_a_warning(kube, namespace, ostiary):
    """The entry matches but its trust requirement fails (no Notary answers on port 1): warn, not deny."""
    kube.policy(
        namespace,
        [
            {
                "name": "registry.example.com/forbidden/*",
                "policy": {"trust": {"enabled": True, "trustServer": "https://127.0.0.1:1"}},
            }
        ],
        name="warn-only",
        mode="warn",
    )
    kube.core.create_namespaced_pod(
        namespace,
        {"metadata": {"name": "warned"}, "spec": {"containers": [{"name": "c", "image": DISALLOWED}]}},
    )
    warnings = kube.api_client.last_response.getheader("Warning") or ""
    assert DISALLOWED in warnings, warnings
    stored = kube.core.read_namespaced_pod("warned", namespace)
    assert stored.spec.containers[0].image == DISALLOWED  # nothing verified: nothing pinned


def test_server_side_dry_run_gives_the_same_verdict_and_stores_nothing(kube, ns):
    assert DISALLOWED in denied(kube.pod, ns, DISALLOWED, name="dry-denied", dry_run=True)
    kube.pod(ns, ALLOWED, name="dry-admitted", dry_run=True)
    for name in ("dry-denied", "dry-admitted"):
        with pytest.raises(ApiException) as caught:
            kube.core.read_namespaced_pod(name, ns)
        assert caught.value.status == 404


def test_an_ephemeral_container_with_a_disallowed_image_is_denied(kube, ns):
    pod = kube.pod(ns, ALLOWED)
    name = pod["metadata"]["name"]

    def add(image: str, container: str):
        return kube.core.patch_namespaced_pod_ephemeralcontainers(
            name,
            ns,
            {
                "spec": {
                    "ephemeralContainers": [{"name": container, "image": image, "targetContainerName": "c0"}]
                }
            },
        )

    assert DISALLOWED in denied(add, DISALLOWED, "debug-bad")
    add(OTHER_ALLOWED, "debug-ok")
    stored = kube.core.read_namespaced_pod(name, ns)
    assert [c.image for c in stored.spec.ephemeral_containers] == [OTHER_ALLOWED]
