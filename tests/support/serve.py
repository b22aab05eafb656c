"""`ostiary serve --policy-dir` as a test runs it: a real subprocess (with its own local OPA) on a free
loopback port, its output in a log file, dying with pytest, stopped with its whole process group.

The one launcher of the world and signature tests (it was written four times: the world admission
fixture, the fault tests, the roots tests and the simple-signing world), and the review builders
they send it.

    with serve_documents(tmp, [cluster_policy("p", [...])], "--ca-file", ca) as server:
        response = server.response(deployment_review("reg/app:v1"))
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import requests

from .procs import die_with_parent
from .world import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
OSTIARY = Path(os.environ.get("OSTIARY_BIN") or REPO_ROOT / ".venv" / "bin" / "ostiary")
READY_TIMEOUT = 45.0


class Ostiary:
    """A running `ostiary serve`: its URL, process and log."""

    def __init__(self, url: str, proc: subprocess.Popen, log: Path):
        self.url, self.proc, self.log = url, proc, log
        self.startup_seconds: float | None = None

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def admit(self, review: dict, timeout: float = 20) -> dict:
        """POST /admit: the whole AdmissionReview it answers (HTTP 200 asserted)."""
        r = requests.post(f"{self.url}/admit", json=review, timeout=timeout)
        assert r.status_code == 200, f"HTTP {r.status_code}: {r.text[:500]}\n{self.tail()}"
        return r.json()

    def response(self, review: dict, timeout: float = 30) -> dict:
        """POST /admit: the AdmissionResponse only."""
        return self.admit(review, timeout)["response"]

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until /readyz answers 200; AssertionError with the log's tail when the process exits or
        the time runs out."""
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        last = "no answer"
        while True:
            assert self.proc.poll() is None, (
                f"ostiary serve exited with {self.proc.returncode}:\n{self.tail()}"
            )
            try:
                r = requests.get(f"{self.url}/readyz", timeout=2)
                if r.status_code == 200:
                    self.startup_seconds = time.monotonic() - started
                    return
                last = f"HTTP {r.status_code}: {r.text[:300]}"
            except requests.RequestException as exc:
                last = type(exc).__name__
            if time.monotonic() > deadline:
                raise AssertionError(f"ostiary serve not ready after {timeout:.0f}s ({last}):\n{self.tail()}")
            time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL after 10 s."""
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


def start(tmp: Path, policy_dir: Path, *extra: str) -> Ostiary:
    """`ostiary serve --policy-dir policy_dir --listen 127.0.0.1:<free port> *extra`, started (not
    waited for): its log is tmp/ostiary-<port>.log, its working directory tmp."""
    port = free_port()
    log = tmp / f"ostiary-{port}.log"
    argv = [str(OSTIARY), "serve", "--policy-dir", str(policy_dir), "--listen", f"127.0.0.1:{port}", *extra]
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=tmp,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl
        )
    return Ostiary(f"http://127.0.0.1:{port}", proc, log)


def start_ready(tmp: Path, policy_dir: Path, *extra: str, timeout: float = READY_TIMEOUT) -> Ostiary:
    """start(), then wait_ready(); stopped again when it does not get ready."""
    server = start(tmp, policy_dir, *extra)
    try:
        server.wait_ready(timeout)
    except BaseException:
        stop(server.proc)
        raise
    return server


def write_documents(policy_dir: Path, documents: list[dict]) -> Path:
    """Each policy document as its own JSON file in `policy_dir` (made if missing), in order."""
    policy_dir.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(documents):
        name = f"{i:03d}-{doc['kind'].lower()}-{doc.get('metadata', {}).get('name', 'doc')}.json"
        (policy_dir / name).write_text(json.dumps(doc))
    return policy_dir


@contextlib.contextmanager
def serve_documents(tmp: Path, documents: list[dict], *extra: str) -> Iterator[Ostiary]:
    """`ostiary serve` over a policy directory holding `documents`, ready; stopped on exit."""
    server = start_ready(tmp, write_documents(tmp / "policies", documents), *extra)
    try:
        yield server
    finally:
        stop(server.proc)


# ---- what is sent to it ------------------------------------------------------------------------------


def cluster_policy(name: str, repositories: list[dict]) -> dict:
    return {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ClusterImagePolicy",
        "metadata": {"name": name},
        "spec": {"repositories": repositories},
    }


def deployment_review(*images: str, namespace: str = "default", operation: str = "CREATE") -> dict:
    """An AdmissionReview of a Deployment "web" running `images` (containers c0, c1, ...), its own uid."""
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


def patch_of(response: dict) -> list[dict]:
    """The JSONPatch of an AdmissionResponse ([] when it has none)."""
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


def message(response: dict) -> str:
    return (response.get("status") or {}).get("message", "")
