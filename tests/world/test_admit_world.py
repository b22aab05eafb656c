"""End to end on loopback: `ostiary serve` (a real subprocess, with its local OPA) admits Deployments
against the real notary-server and registry of the test world.

Policies (a temporary --policy-dir):
- ClusterImagePolicy "world": REG/ostiary/* needs trust (trustServer = the world's notary-server);
  REG/ostiary/signer-pem also needs signer alice (Secret alice-signer in ostiary-system, her PEM key);
  REG/ostiary/signer-cert needs signer "bob" but its Secret holds mallory's key (wrong signer).
- Namespace "mallory-ns" has an ImagePolicy (so only it applies there) that wants signer alice with
  mallory's PEM key in a Secret of that namespace: alice's real signature must not satisfy it.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.support.procs import die_with_parent
from tests.support.world import free_port

pytestmark = pytest.mark.world

REPO_ROOT = Path(__file__).resolve().parents[2]
OSTIARY = Path(os.environ.get("OSTIARY_BIN") or REPO_ROOT / ".venv" / "bin" / "ostiary")
SYSTEM_NS = "ostiary-system"
READY_TIMEOUT = 45.0


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def signer_secret(name: str, namespace: str, signer: str, pem: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"name": b64(signer), "publicKey": b64(pem)},
    }


def policy_documents(world) -> list[dict]:
    reg, url = world.registry_host, world.notary_url

    def trust(*secrets: str) -> dict:
        t: dict = {"enabled": True, "trustServer": url}
        if secrets:
            t["signerSecrets"] = [{"name": s} for s in secrets]
        return {"trust": t}

    return [
        {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ClusterImagePolicy",
            "metadata": {"name": "world"},
            "spec": {
                "repositories": [
                    {"name": f"{reg}/ostiary/*", "policy": trust()},
                    {"name": f"{reg}/ostiary/signer-pem", "policy": trust("alice-signer")},
                    {"name": f"{reg}/ostiary/signer-cert", "policy": trust("bob-is-mallory")},
                ]
            },
        },
        signer_secret("alice-signer", SYSTEM_NS, "alice", world.alice_pem),
        signer_secret("bob-is-mallory", SYSTEM_NS, "bob", world.mallory_pem),
        {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ImagePolicy",
            "metadata": {"name": "wrong-signer", "namespace": "mallory-ns"},
            "spec": {"repositories": [{"name": f"{reg}/ostiary/*", "policy": trust("alice-is-mallory")}]},
        },
        signer_secret("alice-is-mallory", "mallory-ns", "alice", world.mallory_pem),
    ]


class Ostiary:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path):
        self.url, self.proc, self.log = url, proc, log
        self.startup_seconds: float | None = None

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def admit(self, review: dict) -> dict:
        r = requests.post(f"{self.url}/admit", json=review, timeout=20)
        assert r.status_code == 200, f"HTTP {r.status_code}: {r.text[:500]}\n{self.tail()}"
        return r.json()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def ostiary(world, tmp_path_factory):
    if not OSTIARY.exists():
        pytest.fail(
            f"{OSTIARY} is missing: install the project into its venv (pip install -e .)", pytrace=False
        )
    tmp = tmp_path_factory.mktemp("ostiary-serve")
    policies = tmp / "policies"
    policies.mkdir()
    for i, doc in enumerate(policy_documents(world)):
        (policies / f"{i:02d}-{doc['kind'].lower()}-{doc['metadata']['name']}.json").write_text(
            json.dumps(doc)
        )
    port = free_port()
    log = tmp / "ostiary.log"
    argv = [
        str(OSTIARY),
        "serve",
        "--policy-dir",
        str(policies),
        "--listen",
        f"127.0.0.1:{port}",
        "--ca-file",
        world.ca_file,
    ]
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            argv,
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl
        )
    server = Ostiary(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        last = "no answer"
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"`{' '.join(argv)}` exited with {proc.returncode}:\n{server.tail()}", pytrace=False
                )
            try:
                r = requests.get(f"{server.url}/readyz", timeout=1)
                if r.status_code == 200:
                    break
                last = f"HTTP {r.status_code}: {r.text[:300]}"
            except requests.RequestException as e:
                last = f"{type(e).__name__}"
            if time.monotonic() > deadline:
                pytest.fail(
                    f"ostiary serve not ready after {READY_TIMEOUT:.0f}s ({last}):\n{server.tail()}",
                    pytrace=False,
                )
            time.sleep(0.1)
        server.startup_seconds = READY_TIMEOUT - (deadline - time.monotonic())
        yield server
    finally:
        _stop(proc)


def deployment_review(*images: str, namespace: str = "default", operation: str = "CREATE") -> dict:
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace, "uid": str(uuid.uuid4())},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}},
        },
    }
    gvk = {"group": "apps", "version": "v1", "kind": "Deployment"}
    gvr = {"group": "apps", "version": "v1", "resource": "deployments"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": "web",
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "world-tester", "groups": ["system:authenticated"]},
            "object": deployment,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def review(ostiary, *images: str, namespace: str = "default") -> tuple[dict, dict]:
    body = deployment_review(*images, namespace=namespace)
    answer = ostiary.admit(body)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == body["request"]["uid"]
    return body, response


def patch_of(response: dict) -> list[dict]:
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


def message(response: dict) -> str:
    return (response.get("status") or {}).get("message", "")


def assert_pinned(response: dict, expected: dict[int, str]) -> None:
    """The patch sets container i's image to expected[i], and touches nothing else."""
    ops = patch_of(response)
    got = {}
    record = [op for op in ops if op["path"].startswith("/metadata")]  # ostiary.dev/original-images
    assert len(record) == (1 if ops else 0), ops
    ops = [op for op in ops if op not in record]
    for op in ops:
        assert op["op"] in ("replace", "add"), op
        prefix = "/spec/template/spec/containers/"
        assert op["path"].startswith(prefix) and op["path"].endswith("/image"), op
        got[int(op["path"][len(prefix) :].split("/")[0])] = op["value"]
    assert got == expected


