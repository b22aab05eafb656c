"""The whole decision path with the real OPA: extraction -> plan -> decision -> response."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.opa.client import OpaClient
from app.policies.model import RegoModule

from .helpers import decide, load, pod_spec, review, reviewer, verified_facts, workload

CLUSTER = """
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: cluster}
spec:
  repositories:
    - name: "docker.io/library/*"
    - name: "*.trusted.io/org/*"
    - name: "icr.io/team/*-debug"
    - name: "registry.example.com/signed/*"
      policy:
        trust: {enabled: true, trustServer: "https://notary.example.com"}
    - name: "quay.io/*"
      policy:
        trust: {enabled: true}
"""


@pytest.fixture()
def opa(local_opa):
    return OpaClient(local_opa.url)


@pytest.fixture()
def cluster(opa):
    return reviewer(opa, load(opa, CLUSTER))


def pod(*images, **kw):
    return review(workload("Pod", pod_spec(*images)), **kw)


def test_official_image_matches_normalized_policy(cluster):
    # `nginx` is docker.io/library/nginx: it cannot slip past a docker.io/library/* entry, and is admitted by it.
    assert decide(cluster, pod("nginx"))["allowed"] is True
    assert decide(cluster, pod("docker.io/library/nginx:1.25"))["allowed"] is True


def test_host_embedding_does_not_match_a_host_wildcard(cluster):
    response = decide(cluster, pod("evil.io/x.trusted.io/org/app"))
    assert response["allowed"] is False
    assert "evil.io/x.trusted.io/org/app" in response["status"]["message"]
    assert decide(cluster, pod("a.trusted.io/org/app:1"))["allowed"] is True


def test_wildcard_in_name_never_runs_into_the_tag(cluster):
    assert decide(cluster, pod("icr.io/team/app:1-debug"))["allowed"] is False
    assert decide(cluster, pod("icr.io/team/app-debug:1"))["allowed"] is True


def test_unmatched_image_is_denied_naming_it(cluster):
    response = decide(cluster, pod("ghcr.io/someone/tool:1"))
    assert response["allowed"] is False
    assert "ghcr.io/someone/tool:1" in response["status"]["message"]


def test_invalid_reference_is_denied_as_invalid(cluster):
    response = decide(cluster, pod("NGINX:latest"))
    assert response["allowed"] is False and "invalid" in response["status"]["message"]


def test_trust_enabled_without_facts_denies_never_allows(cluster):
    response = decide(cluster, pod("registry.example.com/signed/app:1"))
    assert response["allowed"] is False
    assert "trust data unavailable" in response["status"]["message"]


def test_no_trust_server_for_registry_is_a_clear_denial(opa):
    rv = reviewer(
        opa,
        load(
            opa,
            """
      apiVersion: ostiary.dev/v1
      kind: ClusterImagePolicy
      metadata: {name: c}
      spec: {repositories: [{name: "ghcr.io/*", policy: {trust: {enabled: true}}}]}
    """,
        ),
    )
    response = decide(rv, pod("ghcr.io/a/b:1"))
    assert response["allowed"] is False and "trustServer" in response["status"]["message"]


@pytest.mark.parametrize(
    "kind",
    [
        "Pod",
        "Deployment",
        "ReplicaSet",
        "ReplicationController",
        "DaemonSet",
        "StatefulSet",
        "Job",
        "CronJob",
    ],
)
@pytest.mark.parametrize("container_kind", ["containers", "initContainers"])
def test_every_workload_kind_and_container_list_is_checked(cluster, kind, container_kind):
    spec = pod_spec("nginx", "ghcr.io/bad/image:1", kind=container_kind)
    response = decide(cluster, review(workload(kind, spec)))
    assert response["allowed"] is False
    assert f"/{container_kind}/1/image" in response["status"]["message"]


def test_ephemeral_container_subresource_is_checked(cluster):
    obj = workload(
        "Pod",
        {
            "containers": [{"name": "a", "image": "nginx"}],
            "ephemeralContainers": [{"name": "dbg", "image": "ghcr.io/bad/debug"}],
        },
    )
    response = decide(cluster, review(obj, operation="UPDATE", sub_resource="ephemeralcontainers"))
    assert response["allowed"] is False and "ephemeralContainers/0" in response["status"]["message"]


def test_update_is_checked_against_the_current_policy(opa):
    obj = workload("Deployment", pod_spec("ghcr.io/team/app:1"))
    loose = reviewer(
        opa,
        load(
            opa,
            "apiVersion: ostiary.dev/v1\nkind: ClusterImagePolicy\nmetadata: {name: c}\nspec: {repositories: [{name: '*'}]}\n",
        ),
    )
    assert decide(loose, review(obj, operation="UPDATE"))["allowed"] is True
    tight = reviewer(opa, load(opa, CLUSTER))
    assert decide(tight, review(obj, operation="UPDATE"))["allowed"] is False


def test_delete_is_not_checked(cluster):
    assert decide(cluster, pod("ghcr.io/x/y", operation="DELETE"))["allowed"] is True


def test_namespace_image_policy_is_exclusive(opa):
    rv = reviewer(
        opa,
        load(
            opa,
            CLUSTER
            + """
