"""The API server gone: Ostiary keeps deciding with the last good policies, and says so honestly.

While kube-apiserver is down, nothing new can reach Ostiary from the cluster, but a webhook call
already on its way (or one from a second API server) must still get the verdict of the policies
last seen; readiness stays 200 because those policies are in force in OPA (taking the replica out
of its Service would only turn an outage of the API server into an outage of every admission).
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.request
import uuid

import pytest

from tests.e2e.k8s import eventually

pytestmark = pytest.mark.e2e


def _admit(ostiary, namespace: str, image: str) -> dict:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "tester"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": namespace},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
        },
    }
    context = ssl.create_default_context(cafile=str(ostiary.tls_ca_file))
    request = urllib.request.Request(
        f"{ostiary.url}/admit", data=json.dumps(review).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, context=context, timeout=15) as response:
        return json.loads(response.read())["response"]


def test_with_the_api_server_gone_the_last_good_policies_decide(control_plane, kube, namespace, ostiary):
    kube.policy(namespace, [{"name": "registry.example.com/kept/*"}], name="kept")
    eventually(lambda: _admit(ostiary, namespace, "registry.example.com/kept/app:1")["allowed"], timeout=30)
    seen: dict[str, list] = {"ready": [], "kept": [], "other": []}
    down = threading.Event()

    def probe() -> None:
        down.wait(30)
        time.sleep(3.5)  # past the apiserver's 3 s graceful stop: it is down, every watch broken
        for _ in range(6):
            seen["ready"].append(ostiary.readyz()[0])
            seen["kept"].append(_admit(ostiary, namespace, "registry.example.com/kept/app:1")["allowed"])
            seen["other"].append(_admit(ostiary, namespace, "registry.example.com/other/app:1")["allowed"])
            time.sleep(0.5)

    worker = threading.Thread(target=probe)
    worker.start()
    down.set()
    control_plane.restart_apiserver(down_seconds=8)
    worker.join(timeout=60)
    assert seen["kept"] and all(seen["kept"]), seen
    assert not any(seen["other"]), seen
    assert set(seen["ready"]) == {200}, seen
