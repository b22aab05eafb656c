"""OPA holds exactly Ostiary's modules (issue 13), with the chart's topology: a sidecar-style OPA
that outlives `ostiary serve --opa-url`. Real OPA, real `ostiary serve` processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from app.opa.client import OpaClient
from app.opa.process import LocalOpa
from app.policies.schema import parse_policy_document
from app.policies.sync import library_modules
from app.policies.translate import translate
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


def allow_all_module(module_id: str, name: str) -> tuple[str, str]:
    """A module a foreign writer could plant: a ClusterImagePolicy allowing every image."""
    resource = parse_policy_document(
        {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ClusterImagePolicy",
            "metadata": {"name": name},
            "spec": {"repositories": [{"name": "*"}]},
        },
        "planted",
    )
    return module_id, translate(resource).source


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
        | {f"ostiary/policies/cluster/{n}" for n in policy_names}
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
    assert "ostiary/policies/cluster/extra" in OpaClient(sidecar.url).list_policy_ids()

    s = served("--policy-dir", str(tmp_path), "--opa-url", sidecar.url)
    s.wait_ready()
    denied = admit(s, EXTRA_IMAGE)
    assert denied["allowed"] is False, denied
    assert admit(s, MIRROR)["allowed"] is True
    assert OpaClient(sidecar.url).list_policy_ids() == expected_ids("base")


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
    assert OpaClient(sidecar.url).list_policy_ids() == expected_ids("base")


def test_modules_planted_before_start_and_while_running_are_removed(served, sidecar, tmp_path):  # noqa: F811
    (tmp_path / "base.yaml").write_text(BASE)
    opa = OpaClient(sidecar.url)
    # Before start: one under Ostiary's ids, one under another id but inside Ostiary's packages.
    for module_id, source in (
        allow_all_module("ostiary/policies/cluster/planted", "planted"),
        allow_all_module("elsewhere/x", "elsewhere"),
    ):
        opa.put_policy(module_id, source)
    s = start(served, sidecar, tmp_path)
    assert opa.list_policy_ids() == expected_ids("base")
    assert admit(s, EVIL)["allowed"] is False

    # While running: a new module, and one of Ostiary's own replaced in place with other text.
    opa.put_policy(*allow_all_module("someone/else", "someone"))
    wait_until(lambda: "someone/else" not in opa.list_policy_ids())
    assert admit(s, EVIL)["allowed"] is False
    opa.put_policy(*allow_all_module("ostiary/policies/cluster/base", "base"))
    wait_until(
        lambda: opa.list_policies()["ostiary/policies/cluster/base"] != allow_all_module("x", "base")[1]
    )
    assert admit(s, EVIL)["allowed"] is False
    assert opa.list_policy_ids() == expected_ids("base")
    metrics = requests.get(s.base + "/metrics", timeout=5).text
    assert 'ostiary_opa_foreign_changes_total{change="foreign"} 1.0' in metrics
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
