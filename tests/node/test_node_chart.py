"""The chart as users run it: `helm install` of helm/ostiary (only image names changed) onto a real
kubelet, and admissions through the webhook's own pods.

Cluster mode (CRDs): a signed Deployment runs pinned to its signed digest with its tag kept, an
unsigned image and a custom rule are refused with their reasons, a policy change is obeyed, the
pods write TrustRecords, killed webhook pods fail closed and their replacements admit again,
`helm upgrade` rolls the pods without admitting what policy forbids, `helm uninstall` removes both
webhook configurations. Directory mode (ConfigMaps): the pods start (the crash-loop of issue 19),
admit and pin, keep first-use records across a container restart. Each install runs under the
restricted Pod Security level.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import uuid

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e.k8s import eventually
from tests.node.conftest import CHART, helm, image_values
from tests.support import pki, serve

pytestmark = pytest.mark.node

RELEASE = "ostiary"
FULLNAME = "ostiary"  # the chart's fullname when the release is called like the chart


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def restricted_namespace(api, name: str) -> str:
    client.CoreV1Api(api).create_namespace(
        {"metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    return name


def workload_namespace(api) -> str:
    name = unique("work")
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


def deployment(name: str, image: str, labels: dict | None = None, replicas: int = 1) -> dict:
    labels = {"app": name, **(labels or {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "app", "image": image, "imagePullPolicy": "IfNotPresent"}],
                    "terminationGracePeriodSeconds": 0,
                    "automountServiceAccountToken": False,
                },
            },
        },
    }


def refusal(call, *args, **kwargs) -> str:
    """The API server's refusal of a call the webhook must not let through (denied, or failed closed)."""
    try:
        call(*args, **kwargs)
    except ApiException as exc:
        assert exc.status in (400, 403, 500), f"unexpected status {exc.status}: {exc.body}"
        return json.loads(exc.body).get("message", exc.body)
    raise AssertionError("the request was admitted")


def running_pods(api, namespace: str, app: str) -> list:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [
        p
        for p in pods
        if p.status.phase == "Running" and all(c.ready for c in p.status.container_statuses or [])
    ]


def webhook_pods(api, namespace: str) -> list:
    """The Deployment's pods, by its own selector (hook Jobs and the `helm test` Pod are not among them)."""
    selector = (
        client.AppsV1Api(api).read_namespaced_deployment(FULLNAME, namespace).spec.selector.match_labels
    )
    labels = ",".join(f"{k}={v}" for k, v in selector.items())
    return client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=labels).items


def ready_webhook_pods(api, namespace: str) -> list:
    return [
        p
        for p in webhook_pods(api, namespace)
        if p.metadata.deletion_timestamp is None
        and p.status.phase == "Running"
        and all(c.ready for c in p.status.container_statuses or [])
    ]


def webhook_configurations(api) -> set[str]:
    reg = client.AdmissionregistrationV1Api(api)
    return {c.metadata.name for c in reg.list_mutating_webhook_configuration().items} | {
        c.metadata.name for c in reg.list_validating_webhook_configuration().items
    }


def registered_webhooks(api, name: str = FULLNAME) -> int:
    """How many webhooks the release's mutating configuration carries (0: nothing is called)."""
    try:
        config = client.AdmissionregistrationV1Api(api).read_mutating_webhook_configuration(name)
    except ApiException as exc:
        if exc.status == 404:
            return 0
        raise
    return len(config.webhooks or [])


def cluster_policy(name: str, registry: str, notary_url: str, repo: str = "node/*") -> dict:
    """A ClusterImagePolicy requiring Notary trust from `notary_url` for registry/repo."""
    trust = {"trust": {"enabled": True, "trustServer": notary_url}}
    return serve.cluster_policy(name, [{"name": f"{registry}/{repo}", "policy": trust}])


CUSTOM_RULE = """package ostiary.custom.nodetest

import rego.v1

deny contains msg if {
	input.object.metadata.labels.forbidden == "yes"
	msg := "the label forbidden=yes is not allowed here (custom rule nodetest)"
}
"""


