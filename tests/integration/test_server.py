"""`ostiary serve` as a user runs it: a real process, its own OPA, real HTTP (and TLS)."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.procs import die_with_parent

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
OSTIARY = str(Path(sys.executable).parent / "ostiary")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, *args, scheme="http", verify=True):
        self.port = free_port()
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        self.verify = verify
        self.proc = subprocess.Popen(
            [OSTIARY, "serve", "--listen", f"127.0.0.1:{self.port}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl
        )

    def wait(self, path="/healthz", timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"ostiary serve exited: {self.proc.stdout.read()}")
            try:
                return requests.get(self.base + path, timeout=1, verify=self.verify)
            except requests.RequestException:
                time.sleep(0.1)
        raise AssertionError("ostiary serve did not answer")

    def wait_ready(self, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (
                self.wait().status_code == 200
                and requests.get(self.base + "/readyz", timeout=2, verify=self.verify).status_code == 200
            ):
                return
            time.sleep(0.1)
        raise AssertionError("never ready")

    def admit(self, body):
        return requests.post(self.base + "/admit", json=body, timeout=15, verify=self.verify)

    def stop(self):
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture()
def served(tmp_path):
    instances = []

    def start(*args, **kw):
        s = Served(*args, **kw)
        instances.append(s)
        return s

    yield start
    for s in instances:
        s.stop()


def example(name):
    return json.loads((EXAMPLES / "reviews" / name).read_text())


def test_examples_serve_allow_and_deny(served):
    s = served("--policy-dir", str(EXAMPLES / "policies"))
    s.wait_ready()
    allowed = s.admit(example("deployment-mirror.json")).json()
    assert allowed["response"]["allowed"] is True
    assert allowed["response"]["uid"] == example("deployment-mirror.json")["request"]["uid"]
    denied = s.admit(example("deployment-unlisted.json")).json()["response"]
    assert (
        denied["allowed"] is False
        and "evil.io/registry.example.com/mirror/busybox:1.36" in denied["status"]["message"]
    )
    assert s.admit(example("deployment-sandbox.json")).json()["response"]["allowed"] is True
    metrics = requests.get(s.base + "/metrics", timeout=5).text
    assert 'ostiary_admission_requests_total{error="false",verdict="allowed"} 2.0' in metrics
    assert 'ostiary_admission_requests_total{error="false",verdict="denied"} 1.0' in metrics
    assert "ostiary_admission_duration_seconds_bucket" in metrics
    assert "ostiary_trust_walks_total" in metrics and "ostiary_trust_cached_repositories" in metrics


def test_bad_requests_get_clear_errors(served):
    s = served("--policy-dir", str(EXAMPLES / "policies"))
    s.wait_ready()
    r = requests.post(
        s.base + "/admit", data="not json", headers={"Content-Type": "application/json"}, timeout=5
    )
    assert r.status_code == 400 and "AdmissionReview" in r.json()["error"]
    r = s.admit({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})
    assert r.status_code == 400


def test_invalid_policy_dir_keeps_server_unready_and_denying(served, tmp_path):
    (tmp_path / "p.yaml").write_text(
        "apiVersion: ostiary.dev/v1\nkind: ClusterImagePolicy\nmetadata: {name: ok}\nspec: {repositories: [{name: '*'}]}\n---\napiVersion: ostiary.dev/v1\nkind: ImagePolicy\nmetadata: {name: nons}\nspec: {}\n"  # noqa: E501 - a whole document on one line
    )
    s = served("--policy-dir", str(tmp_path))
    s.wait()
    time.sleep(0.5)
    ready = requests.get(s.base + "/readyz", timeout=5)
    assert ready.status_code == 503
    assert "p.yaml#1" in ready.json()["reason"] and "metadata.namespace" in ready.json()["reason"]
    denied = s.admit(example("deployment-mirror.json")).json()["response"]
    assert denied["allowed"] is False and "not ready" in denied["status"]["message"]


def test_policy_directory_changes_are_picked_up_whole(served, tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "apiVersion: ostiary.dev/v1\nkind: ClusterImagePolicy\nmetadata: {name: c}\nspec: {repositories: [{name: 'registry.example.com/mirror/*'}]}\n"  # noqa: E501 - a whole document on one line
    )
    s = served("--policy-dir", str(tmp_path))
    s.wait_ready()
    assert s.admit(example("deployment-mirror.json")).json()["response"]["allowed"] is True
    policy.write_text(
        "apiVersion: ostiary.dev/v1\nkind: ClusterImagePolicy\nmetadata: {name: c}\nspec: {repositories: [{name: 'quay.io/*'}]}\n"
    )
    deadline = time.monotonic() + 10
    while (
        s.admit(example("deployment-mirror.json")).json()["response"]["allowed"]
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert s.admit(example("deployment-mirror.json")).json()["response"]["allowed"] is False
    # a broken edit is refused whole: the last good set stays in force
    policy.write_text(
        "apiVersion: ostiary.dev/v1\nkind: ClusterImagePolicy\nmetadata: {name: c}\nspec: {repositories: [{name: 'registry.example.com/mirror/*', policy: {trsut: {}}}]}\n"  # noqa: E501 - a whole document on one line
    )
    time.sleep(3)
    assert s.admit(example("deployment-mirror.json")).json()["response"]["allowed"] is False
    assert "trsut" in requests.get(s.base + "/readyz", timeout=5).json()["reason"]


def _cert(path: Path, cn: str, days: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            False,
        )
        .sign(key, hashes.SHA256())
    )
    (path / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (path / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _served_cn(port: int) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_tls_is_served_and_reloaded_when_the_files_change(served, tmp_path):
    _cert(tmp_path, "first", 1)
    s = served(
        "--policy-dir",
        str(EXAMPLES / "policies"),
        "--tls-cert",
        str(tmp_path / "tls.crt"),
        "--tls-key",
        str(tmp_path / "tls.key"),
        scheme="https",
        verify=str(tmp_path / "tls.crt"),
    )
    s.wait_ready()
    assert _served_cn(s.port) == "first"
    staging = tmp_path / "new"
    staging.mkdir()
    _cert(staging, "second", 2)
    shutil.copy(staging / "tls.key", tmp_path / "tls.key")
    shutil.copy(staging / "tls.crt", tmp_path / "tls.crt")
    deadline = time.monotonic() + 10
    while _served_cn(s.port) != "second" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _served_cn(s.port) == "second"


def test_plain_http_is_refused_off_loopback():
    result = subprocess.run(
        check=False,
        args=[OSTIARY, "serve", "--policy-dir", str(EXAMPLES / "policies"), "--listen", "0.0.0.0:18999"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "loopback" in result.stderr


def _opa_children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            comm = (proc / "comm").read_text().strip()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if comm == "opa" and parent in {pid, *_children(pid)}:
            found.append(int(proc.name))
    return found


def _children(pid: int) -> set[int]:
    out = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.add(int(proc.name))
            except OSError:
                continue
    return out


def test_a_killed_local_opa_is_restarted_and_refilled(served):
    s = served("--policy-dir", str(EXAMPLES / "policies"))
    s.wait_ready()
    (opa_pid,) = _opa_children(s.proc.pid)
    os.kill(opa_pid, signal.SIGKILL)
    # until the watchdog has restarted and refilled it, admissions fail closed (tests/integration/test_decisions.py)
    body = example("deployment-mirror.json")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if (
            s.admit(body).json()["response"]["allowed"]
            and requests.get(s.base + "/readyz", timeout=5).status_code == 200
        ):
            break
        time.sleep(0.2)
    assert s.admit(body).json()["response"]["allowed"] is True
    assert _opa_children(s.proc.pid) and _opa_children(s.proc.pid) != [opa_pid]
    metrics = requests.get(s.base + "/metrics", timeout=5).text
    assert "ostiary_opa_resyncs_total 1.0" in metrics
