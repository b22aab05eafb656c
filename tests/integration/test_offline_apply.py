"""`ostiary apply` as a platform team runs it in CI, and held to the verdict of `ostiary serve`'s /admit.

Real components only: the `ostiary` executable, its local OPA, and for the comparison a real
`ostiary serve` process started as tests/integration/test_server.py starts it.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import yaml

from app.offline.engine import admission_review
from app.offline.manifests import load_manifests
from tests.integration.test_server import Served

OSTIARY = str(Path(sys.executable).parent / "ostiary")

POLICIES = """\
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: cluster}
spec:
  repositories:
    - name: "registry.example.com/*"
      policy: {mutateImage: false}
    - name: "quay.io/team/*"
    - name: "docker.io/library/busybox"
---
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: rollout}
spec:
  mode: warn
  repositories:
    - name: "ghcr.io/rollout/*"
      policy: {trust: {enabled: true, trustServer: "https://127.0.0.1:1"}}
---
apiVersion: ostiary.dev/v1
kind: ImagePolicy
metadata: {name: sandbox, namespace: sandbox}
spec:
  repositories:
    - name: "*"
"""

CUSTOM = """\
package ostiary.custom.house

import rego.v1

deny contains msg if {
    some img in input.images
    img.ref.valid
    img.ref.tag == "latest"
    msg := sprintf("image %s uses the tag latest", [img.image])
}

deny contains msg if {
    input.request.namespace == "production"
    not "deployers" in object.get(input.request.userInfo, "groups", [])
    msg := sprintf("%s may not deploy to production", [input.request.userInfo.username])
}