def install(node, verb: str, namespace: str, name: str, values: dict, *flags: str, check: bool = True):
    """`helm install|upgrade` of the repository's chart as a user runs it: only the image names
    changed (image_values), the rest from `values` (written to <workdir>/<name>.yaml)."""
    path = node.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return helm(
        node,
        verb,
        RELEASE,
        str(CHART),
        "-n",
        namespace,
        "--timeout",
        "4m",
        "-f",
        str(path),
        *flags,
        *image_values(),
        check=check,
    )


# ---------------------------------------------------------------------------------------- cluster mode


@pytest.fixture(scope="module")
def cluster_release(node, node_world, node_images):
    api = node.api_client()
    namespace = restricted_namespace(api, "ostiary-system")
    values = {
        "replicaCount": 2,
        "notaryCABundle": open(node_world.ca_file).read(),
        "customRego": {"nodetest.rego": CUSTOM_RULE},
        "policies": [cluster_policy("node", node_world.registry_host, node_world.notary_url)],
    }
    started = time.monotonic()
    install(node, "install", namespace, "cluster", values, "--wait")
    print(f"\nhelm install --wait (cluster mode, 2 replicas): {time.monotonic() - started:.1f}s")
    yield {"api": api, "namespace": namespace, "values": values}
    helm(node, "uninstall", RELEASE, "-n", namespace, "--wait", check=False)
    with contextlib.suppress(ApiException):
        client.CoreV1Api(api).delete_namespace(namespace)


def test_the_chart_runs_two_ready_replicas_under_the_restricted_level(node, cluster_release):
    api, namespace = cluster_release["api"], cluster_release["namespace"]
    pods = ready_webhook_pods(api, namespace)
    assert len(pods) == 2, [p.metadata.name for p in webhook_pods(api, namespace)]
    for pod in pods:
        assert {c.name for c in pod.spec.containers} >= {"ostiary", "opa"}
        assert all(c.restart_count == 0 for c in pod.status.container_statuses), pod.status.container_statuses
    pdb = client.PolicyV1Api(api).list_namespaced_pod_disruption_budget(namespace).items
    assert [p.spec.min_available for p in pdb] == [1]
    assert registered_webhooks(api) >= 1  # registered by the hook once the pods were ready


def test_helm_test_reaches_the_webhook_through_its_service(node, cluster_release):
    done = helm(node, "test", RELEASE, "-n", cluster_release["namespace"], "--timeout", "3m")
    assert "Phase:          Succeeded" in done.stdout or "Succeeded" in done.stdout, done.stdout


def test_a_signed_deployment_runs_pinned_to_its_signed_digest(node, cluster_release, node_images):
    api = cluster_release["api"]
    ns = workload_namespace(api)
    client.AppsV1Api(api).create_namespaced_deployment(ns, deployment("signed", node_images.signed))
    pods = eventually(lambda: running_pods(api, ns, "signed"), 90, what="the signed Deployment's pod Running")
    image = pods[0].spec.containers[0].image
    assert image == f"{node_images.signed}@{node_images.signed_digest}", image  # tag kept, digest pinned
    status = pods[0].status.container_statuses[0]
    assert status.image_id.endswith(node_images.signed_digest), status.image_id  # what the node really ran
    stored = client.AppsV1Api(api).read_namespaced_deployment("signed", ns)
    assert stored.spec.template.spec.containers[0].image == image


def test_an_unsigned_image_is_refused_with_the_reason(cluster_release, node_images):
    api = cluster_release["api"]
    ns = workload_namespace(api)
    message = refusal(
        client.AppsV1Api(api).create_namespaced_deployment, ns, deployment("unsigned", node_images.unsigned)
    )
    assert "denied" in message and node_images.unsigned in message, message
    bare_pod = {
        "metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "c", "image": node_images.unsigned}]},
    }
    message = refusal(client.CoreV1Api(api).create_namespaced_pod, ns, bare_pod)
    assert node_images.unsigned in message, message