def test_server_started(ostiary):
    assert ostiary.startup_seconds < READY_TIMEOUT


def test_signed_tag_is_admitted_and_pinned(ostiary, world):
    img = world["signed"]
    _, response = review(ostiary, img.reference)
    assert response["allowed"] is True, message(response)
    assert_pinned(response, {0: f"{img.registry}/{img.repo}:{img.tag}@{img.digest}"})


def test_already_pinned_image_gets_no_patch(ostiary, world):
    img = world["signed"]
    _, response = review(ostiary, img.pinned)
    assert response["allowed"] is True, message(response)
    assert patch_of(response) == []


def test_unsigned_tag_is_denied_naming_the_image(ostiary, world):
    img = world["unsigned"]
    _, response = review(ostiary, img.reference)
    assert response["allowed"] is False
    assert img.reference in message(response), message(response)
    assert "patch" not in response


def test_repository_without_trust_data_is_denied(ostiary, world):
    img = world["no-trust"]
    _, response = review(ostiary, img.reference)
    assert response["allowed"] is False
    assert img.repo in message(response), message(response)


def test_one_unsigned_image_denies_the_whole_deployment(ostiary, world):
    signed, unsigned = world["signed"], world["unsigned"]
    _, response = review(ostiary, signed.reference, unsigned.reference)
    assert response["allowed"] is False
    assert unsigned.repo in message(response), message(response)
    assert "patch" not in response


def test_signer_alice_pinned(ostiary, world):
    img = world["signer-pem"]
    _, response = review(ostiary, img.reference)
    assert response["allowed"] is True, message(response)
    assert_pinned(response, {0: img.pinned})


def test_two_images_both_pinned(ostiary, world):
    a, b = world["signed"], world["signer-pem"]
    _, response = review(ostiary, a.reference, b.reference)
    assert response["allowed"] is True, message(response)
    assert_pinned(response, {0: a.pinned, 1: b.pinned})


def test_wrong_signer_key_in_cluster_policy_is_denied(ostiary, world):
    img = world["signer-cert"]  # signed by bob; the policy's "bob" Secret holds mallory's key
    _, response = review(ostiary, img.reference)
    assert response["allowed"] is False
    assert img.reference in message(response), message(response)
    assert "bob" in message(response), message(response)


def test_wrong_signer_key_in_namespace_policy_is_denied(ostiary, world):
    img = world["signer-pem"]  # signed by alice; mallory-ns wants "alice" with mallory's key
    _, response = review(ostiary, img.reference, namespace="mallory-ns")
    assert response["allowed"] is False
    assert img.reference in message(response), message(response)
    assert "alice" in message(response), message(response)


def test_digest_reference_signed_under_a_tag_is_admitted(ostiary, world):
    img = world["signed"]
    _, response = review(ostiary, f"{img.gun}@{img.digest}")
    assert response["allowed"] is True, message(response)
    assert patch_of(response) == []


def test_tag_at_wrong_digest_is_denied(ostiary, world):
    img, other = world["signed"], world["signer-pem"]
    _, response = review(ostiary, f"{img.gun}:{img.tag}@{other.digest}")
    assert response["allowed"] is False
    assert other.digest in message(response), message(response)
