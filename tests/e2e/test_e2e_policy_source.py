"""The cluster policy source end to end: reporting, Portieris groups, OPA losing its state, RBAC."""

from __future__ import annotations

import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from app.policies.bounds import DEFAULT_SCOPE_BYTES
from tests.e2e.k8s import (
    PORTIERIS_CRDS,
    denied,
    denied_soon,
    eventually,
    install_crds,
    load_documents,
    unique,
)

pytestmark = pytest.mark.e2e


def events_for(kube, namespace: str, name: str) -> list:
    return [e for e in kube.core.list_namespaced_event(namespace).items if e.involved_object.name == name]


def test_a_policy_that_cannot_be_translated_is_reported_on_the_resource(kube, namespace, ostiary):
    """The CRD accepts any non-empty name; `a b` is no image pattern, so it never reaches OPA."""
    kube.policy(namespace, [{"name": "registry.example.com/ok/*"}], name="good")
    bad = kube.policy(
        namespace, [{"name": "registry.example.com/ok/*"}, {"name": "a b"}], name="bad", wait=False
    )
    kube.wait_policy(namespace, "bad", bad["metadata"]["generation"], status="False")
    condition = kube.get_policy(namespace, "bad")["status"]["conditions"][0]
    assert condition["reason"] == "PolicyRejected" and "whitespace" in condition["message"]
    event = eventually(lambda: events_for(kube, namespace, "bad"))[0]
    assert event.type == "Warning" and event.reason == "PolicyRejected"
    assert event.involved_object.kind == "ImagePolicy"
    # The bad resource is not in force, and its namespace fails closed: every image is denied
    # naming it (never decided by the good one alone, or by the ClusterImagePolicies).
    message = denied(kube.pod, namespace, "registry.example.com/ok/app:1")
    assert f"ImagePolicy {namespace}/bad is refused by Ostiary" in message, message
    assert "every image in namespace" in condition["message"], condition
    # Fixing it puts it in force.
    fixed = kube.policy(namespace, [{"name": "registry.example.com/fixed/*"}], name="bad")
    assert fixed["metadata"]["generation"] == 2
    kube.pod(namespace, "registry.example.com/fixed/app:1")


def test_a_cluster_policy_event_is_recorded_in_default(kube, ostiary):
    name = unique("bad-cluster")
    try:
        obj = kube.policy(None, [{"name": "x y"}], name=name, wait=False)
        kube.wait_policy(None, name, obj["metadata"]["generation"], status="False")
        eventually(lambda: events_for(kube, "default", name))
    finally:
        kube.delete_policy(None, name)


def test_portieris_policies_are_enforced_when_their_crds_exist(kube, admin_client, namespace, ostiary):
    install_crds(admin_client, load_documents(PORTIERIS_CRDS))
    image = "registry.example.com/legacy/app:1"
    denied(kube.pod, namespace, image)
    kube.policy(
        namespace,
        [{"name": "registry.example.com/legacy/*"}],
        name="from-portieris",
        group_version="portieris.cloud.ibm.com/v1",
        wait=False,
    )
    # Discovery notices the new group within its interval (10 s), then the watch delivers.
    begin = time.monotonic()
    eventually(lambda: _admitted(kube, namespace, image), timeout=30)
    print(f"\nPortieris group picked up after {time.monotonic() - begin:.1f}s")

    other = unique("e2e-talk")
    kube.core.create_namespace({"metadata": {"name": other}})
    try:
        kube.policy(
            other,
            [{"name": "registry.example.com/talk/*"}],
            name="talk",
            group_version="securityenforcement.admission.cloud.ibm.com/v1beta1",
            wait=False,
        )
        eventually(lambda: _admitted(kube, other, "registry.example.com/talk/app:1"), timeout=30)
        # A Portieris document Ostiary cannot accept (a misspelt field the CRD kept) is reported.
        kube.policy(
            other,
            [{"name": "registry.example.com/talk/*", "policy": {"trsut": {}}}],
            name="typo",
            group_version="securityenforcement.admission.cloud.ibm.com/v1beta1",
            wait=False,
        )
        event = eventually(lambda: events_for(kube, other, "typo"))[0]
        assert "trsut" in event.message
    finally:
        kube.core.delete_namespace(other)


def _admitted(kube, namespace: str, image: str) -> bool:
    try:
        kube.pod(namespace, image, dry_run=True)
    except ApiException:
        return False
    return True


def test_opa_restarted_empty_gets_every_policy_back(kube, namespace, ostiary):
    kube.policy(namespace, [{"name": "registry.example.com/ok/*"}], name="ok")
    kube.pod(namespace, "registry.example.com/ok/app:1")
    ostiary.stop_opa()
    ostiary.start_opa()  # same port, no modules
    begin = time.monotonic()
    eventually(lambda: _admitted(kube, namespace, "registry.example.com/ok/app:1"), timeout=30)
    print(f"\nOPA state restored {time.monotonic() - begin:.1f}s after its restart")
    denied(kube.pod, namespace, "registry.example.com/not-ok/app:1")


