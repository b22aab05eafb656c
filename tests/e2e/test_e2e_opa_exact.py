"""A deleted policy stops admitting: in cluster mode OPA holds exactly what Ostiary means (issue 13).

The chart's topology: OPA is a sidecar that outlives a restart of the webhook container. Here one
Ostiary (`--kube --opa-url`) serves the namespaces labelled for it, and its OPA keeps running while
the Ostiary process is stopped, or while its gunicorn worker is dead. Whatever changed meanwhile —
a policy deleted, a custom module removed, a module written into OPA by someone else — must not
decide a single admission once Ostiary says it is ready again.

And a policy Ostiary would refuse is refused when it is applied: the validating webhook
(POST /validate) answers the API server with the reason, as `kubectl apply` shows it.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e.k8s import GROUP, VERSION, denied, eventually, unique
from tests.e2e.webhook import INSTANCE_LABEL, Ostiary, running

pytestmark = pytest.mark.e2e

NAME = "restart"
CUSTOM = """package ostiary.custom.nomarked

deny contains msg if {
\tsome image in input.images
\tcontains(image.image, "marked")
\tmsg := sprintf("marked images are not wanted here: %s", [image.image])
}
"""


@pytest.fixture(scope="module")
def rego_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rego-restart")


@pytest.fixture(scope="module")
def restartable(control_plane, admin_client, crds, ostiary, rego_dir, tmp_path_factory):
    """An Ostiary whose server can be stopped and started while its OPA keeps running."""
    instance = Ostiary(
        control_plane,
        NAME,
        tmp_path_factory.mktemp("ostiary-restart"),
        select_instance=True,
        rego_dir=str(rego_dir),
    )
    with running(instance):
        yield instance


@pytest.fixture
def ns(admin_client, restartable) -> str:
    name = f"e2e-restart-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(admin_client).create_namespace(
        {"metadata": {"name": name, "labels": {INSTANCE_LABEL: NAME}}}
    )
    yield name
    try:
        client.CoreV1Api(admin_client).delete_namespace(name)
    except ApiException:
        pass  # cleanup only


def _delete(kube, namespace: str | None, name: str) -> None:
    """Delete a policy without waiting for OPAs to drop it (a stopped Ostiary's OPA never would)."""
    kube.delete_policy(namespace, name, wait=False)


def _worker_pids(instance: Ostiary) -> list[int]:
    master = instance.processes["ostiary"].popen.pid
    children = []
    for task in Path(f"/proc/{master}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


@pytest.mark.parametrize("scope", ["namespace", "cluster"])
def test_a_policy_deleted_while_ostiary_was_down_does_not_admit_after_start(kube, restartable, ns, scope):
    token = uuid.uuid4().hex[:8]
    image = f"registry.example.com/deleted-{token}/app:1"
    name = unique(f"gone-{scope}")
    namespace = ns if scope == "namespace" else None
    # (a namespace without policies falls back to the cluster's; give the cluster case a baseline too)
    kube.policy(ns, [{"name": "registry.example.com/baseline/*"}], name="baseline")
    if namespace is None:
        kube.delete_policy(ns, "baseline")
    kube.policy(namespace, [{"name": f"registry.example.com/deleted-{token}/*"}], name=name)
    kube.pod(ns, image)  # in force: admitted
    module_id = (
        f"ostiary_policies/namespaced/{ns}/{name}" if namespace else f"ostiary_policies/cluster/{name}"
    )
    restartable.stop_server()
    try:
        _delete(kube, namespace, name)
        assert restartable.opa_module(module_id) is not None, (
            "the sidecar OPA still holds it while Ostiary is down"
        )
    finally:
        restartable.start_server()
    # From the first admission after ready: the module is gone and the image is denied.
    assert restartable.opa_module(module_id) is None
    message = denied(kube.pod, ns, image)
    assert "no repository entry" in message or "not allowed" in message or "denied" in message, message


def test_a_custom_module_removed_while_ostiary_was_down_is_gone_after_start(kube, restartable, rego_dir, ns):
    kube.policy(ns, [{"name": "registry.example.com/custom/*"}], name="custom")
    (rego_dir / "nomarked.rego").write_text(CUSTOM)
    # the folder is re-read on change: the custom rule is in force
    eventually(
        lambda: "marked images" in _denial(kube, ns, "registry.example.com/custom/marked:1"), timeout=30
    )
    restartable.stop_server()
    try:
        (rego_dir / "nomarked.rego").unlink()
        assert any(mid.startswith("ostiary/custom/") for mid in restartable.opa_modules())
    finally:
        restartable.start_server()
    assert not any(mid.startswith("ostiary/custom/") for mid in restartable.opa_modules())
    kube.pod(ns, "registry.example.com/custom/marked:1")  # admitted: nothing forbids it any more


def _denial(kube, namespace: str, image: str) -> str:
    try:
        kube.pod(namespace, image)
    except ApiException as exc:
        return str(exc.body)
    return ""


def test_a_policy_deleted_while_the_worker_was_dead_does_not_admit_after_ready(kube, restartable, ns):
    token = uuid.uuid4().hex[:8]
    image = f"registry.example.com/worker-{token}/app:1"
    name = unique("gone-worker")
    kube.policy(ns, [{"name": f"registry.example.com/worker-{token}/*"}], name=name)
    kube.pod(ns, image)
    module_id = f"ostiary_policies/namespaced/{ns}/{name}"
    master = restartable.processes["ostiary"].popen.pid
    workers = _worker_pids(restartable)
    assert workers, "no gunicorn worker under the master"
    # Hold the master so no new worker can start before the deletion, kill the worker, delete.
    os.kill(master, signal.SIGSTOP)
    try:
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        _delete(kube, ns, name)
        time.sleep(0.5)
        assert restartable.opa_module(module_id) is not None
    finally:
        os.kill(master, signal.SIGCONT)
    eventually(lambda: set(_worker_pids(restartable)) - set(workers), timeout=30)
    restartable.wait_ready(60)
    assert restartable.opa_module(module_id) is None
    denied(kube.pod, ns, image)


def test_modules_planted_in_opa_are_removed_before_ready_and_while_running(kube, restartable, ns):
    from tests.e2e.webhook import expected_module

    kube.policy(ns, [{"name": "registry.example.com/planted-base/*"}], name="base")
    foreign = "registry.example.com/foreign/app:1"
    denied(kube.pod, ns, foreign)

    def planted(name: str):
        obj = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ClusterImagePolicy",
            "metadata": {"name": name},
            "spec": {"repositories": [{"name": "*"}]},
        }
        return expected_module(obj)

    def as_rego(module) -> str:
        """The planted policy as a Rego module in the package whose data the library reads."""
        return f"package {module.package}\n\npolicy := {json.dumps(json.loads(module.source)['policy'])}\n"

    before = planted(unique("planted-before"))
    restartable.stop_server()
    try:
        restartable.put_opa_module(before.id, as_rego(before))
    finally:
        restartable.start_server()
    assert before.id not in restartable.opa_modules()
    denied(kube.pod, ns, foreign)

    during = planted(unique("planted-during"))
    restartable.put_opa_module(during.id, as_rego(during))
    begin = time.monotonic()
    eventually(lambda: during.id not in restartable.opa_modules(), timeout=20, interval=0.1)
    print(f"\na module planted while running was removed after {time.monotonic() - begin:.1f}s")
    denied(kube.pod, ns, foreign)

    # The same as a policy document (what policies are now): removed too.
    document = planted(unique("planted-data"))
    restartable.put_opa_data(document.id, document.source)
    eventually(lambda: restartable.opa_module(document.id) is None, timeout=20, interval=0.1)
    denied(kube.pod, ns, foreign)


@pytest.mark.parametrize("group_version", ["ostiary.dev/v1", "portieris.cloud.ibm.com/v1"])
def test_applying_a_policy_ostiary_would_refuse_fails_with_the_reason(
    kube, ostiary, namespace, group_version
):
    if group_version != f"{GROUP}/{VERSION}":
        from tests.e2e.k8s import PORTIERIS_CRDS, install_crds, load_documents

        install_crds(kube.api_client, load_documents(PORTIERIS_CRDS))
    with ostiary.validating():
        with pytest.raises(ApiException) as refused:
            kube.policy(
                namespace,
                [{"name": "registry.example.com/ok/*"}, {"name": "a b"}],
                name="refused",
                group_version=group_version,
                wait=False,
            )
        assert refused.value.status in (400, 422), refused.value
        assert "Ostiary refuses this policy" in refused.value.body and "whitespace" in refused.value.body
        assert kube.get_policy(namespace, "refused", group_version) is None
        # a good policy (and its deletion) still goes through
        kube.policy(
            namespace,
            [{"name": "registry.example.com/ok/*"}],
            name="accepted",
            group_version=group_version,
            wait=False,
        )
        kube.delete_policy(namespace, "accepted", group_version=group_version, wait=False)
