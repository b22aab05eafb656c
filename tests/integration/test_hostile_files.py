"""Hostile and odd YAML/JSON files given to every command that reads them (app/yamlio.py).

From the attacker's side: a few hundred bytes of YAML aliases (a "billion laughs" bomb), nesting
far deeper than any Kubernetes object, and a file larger than any policy, handed to `apply`,
`check`, `explain`, `test`, `translate` and to `serve --policy-dir`. Each must answer quickly with
exit 2 (serve: not ready) and the file's name, never a traceback. And YAML's values that are not
JSON (a date) read the same, as the string written, on every command.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from tests.integration.test_server import Served

OSTIARY = str(Path(sys.executable).parent / "ostiary")

POLICY = """\
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata:
  name: cluster
  annotations: {created: 2024-01-01}
spec:
  repositories:
    - name: "registry.example.com/*"
      policy: {mutateImage: false}
    - name: "quay.io/legacy/*"  # Portieris' free-form `va` object: what YAML reads goes into OPA
      policy: {va: {since: 2024-01-01, at: 2024-01-01T10:00:00Z, 1: one}}
"""

# 546 bytes: nine levels of nine aliases, 9**9 (387 million) strings once expanded.
BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi", strict=True)
)


def deep_yaml(levels: int = 5000) -> str:
    return "kind: Pod\nspec: " + "[" * levels + "]" * levels + "\n"


def deep_json(levels: int = 5000) -> str:
    return '{"kind": "Pod", "spec": ' + "[" * levels + "]" * levels + "}"


def pod(name: str = "p", extra: str = "") -> str:
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n"
        f"  annotations: {{created: 2024-01-01}}{extra}\n"
        "spec:\n  containers: [{name: c, image: registry.example.com/app:1}]\n"
    )


def run(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [OSTIARY, *args], check=False, capture_output=True, text=True, timeout=120, input=stdin, cwd=cwd
    )


def refused(result: subprocess.CompletedProcess, name: str, what: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert name in result.stderr and what in result.stderr, result.stderr[-2000:]


@pytest.fixture()
def policies(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "cluster.yaml").write_text(POLICY)
    return directory


HOSTILE = {
    "bomb.yaml": (BOMB + "kind: Pod\n", "aliases expand to more than"),
    "deep.yaml": (deep_yaml(), "nested deeper than 100 levels"),
    "deep.json": (deep_json(), "nested deeper than 100 levels"),
    "cycle.yaml": ("kind: Pod\nspec: &s {x: *s}\n", "refers to a node that contains it"),
}


def review_of(manifest: dict) -> str:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "default",
                "operation": "CREATE",
                "userInfo": {"username": "alice"},
                "object": manifest,
            },
        }
    )


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_manifests_and_reviews_are_refused_with_the_file_name(tmp_path, policies, name):
    text, what = HOSTILE[name]
    hostile = tmp_path / name
    hostile.write_text(text)
    started = time.monotonic()
    refused(run("apply", "--policy-dir", str(policies), str(hostile)), name, what)
    refused(run("apply", "--policy-dir", str(policies), "-", stdin=text), "-", what)
    refused(run("explain", str(hostile), "--policy-dir", str(policies)), name, what)
    # a bomb in a test file, and a test case naming a hostile manifest
    bomb_test = tmp_path / "bomb_test.yaml"
    bomb_test.write_text(text.replace("kind: Pod", "kind: PolicyTest"))
    refused(run("test", str(bomb_test)), "bomb_test.yaml", what)
    case = tmp_path / "case_test.yaml"
    case.write_text(
        "apiVersion: ostiary.dev/v1\nkind: PolicyTest\nmetadata: {name: t}\n"
        f"spec:\n  policies: policies\n  cases:\n    - name: c\n      manifest: {name}\n"
        "      expect: {verdict: allowed}\n"
    )
    result = run("test", str(case))
    assert result.returncode != 0 and "Traceback" not in result.stderr + result.stdout
    assert name in result.stderr + result.stdout and what in result.stderr + result.stdout
    # Seven commands on a bomb of 9**9 nodes in well under what expanding it costs (minutes, GBs).
    assert time.monotonic() - started < 100


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_policy_files_are_refused_by_every_reader(tmp_path, policies, name, request):
    text, what = HOSTILE[name]
    hostile_name = name
    (policies / hostile_name).write_text(text.replace("kind: Pod", "kind: ClusterImagePolicy"))
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(pod())
    refused(run("check", "--policy-dir", str(policies)), hostile_name, what)
    refused(run("check", "-o", "json", "--policy-dir", str(policies)), hostile_name, what)
    refused(run("apply", "--policy-dir", str(policies), str(manifest)), hostile_name, what)
    review = tmp_path / "review.json"
    review.write_text(review_of({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}))
    refused(run("explain", str(review), "--policy-dir", str(policies)), hostile_name, what)
    refused(run("translate", str(policies / hostile_name)), hostile_name, what)
    served = Served("--policy-dir", str(policies))
    request.addfinalizer(served.stop)
    served.wait()
    end = time.monotonic() + 30
    while True:
        ready = requests.get(served.base + "/readyz", timeout=5)
        if hostile_name in ready.text or time.monotonic() > end:
            break
        time.sleep(0.2)
    assert ready.status_code == 503 and hostile_name in ready.text and what in ready.text, ready.text
    served.stop()
    assert "Traceback" not in served.proc.stdout.read()


def test_files_larger_than_the_bound_are_refused_unread(tmp_path, policies):
    big = tmp_path / "big.yaml"
    with big.open("w") as handle:
        handle.write(pod())
        handle.write("# " + "x" * (17 * 1024 * 1024) + "\n")
    refused(run("apply", "--policy-dir", str(policies), str(big)), "big.yaml", "larger than")
    (policies / "big.yaml").write_bytes(big.read_bytes())
    refused(run("check", "--policy-dir", str(policies)), "big.yaml", "larger than")


def test_a_yaml_date_reads_as_the_string_written_on_every_command(tmp_path, policies):
    """`created: 2024-01-01` is a date to YAML; every reader makes it the string "2024-01-01", so no
    command fails to write it as JSON and a rule reading it sees the same value offline and served."""
    (policies / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: ostiary-system,"
        " annotations: {created: 2024-01-01}}\nstringData: {created: 2024-01-01}\n"
    )
    rego = tmp_path / "rego"
    rego.mkdir()
    (rego / "created.rego").write_text(
        "package ostiary.custom.created\n\nimport rego.v1\n\n"
        "deny contains msg if {\n"
        "\tvalue := input.request.object.metadata.annotations.created\n"
        '\tvalue != "2024-01-01"\n'
        '\tmsg := sprintf("created is %v", [value])\n'
        "}\n"
    )
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(pod(extra="\n  labels: {when: 2024-01-01T10:00:00Z}"))
    check = run("check", "--policy-dir", str(policies), "--rego-dir", str(rego), "-o", "json")
    assert check.returncode == 0, check.stdout + check.stderr
    apply = run("apply", "--policy-dir", str(policies), "--rego-dir", str(rego), "-o", "json", str(manifest))
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert "Traceback" not in apply.stderr
    review = tmp_path / "review.yaml"  # explain reads YAML reviews too: the date inside is YAML's
    review.write_text(
        "apiVersion: admission.k8s.io/v1\nkind: AdmissionReview\nrequest:\n  uid: u-1\n"
        "  kind: {group: '', version: v1, kind: Pod}\n  resource: {group: '', version: v1, resource: pods}\n"
        "  namespace: default\n  operation: CREATE\n  userInfo: {username: alice}\n  object:\n"
        + textwrap.indent(pod(), "    ")
    )
    explain = run("explain", str(review), "--policy-dir", str(policies), "--rego-dir", str(rego))
    assert explain.returncode == 0, explain.stdout + explain.stderr
    assert json.loads(explain.stdout)["response"]["allowed"] is True
    (tmp_path / "dates_test.yaml").write_text(
        "apiVersion: ostiary.dev/v1\nkind: PolicyTest\nmetadata: {name: dates, created: 2024-01-01}\n"
        "spec:\n  policies: policies\n  rego: rego\n  at: 2024-01-01T00:00:00Z\n  cases:\n"
        "    - name: dated pod\n      manifest: pod.yaml\n      expect: {verdict: allowed}\n"
    )
    test = run("test", "--rego-dir", str(rego), str(tmp_path / "dates_test.yaml"))
    assert test.returncode == 0, test.stdout + test.stderr
    served = Served("--policy-dir", str(policies), "--rego-dir", str(rego))
    try:
        served.wait_ready()
        answer = served.admit(json.loads(review_of_text(review)))
        assert answer.json()["response"]["allowed"] is True, answer.text
    finally:
        served.stop()


def review_of_text(review: Path) -> str:
    """The YAML review as the API server would send it: JSON, the date as the string written."""
    from app.yamlio import load, read_text

    return json.dumps(load(read_text(review), str(review)))
