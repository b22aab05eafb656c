"""The sidecar OPA, run with the chart's own arguments, policy and token, answers only Ostiary.

Real opa binary; the ConfigMap and Secret are laid out as the kubelet mounts them.
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.chart.chart import containers, mount_like_the_kubelet, only, rendered_objects
from tests.e2e.cluster import free_port, tool
from tests.support.procs import die_with_parent

FULLNAME = "t-ostiary"


def run_sidecar(objects: list[dict], root: Path) -> Iterator[tuple[str, str, str]]:
    """Start OPA as the rendered opa container would; yield (api url, diagnostic url, token)."""
    secret = only(objects, "Secret", f"{FULLNAME}-opa-token")
    authz = only(objects, "ConfigMap", f"{FULLNAME}-opa-authz")
    files = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    mount_like_the_kubelet(root / "token", files)
    mount_like_the_kubelet(root / "authz", authz["data"])
    opa = containers(objects)["opa"]
    mounts = {m["mountPath"]: m["name"] for m in opa["volumeMounts"]}
    assert mounts == {"/etc/opa/authz": "opa-authz", "/etc/opa/token": "opa-token"}
    api, diagnostic = free_port(), free_port()
    args = []
    for arg in opa["args"]:
        arg = arg.replace("/etc/opa/authz", str(root / "authz")).replace(
            "/etc/opa/token", str(root / "token")
        )
        if arg.startswith("--addr="):
            arg = f"--addr=127.0.0.1:{api}"
        elif arg.startswith("--diagnostic-addr="):
            arg = f"--diagnostic-addr=127.0.0.1:{diagnostic}"
        args.append(arg)
    with (root / "opa.log").open("wb") as log:
        proc = subprocess.Popen(
            [tool("opa"), *args], stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent()
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (root / "opa.log").read_text()
            try:
                requests.get(f"http://127.0.0.1:{api}/health", timeout=0.5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, (root / "opa.log").read_text()
                time.sleep(0.1)
        yield f"http://127.0.0.1:{api}", f"http://127.0.0.1:{diagnostic}", files["token"]
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def sidecar(tmp_path) -> Iterator[tuple[str, str, str]]:
    yield from run_sidecar(rendered_objects(), tmp_path)


def test_the_sidecar_answers_its_api_only_with_the_token_ostiary_is_given(sidecar) -> None:
    api, _, token = sidecar
    objects_args = containers(rendered_objects())["ostiary"]["args"]
    assert "--opa-token-file=/etc/ostiary/opa-token/token" in objects_args
    bearer = {"Authorization": f"Bearer {token}"}
    module = "package ostiary.planted\n\nallow := true\n"
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        assert requests.get(f"{api}/v1/policies", headers=headers, timeout=5).status_code == 401
        assert (
            requests.put(f"{api}/v1/policies/planted", data=module, headers=headers, timeout=5).status_code
            == 401
        )
        assert (
            requests.post(f"{api}/v1/data/system/ostiary", json={}, headers=headers, timeout=5).status_code
            == 401
        )
    assert (
        requests.put(f"{api}/v1/policies/ostiary/x", data=module, headers=bearer, timeout=5).status_code
        == 200
    )
    assert (
        requests.post(f"{api}/v1/data/ostiary/planted/allow", json={}, headers=bearer, timeout=5).json()[
            "result"
        ]
        is True
    )


def test_only_ostiary_writes_the_policy_documents_root(sidecar) -> None:
    """The policy documents' own root (data.ostiary_policies, outside data.ostiary): nobody
    without Ostiary's token writes, patches, deletes or plants a module over it; Ostiary does."""
    from app.policies.model import POLICY_DATA_ROOT, policy_document_id

    api, _, token = sidecar
    bearer = {"Authorization": f"Bearer {token}"}
    doc = policy_document_id(None, "base")
    assert doc.startswith(POLICY_DATA_ROOT + "/") and not POLICY_DATA_ROOT.startswith("ostiary/")
    assert (
        requests.put(f"{api}/v1/data/{doc}", json={"policy": {}}, headers=bearer, timeout=5).status_code
        == 204
    )
    planted = f"package {POLICY_DATA_ROOT}.cluster.planted\n\npolicy := {{}}\n"
    patch = [{"op": "add", "path": "/planted", "value": {"policy": {}}}]
    attempts = [
        ("PUT", f"/v1/data/{POLICY_DATA_ROOT}", {"data": '{"cluster": {}}'}),
        ("PUT", f"/v1/data/{POLICY_DATA_ROOT}/cluster/planted", {"data": '{"policy": {}}'}),
        ("PATCH", f"/v1/data/{POLICY_DATA_ROOT}/cluster", {"json": patch}),
        ("DELETE", f"/v1/data/{doc}", {}),
        ("DELETE", f"/v1/data/{POLICY_DATA_ROOT}", {}),
        ("GET", f"/v1/data/{POLICY_DATA_ROOT}", {}),
        ("PUT", "/v1/policies/planted", {"data": planted}),
    ]
    for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": "Basic b3N0aWFyeQ=="}):
        for method, path, body in attempts:
            r = requests.request(method, api + path, headers=headers, timeout=5, **body)  # type: ignore[arg-type]
            assert r.status_code == 401, f"{method} {path} with {headers}: {r.status_code} {r.text[:200]}"
    held = requests.get(f"{api}/v1/data/{POLICY_DATA_ROOT}", headers=bearer, timeout=5).json()["result"]
    assert held == {"cluster": {"base": {"policy": {}}}}
    assert requests.delete(f"{api}/v1/data/{doc}", headers=bearer, timeout=5).status_code == 204


