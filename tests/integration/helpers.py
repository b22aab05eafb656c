"""Build AdmissionReviews and load policy YAML into a real OPA for the integration tests."""

from __future__ import annotations

import itertools
import textwrap
import time

import yaml

from app.admission.review import Reviewer
from app.opa.client import OpaClient
from app.policies.directory import DirectoryStore, translate_all
from app.policies.model import PolicySet
from app.policies.schema import parse_policy_document
from app.policies.sync import PolicySync, library_modules

_uids = itertools.count(1)

KIND_GROUPS = {
    "Pod": ("", "pods"),
    "Deployment": ("apps", "deployments"),
    "ReplicaSet": ("apps", "replicasets"),
    "DaemonSet": ("apps", "daemonsets"),
    "StatefulSet": ("apps", "statefulsets"),
    "ReplicationController": ("", "replicationcontrollers"),
    "Job": ("batch", "jobs"),
    "CronJob": ("batch", "cronjobs"),
}


def pod_spec(*images: str, kind: str = "containers") -> dict:
    return {kind: [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]}


def workload(kind: str, spec: dict, name: str = "w", namespace: str = "default") -> dict:
    meta = {"name": name, "namespace": namespace}
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": kind, "metadata": meta, "spec": spec}
    template = {"metadata": {"labels": {"app": name}}, "spec": spec}
    if kind == "CronJob":
        return {
            "kind": kind,
            "metadata": meta,
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}},
        }
    return {"kind": kind, "metadata": meta, "spec": {"template": template}}


def review(
    obj: dict,
    *,
    namespace: str = "default",
    operation: str = "CREATE",
    sub_resource: str | None = None,
    dry_run: bool = False,
) -> dict:
    kind = obj["kind"]
    group, resource = KIND_GROUPS.get(kind, ("", kind.lower() + "s"))
    request = {
        "uid": f"00000000-0000-0000-0000-{next(_uids):012d}",
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": resource},
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "tester"},
        "object": obj,
        "dryRun": dry_run,
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def load(opa: OpaClient, policy_yaml: str, custom: list | None = None) -> PolicySet:
    """Replace everything OPA holds with the library, `custom` modules and these policies."""
    policy_set = PolicySet()
    for index, doc in enumerate(yaml.safe_load_all(textwrap.dedent(policy_yaml))):
        if doc is None:
            continue
        if doc.get("kind") == "Secret":
            policy_set.secrets[
                (doc["metadata"].get("namespace", "ostiary-system"), doc["metadata"]["name"])
            ] = doc
            continue
        policy_set.policies.append(parse_policy_document(doc, f"test#{index}"))
    sync = PolicySync(opa)
    sync.resync()  # drop whatever an earlier test left
    sync.set_base(library_modules() + (custom or []))
    sync.replace_all(translate_all(policy_set.policies))
    return policy_set


def reviewer(opa: OpaClient, policy_set: PolicySet | None = None, **kw) -> Reviewer:
    return Reviewer(opa, DirectoryStore(policy_set or PolicySet()), **kw)


def decide(rv: Reviewer, body: dict) -> dict:
    started = time.monotonic()
    answer, _ = rv.review(body)
    answer["_seconds"] = time.monotonic() - started
    return answer["response"]


def verified_facts(request, released: str) -> dict:
    """Trust facts as the verifier reports them for one TrustRequest whose tag (if any) is signed
    with digest `released` by the targets key, from the server the request names. The verifier
    itself is tested against real Notary data in tests/trust and tests/world; these are for tests
    of how the decision composes facts."""
    tag = request.image.tag
    return {
        "verified": True,
        "root_trust": "first-use",
        "root_pins": [],
        "error": None,
        "error_role": None,
        "server": request.server,
        "gun": request.image.name,
        "tag": tag,
        "digest": request.image.digest,
        "targets": {tag: {"released": released, "roles": {"targets": released}}} if tag else {},
        "roles": {"targets": {"keyids": ["k"], "threshold": 1, "signed_by": ["k"]}},
        "signers": [],
    }