def test_watches_recover_after_the_api_server_restarts(control_plane, kube, namespace, ostiary):
    kube.policy(namespace, [{"name": "registry.example.com/before/*"}], name="before")
    control_plane.restart_apiserver()
    begin = time.monotonic()
    # A change made after the restart reaches OPA only through a re-established watch (or relist).
    kube.policy(namespace, [{"name": "registry.example.com/after/*"}], name="after", wait=False)
    eventually(lambda: _admitted(kube, namespace, "registry.example.com/after/app:1"), timeout=60)
    print(f"\npolicy change after an API server restart in force after {time.monotonic() - begin:.1f}s")
    kube.pod(namespace, "registry.example.com/before/app:1")


def test_ostiary_runs_with_the_charts_least_privilege(control_plane, ostiary):
    """The identity Ostiary runs as (bound to the chart's ClusterRole) cannot list or change secrets."""
    ostiary_client = control_plane.api_client("ostiary")
    core = client.CoreV1Api(ostiary_client)
    for call in (
        lambda: core.list_secret_for_all_namespaces(),
        lambda: core.list_namespaced_secret("default"),
        lambda: core.create_namespaced_secret("default", {"metadata": {"name": "x"}}),
        lambda: core.list_namespaced_pod("default"),
    ):
        with pytest.raises(ApiException) as caught:
            call()
        assert caught.value.status == 403
    review = client.AuthorizationV1Api(control_plane.api_client("admin")).create_subject_access_review(
        {
            "spec": {
                "user": "system:serviceaccount:ostiary-system:ostiary",
                "resourceAttributes": {"verb": "get", "resource": "secrets", "namespace": "anywhere"},
            }
        }
    )
    assert review.status.allowed


def test_readiness_reports_the_cluster_source(ostiary):
    status, body = ostiary.readyz()
    assert status == 200, body


def _entries(count: int, team: str) -> list[dict]:
    return [{"name": f"registry{i % 20}.example.com/{team}{i}/app-*"} for i in range(count)]


def test_a_namespace_over_its_size_bound_refuses_its_larger_policy_and_fails_closed(kube, namespace, ostiary):
    """Two ImagePolicies of 500 entries: each fits alone, together they are over the default
    bound of one namespace's policy data (1216 KiB at 256Mi, app/policies/bounds.py). The larger is refused on its
    resource and never reaches OPA; its namespace is denied naming it; other namespaces keep theirs."""
    from tests.e2e.webhook import expected_module

    small_team, big_team = (
        "small-" + "s" * 200,
        "bigger-name-so-larger-" + "b" * 200,
    )  # see test_e2e_isolation
    kube.policy(namespace, _entries(499, small_team) + [{"name": "registry.example.com/ok/*"}], name="small")
    big = kube.policy(namespace, _entries(500, big_team), name="big", wait=False)
    kube.wait_policy(namespace, "big", big["metadata"]["generation"], status="False", timeout=60)
    condition = kube.get_policy(namespace, "big")["status"]["conditions"][0]
    assert condition["reason"] == "PolicyRejected", condition
    assert (
        f"over the bound of {DEFAULT_SCOPE_BYTES} bytes" in condition["message"]
        and "--max-namespace-policy-bytes" in (condition["message"])
    ), condition
    event = eventually(lambda: events_for(kube, namespace, "big"))[0]
    assert event.reason == "PolicyRejected"
    assert big_team not in (ostiary.opa_module(expected_module(big).id) or "")
    message = denied_soon(kube, namespace, "registry.example.com/ok/app:1")  # fail closed, naming it
    assert f"ImagePolicy {namespace}/big is refused by Ostiary" in message, message
    denied(kube.pod, namespace, f"registry3.example.com/{big_team}3/app-x:1")
    # another namespace is untouched
    other = unique("other")
    kube.core.create_namespace({"metadata": {"name": other}})
    try:
        kube.policy(other, [{"name": "registry.example.com/other/*"}], name="p")
        kube.pod(other, "registry.example.com/other/app:1")
    finally:
        kube.core.delete_namespace(other)


def test_the_validating_webhook_refuses_a_policy_over_the_entry_bound(kube, admin_client, namespace, ostiary):
    """The Portieris CRD (not Ostiary's) has no maxItems: the webhook says no, naming the bound."""
    install_crds(admin_client, load_documents(PORTIERIS_CRDS))
    with ostiary.validating():
        with pytest.raises(ApiException) as refused:
            kube.policy(
                namespace,
                _entries(501, "t"),
                name="too-many",
                group_version="portieris.cloud.ibm.com/v1",
                wait=False,
            )
    assert refused.value.status in (400, 422), refused.value
    assert "501 entries, over the bound of 500 entries per policy" in refused.value.body, refused.value.body
