"""A tenant's ImagePolicy cannot turn the webhook into a network probe (serve --trust-server-allow).

From the tenant's side, through a real `ostiary serve` and its OPA: a namespace policy names trust
servers at addresses of its choosing. A server that is neither a default, nor named by a
ClusterImagePolicy, nor allowed by the operator is never contacted (a listening socket sees no
connection) and the denial says it is not allowed. Once the operator allows them, an address that
refuses, one that fails TLS and one that keeps silent give the same denial, "could not be reached";
what happened is in the operator's log only.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from tests.integration.helpers import pod_spec, review, workload
from tests.integration.test_server import OSTIARY, Served


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([OSTIARY, *args], check=False, capture_output=True, text=True, timeout=120)


class Listener:
    """A TCP socket on loopback that counts connections; `reply` bytes are sent to each (None: silent)."""

    def __init__(self, reply: bytes | None = None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.reply = reply
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            if self.reply is not None:
                conn.sendall(self.reply)
                conn.close()
            else:
                self.held.append(conn)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def policies(tmp_path: Path, cluster_server: str, tenant_servers: dict[str, str]) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    docs = [
        {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ClusterImagePolicy",
            "metadata": {"name": "cluster"},
            "spec": {
                "repositories": [
                    {
                        "name": "registry.example.com/cluster/*",
                        "policy": {"trust": {"enabled": True, "trustServer": cluster_server}},
                    }
                ]
            },
        },
        {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ImagePolicy",
            "metadata": {"name": "probe", "namespace": "tenant"},
            "spec": {
                "repositories": [
                    {
                        "name": f"registry.example.com/{name}/*",
                        "policy": {"trust": {"enabled": True, "trustServer": url}},
                    }
                    for name, url in tenant_servers.items()
                ]
            },
        },
    ]
    (directory / "policies.json").write_text(json.dumps(docs[0]))
    (directory / "tenant.json").write_text(json.dumps(docs[1]))
    return directory


def denial(served: Served, image: str) -> str:
    body = review(workload("Pod", pod_spec(image), namespace="tenant"), namespace="tenant")
    answer = served.admit(body).json()["response"]
    assert answer["allowed"] is False, answer
    return answer["status"]["message"]


@pytest.fixture()
def listeners():
    made: list[Listener] = []

    def make(reply: bytes | None = None) -> Listener:
        made.append(Listener(reply))
        return made[-1]

    yield make
    for listener in made:
        listener.close()


def test_a_namespace_policy_cannot_make_ostiary_contact_an_address_not_allowed(tmp_path, listeners, request):
    probe, cluster = listeners(), listeners()
    directory = policies(tmp_path, cluster.url, {"probe": probe.url, "same": cluster.url})
    served = Served("--policy-dir", str(directory), "--budget", "2")
    request.addfinalizer(served.stop)
    served.wait_ready()
    message = denial(served, "registry.example.com/probe/app:1")
    assert f"trust server {probe.url} is not one the cluster operator allows" in message, message
    assert probe.accepted == 0  # not a single connection to the tenant's address
    # The operator's own server (named by the cluster policy) may be named by a tenant: contacted.
    message = denial(served, "registry.example.com/same/app:1")
    assert "not one the cluster operator allows" not in message and cluster.accepted >= 1, message
    # `ostiary check` reports the entry, with the same allow-list.
    check = run_cli("check", "--policy-dir", str(directory))
    assert check.returncode == 1 and "trust-server-not-allowed" in check.stderr and probe.url in check.stderr
    assert "same" not in re.findall(r"repositories\[(\d)\]", check.stderr)
    allowed = run_cli("check", "--policy-dir", str(directory), "--trust-server-allow", probe.url)
    assert "trust-server-not-allowed" not in allowed.stderr, allowed.stderr


def test_connection_failures_read_the_same_to_the_policy_author(tmp_path, listeners, request):
    silent, garbage = listeners(), listeners(b"HTTP/1.0 200 OK\r\n\r\nnot TLS at all\n")
    refused = f"https://127.0.0.1:{closed_port()}"
    targets = {"refused": refused, "tls": garbage.url, "silent": silent.url}
    directory = policies(tmp_path, "https://notary.example.com", targets)
    served = Served(
        "--policy-dir",
        str(directory),
        "--budget",
        "2",
        *[a for url in targets.values() for a in ("--trust-server-allow", url)],
    )
    request.addfinalizer(served.stop)
    served.wait_ready()
    messages = {name: denial(served, f"registry.example.com/{name}/app:1") for name in targets}
    assert garbage.accepted >= 1 and silent.accepted >= 1  # allowed: contacted
    shown = {
        name: message.replace(targets[name], "SERVER").replace(f"/{name}/", "/NAME/")
        for name, message in messages.items()
    }
    assert len(set(shown.values())) == 1, shown  # one text, whatever happened
    text = shown["refused"]
    assert "SERVER could not be reached" in text, text
    for revealing in ("refused", "TLS", "SSL", "did not answer", "within", "Connection", "timed out"):
        assert revealing not in text, (revealing, text)
    served.stop()
    log = served.proc.stdout.read()
    assert f"cannot connect to notary server {refused}" in log  # the operator sees what happened
    assert f"TLS with notary server {garbage.url} failed" in log
    assert f"notary server {silent.url} did not answer" in log


def test_the_allow_flag_takes_only_https_urls():
    result = run_cli("serve", "--policy-dir", ".", "--trust-server-allow", "http://plain")
    assert result.returncode == 2 and "--trust-server-allow" in result.stderr