---
apiVersion: portieris.cloud.ibm.com/v1
kind: ImagePolicy
metadata: {name: team, namespace: team}
spec:
  repositories:
    - name: "ghcr.io/team/*"
""",
        ),
    )
    # the cluster policy would allow nginx, but namespace team has its own ImagePolicy
    assert decide(rv, pod("nginx", namespace="team"))["allowed"] is False
    assert decide(rv, pod("ghcr.io/team/app", namespace="team"))["allowed"] is True
    # other namespaces are not affected
    assert decide(rv, pod("nginx", namespace="other"))["allowed"] is True
    assert decide(rv, pod("ghcr.io/team/app", namespace="other"))["allowed"] is False


def test_no_policies_at_all_denies(opa):
    rv = reviewer(opa, load(opa, ""))
    assert decide(rv, pod("nginx"))["allowed"] is False


def test_dry_run_gets_the_same_verdict(cluster):
    assert decide(cluster, pod("ghcr.io/x/y", dry_run=True))["allowed"] is False
    assert decide(cluster, pod("nginx", dry_run=True))["allowed"] is True


def test_custom_rules_deny_and_warn(opa):
    custom = RegoModule(
        "ostiary/custom/labels",
        "",
        """package ostiary.custom.labels

import rego.v1

deny contains msg if {
	not input.object.metadata.labels.team
	msg := "every workload needs a team label"
}