warn contains msg if {
    some img in input.images
    img.ref.valid
    img.ref.digest == null
    msg := sprintf("image %s is not pinned by digest", [img.image])
}
"""

CORPUS = {
    "apps/web.yaml": """\
        # Source: web/templates/deployment.yaml
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: web}
        spec:
          template:
            spec:
              initContainers: [{name: init, image: "registry.example.com/tools/init:1"}]
              containers: [{name: web, image: "registry.example.com/web:2.0"}]
        ---
        # Source: web/templates/configmap.yaml
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: web-config}
        data: {a: b}
        """,
    "apps/batch.yaml": """\
        apiVersion: batch/v1
        kind: CronJob
        metadata: {name: nightly, namespace: jobs}
        spec:
          schedule: "0 1 * * *"
          jobTemplate:
            spec:
              template:
                spec: {containers: [{name: job, image: "evil.io/miner:1"}]}
        ---
        apiVersion: batch/v1
        kind: Job
        metadata: {name: once}
        spec:
          template:
            spec: {containers: [{name: job, image: "quay.io/team/job"}]}
        """,
    "apps/list.yaml": """\
        apiVersion: v1
        kind: List
        items:
          - apiVersion: apps/v1
            kind: StatefulSet
            metadata: {name: db, namespace: sandbox}
            spec: {template: {spec: {containers: [{name: db, image: "anything.io/db:9"}]}}}
          - apiVersion: apps/v1
            kind: DaemonSet
            metadata: {name: agent}
            spec: {template: {spec: {containers: [{name: a, image: "docker.io/library/busybox:1.36"}, {name: b, image: "ghcr.io/rollout/x:1"}]}}}
        """,
    "apps/prod.json": json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "prod-pod", "namespace": "production"},
            "spec": {"containers": [{"name": "p", "image": "registry.example.com/web@sha256:" + "a" * 64}]},
        }
    ),
    "apps/nested/more.yml": """\
        apiVersion: apps/v1
        kind: ReplicaSet
        metadata: {name: rs}
        spec: {template: {spec: {containers: [{name: x, image: "NOT A REFERENCE"}]}}}
        ---
        apiVersion: v1
        kind: ReplicationController
        metadata: {name: rc}
        spec: {template: {spec: {ephemeralContainers: [{name: dbg, image: "registry.example.com/debug"}]}}}
        """,
}


def run(*args, stdin=None):
    return subprocess.run(
        [OSTIARY, *args], check=False, capture_output=True, text=True, timeout=120, input=stdin
    )


@pytest.fixture()
def project(tmp_path):
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(POLICIES)
    (tmp_path / "rego").mkdir()
    (tmp_path / "rego" / "house.rego").write_text(CUSTOM)
    for name, text in CORPUS.items():
        path = tmp_path / "manifests" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def apply_json(project, *extra):
    result = run(
        "apply",
        str(project / "manifests"),
        "--policy-dir",
        str(project / "policies"),
        "--rego-dir",
        str(project / "rego"),
        "-o",
        "json",
        *extra,
    )
    assert result.returncode in (0, 1), result.stderr
    return result, json.loads(result.stdout)


def test_apply_reaches_the_verdict_of_the_running_webhook_on_a_corpus(project, tmp_path):
    result, out = apply_json(project)
    results = out["results"]
    objects = load_manifests([str(project / "manifests")])
    assert len(results) == len(objects) == 9
    assert result.returncode == 1  # the corpus has denials

    server = Served("--policy-dir", str(project / "policies"), "--rego-dir", str(project / "rego"))
    try:
        server.wait_ready()
        for number, (item, mine) in enumerate(zip(objects, results, strict=False)):
            review = admission_review(item.obj, uid=f"corpus-{number}", username="ostiary-apply")
            answer = server.admit(review).json()["response"]
            patch = json.loads(base64.b64decode(answer["patch"])) if "patch" in answer else []
            label = f"{mine['kind']} {mine['namespace']}/{mine['name']}"
            assert mine["allowed"] is answer["allowed"], label
            assert mine["message"] == (answer.get("status") or {}).get("message", ""), label
            assert mine["warnings"] == answer.get("warnings", []), label
            assert mine["patch"] == patch, label
    finally:
        server.stop()

    by_name = {r["name"]: r for r in results}
    # what a platform team reads: the verdict, the matched entry, the messages, per object and image
    assert by_name["web"]["verdict"] == "allowed" and by_name["web"]["namespace"] == "default"
    assert [i["entry"]["repository"] for i in by_name["web"]["images"]] == ["registry.example.com/*"] * 2
    assert by_name["web-config"]["verdict"] == "not checked"
    nightly = by_name["nightly"]
    assert nightly["verdict"] == "denied" and nightly["namespace"] == "jobs"
    assert nightly["images"][0]["entry"] is None
    assert (
        "no repository entry in the ClusterImagePolicies matches evil.io/miner:1"
        in nightly["images"][0]["reasons"][0]
    )
    assert by_name["once"]["verdict"] == "denied"
    assert "house: image quay.io/team/job uses the tag latest" in by_name["once"]["denials"]
    assert by_name["db"]["images"][0]["entry"] == {
        "kind": "ImagePolicy",
        "name": "sandbox",
        "namespace": "sandbox",
        "repository": "*",
        "index": 0,
        "mode": "enforce",
    }
    assert by_name["agent"]["verdict"] == "allowed"
    rollout = by_name["agent"]["images"][1]
    assert rollout["trust"]["verified"] is False and "127.0.0.1:1" in rollout["trust"]["error"]
    assert any(w.startswith("image ghcr.io/rollout/x:1: warn mode") for w in by_name["agent"]["warnings"])
    assert "house: ostiary-apply may not deploy to production" in by_name["prod-pod"]["denials"]
    assert by_name["rs"]["verdict"] == "denied" and "invalid image reference" in by_name["rs"]["message"]
    assert by_name["rc"]["images"][0]["container"] == {"kind": "ephemeralContainers", "name": "dbg"}


def test_requester_identity_and_namespace_options(project):
    _, out = apply_json(project, "--as", "carol", "--as-group", "deployers", "-n", "production")
    by_name = {r["name"]: r for r in out["results"]}
    assert by_name["prod-pod"]["verdict"] == "allowed"  # carol is in deployers
    assert by_name["web"]["namespace"] == "production"  # --namespace fills in a manifest without one
    assert by_name["nightly"]["namespace"] == "jobs"  # ... and never overrides the manifest's own


def test_exit_codes_and_formats(project, tmp_path):
    policies, rego = str(project / "policies"), str(project / "rego")
    allowed = project / "manifests" / "apps" / "web.yaml"
    ok = run("apply", str(allowed), "--policy-dir", policies, "--rego-dir", rego)
    assert ok.returncode == 0, ok.stderr
    assert (
        "ALLOWED" in ok.stdout and "registry.example.com/* (ClusterImagePolicy cluster, cluster)" in ok.stdout
    )
    assert "2 objects: 1 allowed, 0 denied, 1 not checked" in ok.stdout  # web.yaml has a ConfigMap

    as_yaml = run(
        "apply", str(project / "manifests"), "--policy-dir", policies, "--rego-dir", rego, "-o", "yaml"
    )
    assert as_yaml.returncode == 1
    assert yaml.safe_load(as_yaml.stdout)["summary"] == {
        "objects": 9,
        "denied": 5,
        "allowed": 3,
        "not_checked": 1,  # the ConfigMap
    }

    junit = run(
        "apply", str(project / "manifests"), "--policy-dir", policies, "--rego-dir", rego, "-o", "junit"
    )
    assert junit.returncode == 1
    suite = ET.fromstring(junit.stdout).find("testsuite")
    assert suite.get("tests") == "9" and suite.get("failures") == "5"
    failures = [c for c in suite.findall("testcase") if c.find("failure") is not None]
    assert {c.get("name").split(" (")[0] for c in failures} == {
        "CronJob jobs/nightly",
        "Job default/once",
        "Pod production/prod-pod",
        "ReplicaSet default/rs",
        "ReplicationController default/rc",
    }

    stdin = run("apply", "-", "--policy-dir", policies, stdin=allowed.read_text())
    assert stdin.returncode == 0, stdin.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n")
    broken = run("apply", str(bad), "--policy-dir", policies)
    assert broken.returncode == 2
    assert f"{bad}:5" in broken.stderr and "not valid YAML" in broken.stderr
    assert run("apply", str(tmp_path / "absent.yaml"), "--policy-dir", policies).returncode == 2
    assert run("apply", str(allowed), "--policy-dir", str(tmp_path / "nope")).returncode == 2
    assert run("apply", "--policy-dir", policies).returncode == 2
    bad_policy = tmp_path / "badpol"
    bad_policy.mkdir()
    (bad_policy / "p.yaml").write_text(
        "apiVersion: ostiary.dev/v1\nkind: ImagePolicy\nmetadata: {name: x}\nspec: {}\n"
    )
    refused = run("apply", str(allowed), "--policy-dir", str(bad_policy))
    assert refused.returncode == 2 and "p.yaml#0" in refused.stderr
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("apiVersion: v1\nkind: Pod\n---\njust a string\n")
    assert "scalar.yaml:4: document 1 is a str" in run("apply", str(scalar), "--policy-dir", policies).stderr


def test_an_admission_review_in_the_manifests_is_decided_as_it_is(project):
    review = admission_review(
        yaml.safe_load(textwrap.dedent(CORPUS["apps/web.yaml"]).split("---")[0]),
        uid="given-uid",
        namespace="production",
        username="mallory",
    )
    result = run(
        "apply",
        "-",
        "--policy-dir",
        str(project / "policies"),
        "--rego-dir",
        str(project / "rego"),
        "-o",
        "json",
        stdin=json.dumps(review),
    )
    assert result.returncode == 1
    assert json.loads(result.stdout)["results"][0]["denials"] == [
        "house: mallory may not deploy to production"
    ]


HELM_OUTPUT = """\
---
# Source: web/templates/deploy.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  name: web2
spec:
  template:
    spec:
      containers:
        - name: a
          imag: nginx:1.25