def test_an_unlisted_image_is_refused(cluster_release, node_world):
    api = cluster_release["api"]
    ns = workload_namespace(api)
    unlisted = f"{node_world.registry_host}/elsewhere/app:v1"
    message = refusal(
        client.AppsV1Api(api).create_namespaced_deployment, ns, deployment("unlisted", unlisted)
    )
    assert "no repository entry" in message or "no policy" in message.lower(), message


def test_a_custom_rule_from_values_is_obeyed(cluster_release, node_images):
    api = cluster_release["api"]
    ns = workload_namespace(api)
    body = deployment("labelled", node_images.signed, labels={"forbidden": "yes"})
    message = refusal(client.AppsV1Api(api).create_namespaced_deployment, ns, body)
    assert "custom rule nodetest" in message, message


def test_first_use_trust_records_are_written_by_the_pods(cluster_release, node_world):
    api, namespace = cluster_release["api"], cluster_release["namespace"]
    records = client.CustomObjectsApi(api).list_namespaced_custom_object(
        "ostiary.dev", "v1", namespace, "trustrecords"
    )
    guns = json.dumps(records["items"])
    assert f"{node_world.registry_host}/node/app" in guns, guns[:2000]


def test_a_policy_change_is_obeyed(cluster_release, node_world, node_images):
    api = cluster_release["api"]
    objects = client.CustomObjectsApi(api)
    ns = workload_namespace(api)
    # An entry for node/other without trust: images there are then admitted without trust data...
    loose = cluster_policy("node-other", node_world.registry_host, node_world.notary_url, repo="node/other:*")
    loose["spec"]["repositories"][0].pop("policy")
    objects.create_cluster_custom_object("ostiary.dev", "v1", "clusterimagepolicies", loose)
    try:
        unsigned_other = f"{node_world.registry_host}/node/other:nosig"

        def admitted() -> bool:
            try:
                client.CoreV1Api(api).create_namespaced_pod(
                    ns,
                    {
                        "metadata": {"generateName": "p-"},
                        "spec": {"containers": [{"name": "c", "image": unsigned_other}]},
                    },
                    dry_run="All",
                )
                return True
            except ApiException:
                return False

        # The documented time: the next admission after the watch event (docs/kubernetes.md); both
        # replicas get the event, so allow a few seconds for the later one.
        eventually(admitted, 10, what="the new entry obeyed")
        # ... and back: deleting it makes the same image refused again.
        objects.delete_cluster_custom_object("ostiary.dev", "v1", "clusterimagepolicies", "node-other")
        eventually(lambda: not admitted() and not admitted(), 10, what="the deleted entry no longer obeyed")
    finally:
        with contextlib.suppress(ApiException):
            objects.delete_cluster_custom_object("ostiary.dev", "v1", "clusterimagepolicies", "node-other")


def test_killed_webhook_pods_fail_closed_and_their_replacements_admit_again(
    node, cluster_release, node_images
):
    api, namespace = cluster_release["api"], cluster_release["namespace"]
    core = client.CoreV1Api(api)
    ns = workload_namespace(api)
    for pod in webhook_pods(api, namespace):
        core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
    eventually(lambda: not ready_webhook_pods(api, namespace), 30, what="no webhook pod ready")
    pod = {
        "metadata": {"name": "while-down"},
        "spec": {"containers": [{"name": "c", "image": node_images.signed}]},
    }
    pinned = f"{node_images.signed}@{node_images.signed_digest}"

    def refused_while_down() -> str | None:
        """failurePolicy Fail: no webhook answering, no admission. A force-deleted pod's containers
        may still answer for a moment (the kubelet stops them, kube-proxy forgets them, after the API
        object is gone): what they admit carries their pin; anything admitted unpinned failed open."""
        name = f"while-down-{uuid.uuid4().hex[:6]}"
        try:
            core.create_namespaced_pod(ns, {**pod, "metadata": {"name": name}})
        except ApiException as exc:
            assert exc.status in (400, 403, 500), f"unexpected status {exc.status}: {exc.body}"
            return json.loads(exc.body).get("message", exc.body)
        stored = core.read_namespaced_pod(name, ns).spec.containers[0].image
        core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
        assert stored == pinned, f"admitted without the webhook's pin while it was down: {stored}"
        return None

    message = eventually(refused_while_down, 30, interval=0.2, what="a refusal while no webhook pod runs")
    assert "ostiary" in message.lower(), message
    eventually(lambda: len(ready_webhook_pods(api, namespace)) == 2, 120, what="both replacements ready")

    def admits() -> bool:
        try:
            core.create_namespaced_pod(ns, pod)
            return True
        except ApiException:
            return False

    eventually(admits, 30, what="an admission through the replacement pods")
    stored = core.read_namespaced_pod("while-down", ns)
    assert stored.spec.containers[0].image == f"{node_images.signed}@{node_images.signed_digest}"


