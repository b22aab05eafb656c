"""Small helpers the e2e tests share: workloads with given images, policies, and waiting for them."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

GROUP, VERSION = "ostiary.dev", "v1"
CRD_DIR = Path(__file__).resolve().parents[2] / "helm" / "ostiary" / "crds"
PORTIERIS_CRDS = Path(__file__).resolve().parent / "crds" / "portieris.yaml"


def load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def install_crds(api_client, documents: list[dict], timeout: float = 30.0) -> None:
    """Create (or replace) CRDs and wait until each is Established and served."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    ext = client.ApiextensionsV1Api(api_client)
    for doc in documents:
        try:
            ext.create_custom_resource_definition(doc)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = ext.read_custom_resource_definition(doc["metadata"]["name"])
            doc = {
                **doc,
                "metadata": {**doc["metadata"], "resourceVersion": current.metadata.resource_version},
            }
            ext.replace_custom_resource_definition(doc["metadata"]["name"], doc)
    deadline = time.monotonic() + timeout
    for doc in documents:
        name = doc["metadata"]["name"]
        while True:
            crd = ext.read_custom_resource_definition(name)
            conditions = {c.type: c.status for c in (crd.status.conditions or [])}
            if conditions.get("Established") == "True":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"CRD {name} not established: {conditions}")
            time.sleep(0.2)
    # Discovery of a new group can lag the Established condition a little.
    for doc in documents:
        spec = doc["spec"]
        for version in spec["versions"]:
            path = f"/apis/{spec['group']}/{version['name']}"
            while True:
                try:
                    api_client.call_api(path, "GET", auth_settings=["BearerToken"], _preload_content=False)
                    break
                except ApiException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def pod_spec(*images: str, init: tuple[str, ...] = ()) -> dict:
    spec = {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]}
    if init:
        spec["initContainers"] = [{"name": f"i{i}", "image": image} for i, image in enumerate(init)]
    return spec


def template(*images: str, labels: dict | None = None, **kw) -> dict:
    return {"metadata": {"labels": labels or {"app": "e2e"}}, "spec": pod_spec(*images, **kw)}


