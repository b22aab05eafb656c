"""OPA holds exactly Ostiary's modules and policy documents (issue 13), with the chart's topology:
a sidecar-style OPA that outlives `ostiary serve --opa-url`. Real OPA, real `ostiary serve`
processes. Policies are data documents under /v1/data/ostiary_policies (app/policies/translate.py);
the library and custom rules are modules: both kinds are kept exact, and both can be planted."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from app.opa.client import OpaClient, OpaError
from app.opa.process import LocalOpa
from app.policies.schema import parse_policy_document
from app.policies.sync import DATA_PREFIX, POLICY_DATA_ROOT, library_modules, policy_documents
from app.policies.translate import policy_data, translate
from tests.integration.helpers import pod_spec, review, workload
from tests.integration.test_server import served  # noqa: F401 - the fixture

BASE = """apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: base}
spec:
  repositories:
    - name: "registry.example.com/mirror/*"
"""
EXTRA = """apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: extra}
spec:
  repositories:
    - name: "registry.example.com/extra/*"
"""
CUSTOM = """package ostiary.custom.nobusybox

deny contains msg if {
\tsome image in input.images
\tcontains(image.image, "busybox")
\tmsg := sprintf("busybox is not wanted here: %s", [image.image])
}
"""
MIRROR = "registry.example.com/mirror/app:1"
EXTRA_IMAGE = "registry.example.com/extra/app:1"
BUSYBOX = "registry.example.com/mirror/busybox:1"
EVIL = "evil.example.com/anything:1"


@pytest.fixture()
def sidecar():
    """An OPA that is not Ostiary's child: it keeps running while Ostiary stops and starts."""
    opa = LocalOpa().start()
    yield opa
    opa.stop()


def allow_all(name: str):
    return parse_policy_document(
        {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ClusterImagePolicy",
            "metadata": {"name": name},
            "spec": {"repositories": [{"name": "*"}]},
        },
        "planted",
    )


def allow_all_module(module_id: str, name: str) -> tuple[str, str]:
    """A Rego module a foreign writer could plant: a ClusterImagePolicy allowing every image, in the
    package whose data the library reads."""
    source = f'package ostiary_policies.cluster["{name}"]\n\npolicy := {json.dumps(policy_data(allow_all(name)))}\n'
    return module_id, source


def allow_all_document(name: str) -> tuple[str, str]:
    """The same as a data document a foreign writer could plant (or put over one of Ostiary's)."""
    return f"ostiary_policies/cluster/{name}", translate(allow_all(name)).source


def held_ids(url: str) -> set[str]:
    """The ids of every module and policy document OPA holds."""
    client = OpaClient(url)
    modules = client.list_policies()
    documents = policy_documents(client.get_data(POLICY_DATA_ROOT), client.list_packages().values())
    return set(modules) | {key.removeprefix(DATA_PREFIX) for key in documents}


def admit(s, image: str) -> dict:
    return s.admit(review(workload("Pod", pod_spec(image)))).json()["response"]


def start(served, opa: LocalOpa, policies: Path, rego: Path | None = None):  # noqa: F811
    args = ["--policy-dir", str(policies), "--opa-url", opa.url]
    if rego is not None:
        args += ["--rego-dir", str(rego)]
    s = served(*args)
    s.wait_ready()
    return s


def expected_ids(*policy_names: str, custom: tuple[str, ...] = ()) -> set[str]:
    return (
        {m.id for m in library_modules()}
        | {f"ostiary_policies/cluster/{n}" for n in policy_names}
        | {f"ostiary/custom/{c}" for c in custom}
    )


def wait_until(predicate, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def test_a_policy_deleted_while_ostiary_was_down_stops_admitting(served, sidecar, tmp_path):  # noqa: F811
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "extra.yaml").write_text(EXTRA)
    s = start(served, sidecar, tmp_path)
    assert admit(s, EXTRA_IMAGE)["allowed"] is True
    s.stop()
    (tmp_path / "extra.yaml").unlink()
    # Meanwhile the sidecar still holds the old module: what the issue found in force.
    assert "ostiary_policies/cluster/extra" in held_ids(sidecar.url)

    s = served("--policy-dir", str(tmp_path), "--opa-url", sidecar.url)
    s.wait_ready()
    denied = admit(s, EXTRA_IMAGE)
    assert denied["allowed"] is False, denied
    assert admit(s, MIRROR)["allowed"] is True
    assert held_ids(sidecar.url) == expected_ids("base")


def test_a_custom_module_deleted_while_ostiary_was_down_is_gone(served, sidecar, tmp_path):  # noqa: F811
    policies, rego = tmp_path / "p", tmp_path / "rego"
    policies.mkdir()
    rego.mkdir()
    (policies / "base.yaml").write_text(BASE)
    (rego / "nobusybox.rego").write_text(CUSTOM)
    s = start(served, sidecar, policies, rego)
    denied = admit(s, BUSYBOX)
    assert denied["allowed"] is False and "busybox is not wanted" in denied["status"]["message"]
    s.stop()
    (rego / "nobusybox.rego").unlink()

    s = start(served, sidecar, policies, rego)
    assert admit(s, BUSYBOX)["allowed"] is True
    assert held_ids(sidecar.url) == expected_ids("base")


