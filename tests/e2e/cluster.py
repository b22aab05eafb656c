"""A throwaway Kubernetes control plane on loopback: etcd + kube-apiserver, envtest style.

No controller-manager and no scheduler run: objects are stored, admission webhooks are called, but
nothing reconciles (a Deployment makes no ReplicaSet, a namespace has no ``default`` service
account — the ServiceAccount admission plugin is off for that reason). Authorization is RBAC;
clients authenticate with static bearer tokens:

- ``admin``: group ``system:masters`` (everything);
- ``ostiary``: the user name of the ServiceAccount ``ostiary-system/ostiary``, so RoleBindings to that
  ServiceAccount — the chart's RBAC — are what Ostiary is allowed, nothing more.

The binaries come from ``scripts/setup-tools.sh etcd kube-apiserver`` (``.tools/bin``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization

from tests.support import pki
from tests.support.procs import die_with_parent

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = Path(os.environ.get("OSTIARY_TOOLS_DIR", REPO / ".tools")) / "bin"
OSTIARY_USER = "system:serviceaccount:ostiary-system:ostiary"


def tool(name: str) -> str:
    """Path of a pinned tool; fails (never skips) with the command that builds it."""
    path = TOOLS_BIN / name
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is missing: run `scripts/setup-tools.sh {name}` (see docs/kubernetes.md)")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(eq=False)
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group (gunicorn's workers too), SIGKILL what is left after `grace`."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


_LIVE: weakref.WeakSet[Process] = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            proc.stop(grace=3)


def start_process(name: str, argv: list[str], workdir: Path, env: dict | None = None) -> Process:
    log = workdir / f"{name}.log"
    with log.open("ab") as handle:
        popen = subprocess.Popen(
            argv,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )  # noqa: PLW1509 - one prctl call
    proc = Process(name, popen, log)
    _LIVE.add(proc)
    return proc


@dataclass
class ControlPlane:
    workdir: Path
    url: str = ""
    ca: pki.CA = field(default_factory=pki.CA.create)
    ca_file: Path | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    apiserver_argv: list[str] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    startup_seconds: float = 0.0

    # ------------------------------------------------------------------ start / stop

    def start(self, timeout: float = 90.0) -> ControlPlane:
        begin = time.monotonic()
        etcd, apiserver = tool("etcd"), tool("kube-apiserver")
        self.workdir.mkdir(parents=True, exist_ok=True)
        client_port, peer_port, secure_port = free_port(), free_port(), free_port()
        self.processes.append(
            start_process(
                "etcd",
                [
                    etcd,
                    "--name",
                    "ostiary-e2e",
                    "--data-dir",
                    str(self.workdir / "etcd"),
                    "--listen-client-urls",
                    f"http://127.0.0.1:{client_port}",
                    "--advertise-client-urls",
                    f"http://127.0.0.1:{client_port}",
                    "--listen-peer-urls",
                    f"http://127.0.0.1:{peer_port}",
                    "--initial-advertise-peer-urls",
                    f"http://127.0.0.1:{peer_port}",
                    "--initial-cluster",
                    f"ostiary-e2e=http://127.0.0.1:{peer_port}",
                    "--unsafe-no-fsync",
                    "--log-level",
                    "warn",
                ],
                self.workdir,
            )
        )

        certs = self.workdir / "certs"
        certs.mkdir(exist_ok=True)
        self.ca_file = pki.write(certs / "ca.crt", pki.cert_pem(self.ca.cert), 0o644)
        key, cert = self.ca.issue_server(("localhost", "kubernetes"), ("127.0.0.1",))
        pki.write(certs / "apiserver.crt", pki.cert_pem(cert))
        pki.write(certs / "apiserver.key", pki.private_key_pem(key))
        sa_key = pki.new_ec_key()
        pki.write(
            certs / "sa.key",
            sa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ),
        )
        pki.write(certs / "sa.pub", pki.public_key_pem(sa_key))
        self.tokens = {"admin": secrets.token_hex(16), "ostiary": secrets.token_hex(16)}
        pki.write(
            certs / "tokens.csv",
            f'{self.tokens["admin"]},admin,admin-uid,"system:masters"\n'
            f"{self.tokens['ostiary']},{OSTIARY_USER},ostiary-uid,"
            '"system:serviceaccounts,system:serviceaccounts:ostiary-system"\n',
        )

        self.apiserver_argv = [
            apiserver,
            f"--etcd-servers=http://127.0.0.1:{client_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={secure_port}",
            f"--cert-dir={certs}",
            f"--tls-cert-file={certs / 'apiserver.crt'}",
            f"--tls-private-key-file={certs / 'apiserver.key'}",
            f"--token-auth-file={certs / 'tokens.csv'}",
            f"--service-account-key-file={certs / 'sa.pub'}",
            f"--service-account-signing-key-file={certs / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--authorization-mode=RBAC",
            # No controller-manager makes the "default" ServiceAccount, which this plugin requires.
            "--disable-admission-plugins=ServiceAccount",
            "--enable-priority-and-fairness=false",
            "--v=1",
        ]
        self.processes.append(start_process("kube-apiserver", self.apiserver_argv, self.workdir))
        self.url = f"https://127.0.0.1:{secure_port}"
        self._wait_ready(timeout)
        self.startup_seconds = time.monotonic() - begin
        return self

    def _wait_ready(self, timeout: float) -> None:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for proc in self.processes:
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
            request = urllib.request.Request(
                f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.tokens['admin']}"}
            )
            try:
                with urllib.request.urlopen(request, context=context, timeout=5) as response:
                    if response.status == 200:
                        return
            except Exception as exc:  # noqa: BLE001 - not up yet, whatever the reason
                last = str(exc)
            time.sleep(0.3)
        raise RuntimeError(
            f"kube-apiserver not ready after {timeout}s ({last}):\n{self.processes[-1].tail()}"
        )

    def restart_apiserver(self, down_seconds: float = 1.0, timeout: float = 60.0) -> None:
        """Stop kube-apiserver (every watch breaks), wait, start it again on the same port and data."""
        old = next(p for p in self.processes if p.name == "kube-apiserver")
        old.stop(grace=3)  # open watches would hold a graceful shutdown up to its limit
        self.processes.remove(old)
        time.sleep(down_seconds)
        self.processes.append(start_process("kube-apiserver", self.apiserver_argv, self.workdir))
        self._wait_ready(timeout)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------------ clients

    def kubeconfig(self, user: str = "admin") -> Path:
        return write_kubeconfig(
            self.workdir / f"kubeconfig-{user}.yaml", self.url, self.ca_file, self.tokens[user]
        )

    def api_client(self, user: str = "admin"):
        return api_client_from(self.kubeconfig(user))


def write_kubeconfig(path: Path, url: str, ca_file: Path | None, token: str) -> Path:
    """A kubeconfig of one cluster and one bearer-token user (written once)."""
    if not path.exists():
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": url, "certificate-authority": str(ca_file)}}],
            "users": [{"name": "user", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
        }
        pki.write(path, yaml.safe_dump(config))
    return path


def api_client_from(kubeconfig: Path):
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


@contextlib.contextmanager
def running_control_plane(workdir: Path):
    plane = ControlPlane(workdir)
    try:
        plane.start()
        yield plane
    finally:
        plane.cleanup()