def test_the_kubelets_health_probe_needs_no_token_and_metrics_are_closed_by_default(sidecar) -> None:
    api, diagnostic, _ = sidecar
    assert requests.get(f"{diagnostic}/health", timeout=5).status_code == 200
    assert requests.get(f"{api}/health", timeout=5).status_code == 200
    assert requests.get(f"{diagnostic}/metrics", timeout=5).status_code == 401


def test_metrics_open_without_the_token_when_prometheus_scrapes_them(tmp_path) -> None:
    objects = rendered_objects("metrics.serviceMonitor.enabled=true")
    for api, diagnostic, _ in run_sidecar(objects, tmp_path):
        assert requests.get(f"{diagnostic}/metrics", timeout=5).status_code == 200
        assert requests.get(f"{api}/v1/policies", timeout=5).status_code == 401


def test_auth_off_renders_no_token_and_no_flags() -> None:
    objects = rendered_objects("opa.auth.enabled=false")
    assert not [o for o in objects if o["metadata"]["name"].endswith(("-opa-token", "-opa-authz"))]
    assert not any(a.startswith("--opa-token-file") for a in containers(objects)["ostiary"]["args"])
    assert "--authentication=token" not in containers(objects)["opa"]["args"]


POLICY = """\
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: default}
spec:
  repositories:
    - name: "docker.io/library/*"
      policy: {trust: {enabled: true}}
"""


def test_ostiary_given_the_mounted_token_file_works_with_the_authenticated_sidecar(tmp_path) -> None:
    """The chart's two halves fit: `ostiary serve --opa-token-file` (the path the chart passes, the
    Secret's key) gets OPA to take its modules; needs an Ostiary with that flag."""
    from tests.e2e.webhook import OSTIARY_BIN

    objects = rendered_objects()
    ostiary_args = containers(objects)["ostiary"]["args"]
    [token_arg] = [a for a in ostiary_args if a.startswith("--opa-token-file=")]
    mount = next(m for m in containers(objects)["ostiary"]["volumeMounts"] if m["name"] == "opa-token")
    token_file = token_arg.split("=", 1)[1].replace(mount["mountPath"], str(tmp_path / "token"))
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "policy.yaml").write_text(POLICY)
    for api, _, token in run_sidecar(objects, tmp_path):
        port = free_port()
        with (tmp_path / "ostiary.log").open("wb") as log:
            proc = subprocess.Popen(
                [
                    str(OSTIARY_BIN),
                    "serve",
                    "--policy-dir",
                    str(tmp_path / "policies"),
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--opa-url",
                    api,
                    "--opa-token-file",
                    token_file,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl
            )
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, (tmp_path / "ostiary.log").read_text()[-3000:]
                try:
                    if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "ostiary.log").read_text()[-3000:]
                time.sleep(0.2)
            held = requests.get(f"{api}/v1/policies", headers={"Authorization": f"Bearer {token}"}, timeout=5)
            assert any(p["id"].startswith("ostiary/") for p in held.json()["result"])
        finally:
            proc.terminate()
            proc.wait(15)