def test_helm_upgrade_rolls_the_pods_and_never_admits_what_policy_forbids(node, cluster_release, node_images):
    api, namespace = cluster_release["api"], cluster_release["namespace"]
    core = client.CoreV1Api(api)
    ns = workload_namespace(api)
    before = {p.metadata.uid for p in webhook_pods(api, namespace)}
    admitted: list[str] = []
    refused = 0
    stop = threading.Event()

    def attack() -> None:  # unsigned pods, created without pause while the pods roll
        nonlocal refused
        while not stop.is_set():
            name = unique("bad")
            try:
                core.create_namespaced_pod(
                    ns,
                    {
                        "metadata": {"name": name},
                        "spec": {"containers": [{"name": "c", "image": node_images.unsigned}]},
                    },
                )
                admitted.append(name)
            except ApiException:
                refused += 1
            time.sleep(0.05)

    thread = threading.Thread(target=attack, daemon=True)
    thread.start()
    try:
        values = dict(cluster_release["values"], podAnnotations={"ostiary.test/roll": unique("r")})
        install(node, "upgrade", namespace, "cluster-upgrade", values, "--wait")
    finally:
        stop.set()
        thread.join(30)
    after = {p.metadata.uid for p in ready_webhook_pods(api, namespace)}
    assert len(after) == 2 and not (after & before), "the upgrade did not replace the pods"
    assert admitted == [], f"admitted during the upgrade: {admitted}"
    assert refused > 10, refused


def test_helm_uninstall_removes_both_webhook_configurations(node, cluster_release):
    api, namespace = cluster_release["api"], cluster_release["namespace"]
    assert registered_webhooks(api) >= 1
    helm(node, "uninstall", RELEASE, "-n", namespace, "--wait")
    assert FULLNAME not in webhook_configurations(api)
    ns = workload_namespace(api)  # nothing checks, nothing blocks: an unsigned pod goes in
    client.CoreV1Api(api).create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "free"},
            "spec": {"containers": [{"name": "c", "image": "anything.example/x:1"}]},
        },
    )


# -------------------------------------------------------------------------------------- directory mode


def _own_tls_secret(node, namespace: str, service: str) -> str:
    """A certificate from the user's own Secret (tls.mode=secret): returns the CA's PEM."""
    ca = pki.CA.create("user's webhook CA")
    names = (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    )
    key, cert = ca.issue_server(names, ())
    client.CoreV1Api(node.api_client()).create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "own-tls"},
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": base64.b64encode(pki.cert_pem(cert).encode()).decode(),
                "tls.key": base64.b64encode(pki.private_key_pem(key)).decode(),
            },
        },
    )
    return pki.cert_pem(ca.cert)