@dataclass
class Kube:
    """Typed API groups of one client, and the calls the tests make most."""

    api_client: object

    def __post_init__(self):
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)

    # ---------------------------------------------------------------- workloads

    def pod(
        self,
        namespace: str,
        *images: str,
        name: str | None = None,
        owner: dict | None = None,
        dry_run: bool = False,
        **kw,
    ) -> dict:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name or unique("pod"), "labels": {"app": "e2e"}},
            "spec": pod_spec(*images, **kw),
        }
        if owner:
            body["metadata"]["ownerReferences"] = [owner]
        extra = {"dry_run": "All"} if dry_run else {}
        return self.api_client.sanitize_for_serialization(
            self.core.create_namespaced_pod(namespace, body, **extra)
        )

    def deployment(
        self, namespace: str, *images: str, name: str | None = None, dry_run: bool = False
    ) -> dict:
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name or unique("deploy")},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "e2e"}},
                "template": template(*images),
            },
        }
        extra = {"dry_run": "All"} if dry_run else {}
        return self.api_client.sanitize_for_serialization(
            self.apps.create_namespaced_deployment(namespace, body, **extra)
        )

    def replicaset(
        self, namespace: str, *images: str, owner: dict | None = None, name: str | None = None
    ) -> dict:
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": name or unique("rs")},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "e2e"}},
                "template": template(*images),
            },
        }
        if owner:
            body["metadata"]["ownerReferences"] = [owner]
        return self.api_client.sanitize_for_serialization(
            self.apps.create_namespaced_replica_set(namespace, body)
        )

    def statefulset(self, namespace: str, *images: str) -> dict:
        body = {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": unique("sts")},
            "spec": {
                "serviceName": "e2e",
                "selector": {"matchLabels": {"app": "e2e"}},
                "template": template(*images),
            },
        }
        return self.api_client.sanitize_for_serialization(
            self.apps.create_namespaced_stateful_set(namespace, body)
        )

    def daemonset(self, namespace: str, *images: str) -> dict:
        body = {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": unique("ds")},
            "spec": {"selector": {"matchLabels": {"app": "e2e"}}, "template": template(*images)},
        }
        return self.api_client.sanitize_for_serialization(
            self.apps.create_namespaced_daemon_set(namespace, body)
        )

    def job(self, namespace: str, *images: str) -> dict:
        tpl = template(*images)
        tpl["spec"]["restartPolicy"] = "Never"
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": unique("job")},
            "spec": {"template": tpl},
        }
        return self.api_client.sanitize_for_serialization(self.batch.create_namespaced_job(namespace, body))

    def cronjob(self, namespace: str, *images: str, init: tuple[str, ...] = ()) -> dict:
        tpl = template(*images, init=init)
        tpl["spec"]["restartPolicy"] = "OnFailure"
        body = {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": unique("cron")},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": tpl}}},
        }
        return self.api_client.sanitize_for_serialization(
            self.batch.create_namespaced_cron_job(namespace, body)
        )

    def replication_controller(self, namespace: str, *images: str) -> dict:
        body = {
            "apiVersion": "v1",
            "kind": "ReplicationController",
            "metadata": {"name": unique("rc")},
            "spec": {"replicas": 1, "selector": {"app": "e2e"}, "template": template(*images)},
        }
        return self.api_client.sanitize_for_serialization(
            self.core.create_namespaced_replication_controller(namespace, body)
        )

    # ---------------------------------------------------------------- policies

    def policy(
        self,
        namespace: str | None,
        repositories: list[dict],
        *,
        name: str | None = None,
        group_version: str = f"{GROUP}/{VERSION}",
        mode: str | None = None,
        wait: bool = True,
    ) -> dict:
        """Create (or replace) an ImagePolicy (namespace given) or ClusterImagePolicy.

        wait: until every running Ostiary's OPA holds the policy's module exactly (and, for ostiary.dev
        resources, the status says Ready for this generation). The status alone is no barrier: with
        two Ostiary instances, either may write it first.
        """
        group, version = group_version.split("/")
        kind = "ImagePolicy" if namespace else "ClusterImagePolicy"
        plural = "imagepolicies" if namespace else "clusterimagepolicies"
        spec: dict = {"repositories": repositories}
        if mode:
            spec["mode"] = mode
        name = name or unique("policy")
        body = {"apiVersion": group_version, "kind": kind, "metadata": {"name": name}, "spec": spec}
        current = self.get_policy(namespace, name, group_version)
        if current is None:
            obj = (
                self.custom.create_namespaced_custom_object(group, version, namespace, plural, body)
                if namespace
                else self.custom.create_cluster_custom_object(group, version, plural, body)
            )
        else:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            obj = (
                self.custom.replace_namespaced_custom_object(group, version, namespace, plural, name, body)
                if namespace
                else self.custom.replace_cluster_custom_object(group, version, plural, name, body)
            )
        if wait:
            from tests.e2e.webhook import wait_in_force

            wait_in_force(obj)
            if group == GROUP:
                self.wait_policy(namespace, name, obj["metadata"]["generation"])
        return obj

    def get_policy(
        self, namespace: str | None, name: str, group_version: str = f"{GROUP}/{VERSION}"
    ) -> dict | None:
        group, version = group_version.split("/")
        try:
            if namespace:
                return self.custom.get_namespaced_custom_object(
                    group, version, namespace, "imagepolicies", name
                )
            return self.custom.get_cluster_custom_object(group, version, "clusterimagepolicies", name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete_policy(
        self, namespace: str | None, name: str, group_version: str = f"{GROUP}/{VERSION}", wait: bool = True
    ) -> None:
        from tests.e2e.webhook import wait_in_force

        group, version = group_version.split("/")
        if namespace:
            self.custom.delete_namespaced_custom_object(group, version, namespace, "imagepolicies", name)
            module_id = f"ostiary_policies/namespaced/{namespace}/{name}"
        else:
            self.custom.delete_cluster_custom_object(group, version, "clusterimagepolicies", name)
            module_id = f"ostiary_policies/cluster/{name}"
        if wait:
            wait_in_force(None, module_id)

    def wait_policy(
        self, namespace: str | None, name: str, generation: int, timeout: float = 15.0, status: str = "True"
    ) -> dict:
        """Until Ostiary reports Ready=<status> for this generation (it writes that after pushing to OPA)."""
        deadline = time.monotonic() + timeout
        obj: dict | None = None
        while time.monotonic() < deadline:
            obj = self.get_policy(namespace, name)
            for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
                if (
                    condition.get("type") == "Ready"
                    and condition.get("observedGeneration") == generation
                    and condition.get("status") == status
                ):
                    return obj  # type: ignore[return-value]
            time.sleep(0.05)
        raise AssertionError(f"policy {namespace}/{name} generation {generation} not Ready={status}: {obj}")


def denied(call, *args, **kwargs) -> str:
    """Run an API call that the webhook must refuse; return the refusal's message."""
    try:
        call(*args, **kwargs)
    except ApiException as exc:
        return _refusal(exc)
    raise AssertionError("the request was admitted")


def _refusal(exc: ApiException) -> str:
    """The webhook's refusal message; any other API error fails the test."""
    assert exc.status in (400, 403), f"unexpected status {exc.status}: {exc.body}"
    assert "admission webhook" in exc.body, exc.body
    return exc.body


def denied_soon(kube, namespace: str, image: str, timeout: float = 60.0, containing: str = "") -> str:
    """A Pod of `image` in `namespace` is refused within `timeout` (dry runs): for a policy change the
    API server already reports (status, Event) while OPA may still be taking it in — on a loaded
    cluster with many policies a push can take seconds. Returns the refusal's message."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            kube.pod(namespace, image, dry_run=True)
        except ApiException as exc:
            last = _refusal(exc)
            if containing in last:
                return last
        else:
            last = "admitted"
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{image} in {namespace}: not refused with {containing!r} after {timeout}s: {last}"
            )
        time.sleep(0.5)


def admitted_soon(kube, namespace: str, image: str, timeout: float = 60.0) -> None:
    """A Pod of `image` in `namespace` is admitted within `timeout` (dry runs): see denied_soon."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            kube.pod(namespace, image, dry_run=True)
            return
        except ApiException as exc:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{image} in {namespace} still refused after {timeout}s: {exc.body}"
                ) from None
        time.sleep(0.5)


def eventually(predicate, timeout: float = 15.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")