warn contains "latest tags are discouraged" if {
	some img in input.images
	img.ref.tag == "latest"
}
""",
    )
    rv = reviewer(opa, load(opa, CLUSTER, custom=[custom]))
    denied = decide(rv, pod("nginx:1"))
    assert denied["allowed"] is False and "every workload needs a team label" in denied["status"]["message"]
    obj = workload("Pod", pod_spec("nginx"))
    obj["metadata"]["labels"] = {"team": "a"}
    allowed = decide(rv, review(obj))
    assert allowed["allowed"] is True
    assert any("latest tags are discouraged" in w for w in allowed["warnings"])


def test_warn_mode_turns_violations_into_warnings(opa):
    rv = reviewer(
        opa,
        load(
            opa,
            """
      apiVersion: ostiary.dev/v1
      kind: ClusterImagePolicy
      metadata: {name: c}
      spec:
        mode: warn
        repositories: [{name: "quay.io/*", policy: {trust: {enabled: true}}}]
    """,
        ),
    )
    response = decide(rv, pod("quay.io/a/b:1"))
    assert response["allowed"] is True
    assert any("trust data unavailable" in w for w in response["warnings"])
    assert "patch" not in response


class _Silent(BaseHTTPRequestHandler):
    def do_POST(self):
        time.sleep(30)  # far past any bound below: what is ruled out is waiting for it

    def log_message(self, *args):
        pass


def test_opa_that_never_answers_denies_within_the_budget(cluster):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Silent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cluster.opa = OpaClient(f"http://127.0.0.1:{server.server_address[1]}")
        cluster.budget = 1.0
        started = time.monotonic()
        response = decide(cluster, pod("nginx"))
        elapsed = time.monotonic() - started
    finally:
        server.shutdown()
    assert response["allowed"] is False and "policy engine failed" in response["status"]["message"]
    assert elapsed < 4.0  # the budget (1 s) plus slack for a loaded machine; OPA would answer after 30 s


def test_opa_down_denies(cluster):
    cluster.opa = OpaClient("http://127.0.0.1:9")
    response = decide(cluster, pod("nginx"))
    assert response["allowed"] is False and "unreachable" in response["status"]["message"]


def test_opa_without_ostiary_modules_denies(opa):
    load(opa, "")
    from app.policies.sync import PolicySync

    PolicySync(opa).resync()  # empty OPA: the queries are undefined
    response = decide(reviewer(opa), pod("nginx"))
    assert response["allowed"] is False and "undefined" in response["status"]["message"]


def test_malformed_review_is_denied_or_refused(cluster):
    from app.admission.extract import BadRequest

    with pytest.raises(BadRequest):
        cluster.review({"request": {}})
    body = pod("nginx")
    body["request"]["object"]["spec"]["containers"] = "nginx"
    assert decide(cluster, body)["allowed"] is False


def _patch(response):
    return json.loads(base64.b64decode(response["patch"])) if "patch" in response else []


class _Facts:
    """Trust facts as the verifier reports them, to test how the decision composes them.
    The verifier itself is tested against real Notary data in tests/trust and tests/world."""

    def __init__(self, released):
        self.released = released

    def gather(self, requests, deadline):
        return [verified_facts(r, self.released) for r in requests]


def test_admitted_signed_images_are_pinned_and_pinned_ones_are_left_alone(cluster):
    digest = "sha256:" + "d" * 64
    cluster.trust = _Facts(digest)
    response = decide(cluster, review(workload("Deployment", pod_spec("quay.io/org/app:1.0", "nginx"))))
    assert response["allowed"] is True
    assert _patch(response) == [
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/image",
            "value": f"quay.io/org/app:1.0@{digest}",
        },
        {
            "op": "add",
            "path": "/metadata/annotations",  # the original, on the Deployment itself
            "value": {"ostiary.dev/original-images": '{"containers/c0":"quay.io/org/app:1.0"}'},
        },
    ]
    again = decide(cluster, pod(f"quay.io/org/app:1.0@{digest}"))
    assert again["allowed"] is True and "patch" not in again
    wrong = decide(cluster, pod("quay.io/org/app:1.0@sha256:" + "e" * 64))
    assert wrong["allowed"] is False and "not the signed digest" in wrong["status"]["message"]


def test_kinds_without_a_pod_spec_are_allowed_with_a_warning(cluster):
    body = review(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"image": "evil.io/x"}}
    )
    response = decide(cluster, body)
    assert response["allowed"] is True
    assert any("does not check kind 'ConfigMap'" in w for w in response["warnings"])


class _OwnerAlwaysMatches:
    """The attacker's best case at the owner check (app/kube/owners.py): the ownerReference names a
    real owner whose template has the same images, so the check says yes."""

    def __init__(self) -> None:
        self.asked = 0

    def approved_by_owner(self, obj, namespace, images):
        self.asked += 1
        return f"created by ReplicaSet {namespace}/web (uid 1234), whose pod template has the same images"


class _FactsAndFlags(_Facts):
    """Facts as the verifier reports them, remembering the requests (owner_proved) it was given."""

    def __init__(self, released):
        super().__init__(released)
        self.requests = []

    def gather(self, requests, deadline):
        self.requests.extend(requests)
        return super().gather(requests, deadline)


def test_an_owner_match_never_spares_the_decision_or_custom_rules(opa):
    custom = RegoModule(
        "ostiary/custom/privileged",
        "",
        """package ostiary.custom.privileged

import rego.v1

deny contains msg if {
	some c in input.object.spec.containers
	c.securityContext.privileged == true
	msg := sprintf("container %s may not be privileged", [c.name])
}
""",
    )
    owners = _OwnerAlwaysMatches()
    rv = reviewer(opa, load(opa, CLUSTER, custom=[custom]), owners=owners)
    obj = workload("Pod", pod_spec("nginx:1"))
    obj["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    obj["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "1234", "controller": True}
    ]
    answer = decide(rv, review(obj))
    assert owners.asked == 1
    assert answer["allowed"] is False
    assert "container c0 may not be privileged" in answer["status"]["message"]
    # an image the policy does not allow is denied too, owner or not
    assert decide(rv, pod("ghcr.io/x/y"))["allowed"] is False
    # with trust enabled, the owner only marks the trust requests; the decision proves the facts
    digest = "sha256:" + "d" * 64
    rv.trust = _FactsAndFlags(digest)
    signed = decide(rv, review(workload("Pod", pod_spec("quay.io/org/app:1.0"))))
    assert signed["allowed"] is True
    assert [r.owner_proved for r in rv.trust.requests] == [True]