---
# Source: web/templates/pod.yaml
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
    - name: a
      image: registry.example.com/app:1
      imagePullPolicy: Always
      imagePullPolicy: Never
"""


def test_every_manifest_mistake_at_once_in_reading_order(project):
    """Duplicate keys and unknown container fields are refused (kubectl refuses them too), all of them,
    each at its line and column and named as written, never taken silently (`imag:` is no image)."""
    result = run("apply", "-", "--policy-dir", str(project / "policies"), stdin=HELM_OUTPUT)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "Error: -:7:3: metadata has the key `name` twice",
        "-:13:11: spec.template.spec.containers[0]: unknown field `imag` (did you mean `image`?)",
        "-:24:7: spec.containers[0] has the key `imagePullPolicy` twice",
    ]


def test_helm_template_output_is_named_by_its_source_comments(project):
    fixed = (
        HELM_OUTPUT.replace("  name: web2\n", "")
        .replace("imag:", "image:")
        .replace("      imagePullPolicy: Never\n", "")
    )
    result = run("apply", "-", "--policy-dir", str(project / "policies"), "-o", "json", stdin=fixed)
    sources = [r["source"] for r in json.loads(result.stdout)["results"]]
    assert sources == ["web/templates/deploy.yaml (-:3)", "web/templates/pod.yaml (-:15)"]


def test_not_checked_objects_are_not_counted_as_allowed(project, tmp_path):
    manifests = tmp_path / "m.yaml"
    manifests.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: registry.example.com/a:1}]}\n"
    )
    result = run("apply", str(manifests), "--policy-dir", str(project / "policies"), "-o", "json")
    assert json.loads(result.stdout)["summary"] == {"objects": 2, "allowed": 1, "denied": 0, "not_checked": 1}
    table = run("apply", str(manifests), "--policy-dir", str(project / "policies"))
    assert "2 objects: 1 allowed, 0 denied, 1 not checked" in table.stdout