def test_directory_mode_starts_admits_and_keeps_records_across_a_container_restart(
    node, node_world, node_images
):
    api = node.api_client()
    core = client.CoreV1Api(api)
    namespace = restricted_namespace(api, unique("ostiary-dir"))
    ca_pem = _own_tls_secret(node, namespace, FULLNAME)
    policy = cluster_policy("node", node_world.registry_host, node_world.notary_url)
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "team-policies"}, "data": {"node.yaml": yaml.safe_dump(policy)}}
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "team-rego"}, "data": {"nodetest.rego": CUSTOM_RULE}}
    )
    values = {
        "policySource": "directory",
        "replicaCount": 1,
        "notaryCABundle": open(node_world.ca_file).read(),
        "policyConfigMaps": ["team-policies"],
        "customRegoConfigMaps": ["team-rego"],
        "tls": {"mode": "secret", "existingSecret": "own-tls", "caBundle": ca_pem},
    }
    try:
        install(node, "install", namespace, "directory", values, "--wait")
        pods = ready_webhook_pods(api, namespace)
        assert len(pods) == 1 and pods[0].status.container_statuses[0].restart_count == 0

        ns = workload_namespace(api)
        client.AppsV1Api(api).create_namespaced_deployment(ns, deployment("signed", node_images.signed))
        running = eventually(
            lambda: running_pods(api, ns, "signed"), 90, what="the signed Deployment's pod Running"
        )
        assert running[0].spec.containers[0].image == f"{node_images.signed}@{node_images.signed_digest}"
        message = refusal(
            client.AppsV1Api(api).create_namespaced_deployment,
            ns,
            deployment("unsigned", node_images.unsigned),
        )
        assert node_images.unsigned in message, message
        message = refusal(
            client.AppsV1Api(api).create_namespaced_deployment,
            ns,
            deployment("labelled", node_images.signed, labels={"forbidden": "yes"}),
        )
        assert "custom rule nodetest" in message, message

        # The first-use record of node/app was written to the state directory; a container restart
        # (the process killed, the kubelet starts it again in the same pod) must find it there.
        webhook = ready_webhook_pods(api, namespace)[0]
        records_before = node.emptydir_files(webhook.metadata.uid)
        assert records_before, "no first-use record in the pod's state volume"
        node.kill_container(namespace, webhook.metadata.name, "ostiary")
        eventually(
            lambda: any(
                c.name == "ostiary" and c.restart_count >= 1 and c.ready
                for p in ready_webhook_pods(api, namespace)
                for c in p.status.container_statuses
            ),
            120,
            what="the ostiary container restarted and ready",
        )
        log = node.logs(namespace, webhook.metadata.name, "ostiary")
        assert "Read-only file system" not in log, log[-2000:]
        client.AppsV1Api(api).create_namespaced_deployment(ns, deployment("again", node_images.signed))
        eventually(lambda: running_pods(api, ns, "again"), 90, what="admitted again after the restart")
        assert set(records_before) <= set(node.emptydir_files(webhook.metadata.uid)), (
            "records lost in the restart"
        )
    finally:
        helm(node, "uninstall", RELEASE, "-n", namespace, "--wait", check=False)
        with contextlib.suppress(ApiException):
            core.delete_namespace(namespace)


# ---------------------------------------------------------------------------------- install-time safety


def test_an_install_whose_pods_never_get_ready_registers_no_webhook(node, node_images):
    """Without --wait: a directory-mode release naming a ConfigMap that does not exist never gets a
    ready pod; the register hook gives up, helm says so, and the API server calls no webhook, so
    every namespace keeps working (before, a failurePolicy Fail webhook with no endpoint refused
    every pod in every checked namespace)."""
    api = node.api_client()
    namespace = restricted_namespace(api, unique("ostiary-broken"))
    values = {
        "policySource": "directory",
        "replicaCount": 1,
        "policyConfigMaps": ["does-not-exist"],
        "registration": {"timeoutSeconds": 20},
    }
    try:
        done = install(node, "install", namespace, "broken", values, check=False)
        assert done.returncode != 0, done.stdout
        assert "register" in done.stderr, done.stderr
        assert not ready_webhook_pods(api, namespace)
        assert registered_webhooks(api) == 0
        ns = workload_namespace(api)  # the cluster is not blocked: any pod goes in, unchecked
        client.CoreV1Api(api).create_namespaced_pod(
            ns,
            {
                "metadata": {"name": "free"},
                "spec": {"containers": [{"name": "c", "image": node_images.unsigned}]},
            },
        )
    finally:
        helm(node, "uninstall", RELEASE, "-n", namespace, "--wait", "--no-hooks", check=False)
        with contextlib.suppress(ApiException):
            client.CoreV1Api(api).delete_namespace(namespace)