def test_modules_and_documents_planted_before_start_and_while_running_are_removed(
    served,  # noqa: F811
    sidecar,
    tmp_path,
):
    (tmp_path / "base.yaml").write_text(BASE)
    opa = OpaClient(sidecar.url)
    # Before start: modules under a policy's id and under another id, both inside the packages the
    # library reads, and a policy document Ostiary never wrote.
    for module_id, source in (
        allow_all_module("ostiary_policies/cluster/planted", "planted"),
        allow_all_module("elsewhere/x", "elsewhere"),
    ):
        opa.put_policy(module_id, source)
    opa.put_data(*allow_all_document("planted-data"))
    s = start(served, sidecar, tmp_path)
    assert held_ids(sidecar.url) == expected_ids("base")
    assert admit(s, EVIL)["allowed"] is False

    # While running: a new module, and Ostiary's own policy document replaced in place by another.
    opa.put_policy(*allow_all_module("someone/else", "someone"))
    wait_until(lambda: "someone/else" not in held_ids(sidecar.url))
    assert admit(s, EVIL)["allowed"] is False
    path, planted = allow_all_document("base")
    opa.put_data(path, planted)
    wait_until(lambda: "registry.example.com" in json.dumps(opa.get_data(path)))
    assert admit(s, EVIL)["allowed"] is False
    assert held_ids(sidecar.url) == expected_ids("base")
    # A module at a policy document's path (its rule beside the document): removed as foreign, and
    # meanwhile it never admits (what OPA makes of the overlap can only deny: EVIL matches nothing else).
    foreign = 1
    try:
        opa.put_policy(*allow_all_module("ostiary_policies/cluster/base", "base"))
        foreign += 1
    except OpaError:
        pass
    assert admit(s, EVIL)["allowed"] is False
    wait_until(lambda: held_ids(sidecar.url) == expected_ids("base"))
    assert admit(s, EVIL)["allowed"] is False
    metrics = requests.get(s.base + "/metrics", timeout=5).text
    assert f'ostiary_opa_foreign_changes_total{{change="foreign"}} {foreign}.0' in metrics
    assert 'ostiary_opa_foreign_changes_total{change="altered"} 1.0' in metrics


# ----------------------------------------------------------------------------- apply-time validation


def validation_review(
    obj: dict | None,
    *,
    group: str = "ostiary.dev",
    version: str = "v1",
    kind: str = "ClusterImagePolicy",
    operation: str = "CREATE",
    namespace: str = "",
) -> dict:
    request = {
        "uid": "v-1",
        "kind": {"group": group, "version": version, "kind": kind},
        "operation": operation,
        "namespace": namespace,
        "object": obj,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def validate(s, body: dict) -> dict:
    r = requests.post(s.base + "/validate", json=body, timeout=15)
    assert r.status_code == 200, r.text
    return r.json()["response"]


def test_the_validating_webhook_refuses_bad_policies_with_the_reason(served, sidecar, tmp_path):  # noqa: F811
    (tmp_path / "base.yaml").write_text(BASE)
    s = start(served, sidecar, tmp_path)
    before = OpaClient(sidecar.url).list_policies()
    good = {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ClusterImagePolicy",
        "metadata": {"name": "good"},
        "spec": {"repositories": [{"name": "docker.io/library/*", "policy": {"trust": {"enabled": True}}}]},
    }
    assert validate(s, validation_review(good))["allowed"] is True
    misspelt = {**good, "spec": {"repositories": [{"name": "*", "policy": {"trsut": {"enabled": True}}}]}}
    refused = validate(s, validation_review(misspelt))
    assert refused["allowed"] is False and "trsut" in refused["status"]["message"], refused
    # Portieris' groups are judged the same way; a namespaced one takes the request's namespace.
    portieris = {
        "apiVersion": "securityenforcement.admission.cloud.ibm.com/v1beta1",
        "kind": "ImagePolicy",
        "metadata": {"name": "p"},
        "spec": {"repositories": [{"name": "*", "policy": {"va": 1}}]},
    }
    refused = validate(
        s,
        validation_review(
            portieris,
            group="securityenforcement.admission.cloud.ibm.com",
            version="v1beta1",
            kind="ImagePolicy",
            namespace="team",
        ),
    )
    assert refused["allowed"] is False and "va" in refused["status"]["message"], refused

    # Notation's levels: audit is accepted; skip for every image, or overlapping identities, are not
    def notation(name: str, notation: dict) -> dict:
        return {**good, "spec": {"repositories": [{"name": name, "policy": {"notation": notation}}]}}

    audit = {"caSecret": "ca", "trustedIdentities": ["*"], "signatureVerification": {"level": "audit"}}
    assert validate(s, validation_review(notation("r.example/app", audit)))["allowed"] is True
    skip_all = notation("*", {"signatureVerification": {"level": "skip"}})
    refused = validate(s, validation_review(skip_all))
    assert refused["allowed"] is False and "cannot apply to every image" in refused["status"]["message"]
    overlap = {
        "caSecret": "ca",
        "trustedIdentities": ["x509.subject: C=US, ST=WA, O=A", "x509.subject: C=US, ST=WA, O=A, CN=B"],
    }
    refused = validate(s, validation_review(notation("r.example/app", overlap)))
    assert refused["allowed"] is False and "overlap" in refused["status"]["message"], refused
    # DELETE, and kinds that are not policies, are not this webhook's business.
    assert validate(s, validation_review(misspelt, operation="DELETE"))["allowed"] is True
    assert (
        validate(s, validation_review({"kind": "ConfigMap"}, group="", kind="ConfigMap"))["allowed"] is True
    )
    assert requests.post(s.base + "/validate", json={"kind": "AdmissionReview"}, timeout=5).status_code == 400
    # Checking never disturbed the serving set, and nothing was counted as a foreign change.
    assert OpaClient(sidecar.url).list_policies() == before
    assert "ostiary_opa_foreign_changes_total{" not in requests.get(s.base + "/metrics", timeout=5).text
