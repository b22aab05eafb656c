"""A real Docker Content Trust world on loopback: notary-server (+ notary-signer) and docker-registry.

    with NotaryWorld() as w:
        digest = w.push_image("team/app", "v1", seed="app")
        w.sign("team/app", "v1", digest, w.size_of(digest))
        # https GET {w.notary_url}/v2/{w.gun('team/app')}/_trust/tuf/targets.json  (verify=w.ca_file)

Binaries (Debian packages): `notary` gives notary, notary-server, notary-signer; `docker-registry` gives
docker-registry. Nothing else is needed: no Docker engine, no network beyond 127.0.0.1.

Everything lives in one temporary directory (configs, keys, the notary client's trust dir, the registry's
storage, and one log file per process). Every process is started in its own session, killed by stop(),
by an atexit hook, and (Linux, when started from the main thread) by the kernel if this Python dies.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import requests

from . import pki
from .procs import die_with_parent

REQUIRED_BINARIES = {
    "notary": "Debian package `notary` (0.7.0): apt-get install notary",
    "notary-server": "Debian package `notary` (0.7.0): apt-get install notary",
    "notary-signer": "Debian package `notary` (0.7.0): apt-get install notary",
    "docker-registry": "Debian package `docker-registry` (2.8.x): apt-get install docker-registry",
}

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

PASSPHRASE = "ostiary-world-passphrase"
_PASSPHRASE_ENV = {
    f"NOTARY_{r}_PASSPHRASE": PASSPHRASE for r in ("ROOT", "TARGETS", "SNAPSHOT", "DELEGATION")
}

_STARTUP_TIMEOUT = 10.0
_CLI_TIMEOUT = 60.0


class WorldError(RuntimeError):
    """The world could not be built or an operation on it failed (message carries the logs' tails)."""


def missing_binaries() -> dict[str, str]:
    """{binary: how to install it} for every required binary not on PATH."""
    return {b: how for b, how in REQUIRED_BINARIES.items() if shutil.which(b) is None}


def require_binaries() -> None:
    missing = missing_binaries()
    if missing:
        lines = [f"  {b}: install {how}" for b, how in missing.items()]
        raise WorldError("the notary test world needs binaries that are not on PATH:\n" + "\n".join(lines))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def canonical_json(obj) -> bytes:
    """docker/go canonical/json for the simple values used in key IDs (sorted keys, no whitespace)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def tuf_key_id(keytype: str, public_b64: str) -> str:
    return hashlib.sha256(
        canonical_json({"keytype": keytype, "keyval": {"private": None, "public": public_b64}})
    ).hexdigest()


@dataclass
class SignerKey:
    """A delegation signer key made by the world (ecdsa P-256)."""

    name: str
    key_path: Path  # unencrypted PKCS#8 PEM private key
    public_pem: str  # PEM public key (SubjectPublicKeyInfo)
    cert_pem: str | None = None  # self-signed certificate, when the delegation uses one
    pem_path: Path | None = None  # the file given to `notary delegation add`

    @property
    def delegation_pem(self) -> str:
        """What `notary delegation add` was given (certificate, or public key)."""
        return self.cert_pem if self.cert_pem is not None else self.public_pem

    @property
    def ecdsa_key_id(self) -> str:
        """The TUF key ID of the bare public key (keytype "ecdsa", base64 DER SubjectPublicKeyInfo)."""
        from cryptography.hazmat.primitives import serialization

        der = serialization.load_pem_public_key(self.public_pem.encode()).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return tuf_key_id("ecdsa", _b64(der))

    @property
    def x509_key_id(self) -> str | None:
        """The TUF key ID of the certificate (keytype "ecdsa-x509", base64 of the PEM), if any."""
        if self.cert_pem is None:
            return None
        return tuf_key_id("ecdsa-x509", _b64(self.cert_pem.encode()))

    @property
    def key_ids(self) -> set[str]:
        return {k for k in (self.ecdsa_key_id, self.x509_key_id) if k}


@dataclass
class PushedImage:
    repo: str
    tag: str
    digest: str  # sha256:<hex> of the manifest bytes (= Docker-Content-Digest)
    size: int  # manifest length in bytes (what notary signs)
    manifest: bytes = field(repr=False)


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen
    log: Path


_LIVE: weakref.WeakSet[NotaryWorld] = weakref.WeakSet()


def _stop_all_at_exit() -> None:
    for world in list(_LIVE):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            world.stop()


atexit.register(_stop_all_at_exit)


class NotaryWorld:
    """A notary-server (memory storage, TLS), optionally a notary-signer, and a docker-registry.

    trust_service="remote" (default): notary-server signs timestamp and snapshot through a
    notary-signer with ecdsa keys, as Docker Hub does. trust_service="local": the server signs in
    process with ed25519 keys (signature method "eddsa").
    """

    def __init__(
        self,
        *,
        trust_service: str = "remote",
        base_dir: str | os.PathLike | None = None,
        keep_dir: bool = False,
        host: str = "127.0.0.1",
        ports: tuple[int, int] | None = None,
    ) -> None:
        if trust_service not in ("remote", "local"):
            raise ValueError("trust_service must be 'remote' or 'local'")
        self.trust_service = trust_service
        # The address notary-server and the registry listen on (and their certificate names): loopback
        # by default; the real node's tests (tests/node) give the test bridge's address so pods reach them.
        self.host = host
        # (notary-server port, registry port): fixed ones give stable GUNs and trust-server URLs
        # (scripts/trust_world.py); by default free ports are picked.
        self._ports = ports
        self._base_dir = base_dir
        self._keep_dir = keep_dir or bool(os.environ.get("OSTIARY_WORLD_KEEP"))
        self._procs: list[_Proc] = []
        self._lock = threading.RLock()
        self._inited: set[str] = set()
        self._delegations: dict[str, set[str]] = {}
        self.pushed: dict[tuple[str, str], PushedImage] = {}
        self.signers: dict[tuple[str, str], SignerKey] = {}
        self.dir: Path | None = None
        self.ca_file = ""
        self.notary_url = ""
        self.registry_host = ""
        self.registry_url = ""
        self.startup_seconds: float | None = None
        self._http = requests.Session()
        self._token = os.urandom(8).hex()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> NotaryWorld:
        require_binaries()
        t0 = time.monotonic()
        self.dir = Path(tempfile.mkdtemp(prefix="ostiary-world-", dir=self._base_dir))
        _LIVE.add(self)
        try:
            self._write_pki()
            last: Exception | None = None
            for _attempt in range(3):  # a free port can be taken between probe and bind: retry
                try:
                    self._start_processes()
                    break
                except _PortRace as e:
                    last = e
                    self._kill_processes()
            else:
                raise WorldError(f"could not start the world after 3 attempts: {last}")
            self._write_client_config()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        with self._lock:
            self._kill_processes()
            self._http.close()
            _LIVE.discard(self)
            if self.dir is not None and not self._keep_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_processes(self) -> None:
        procs, self._procs = self._procs, []
        for p in procs:
            if p.popen.poll() is None:
                try:
                    os.killpg(p.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 3.0
        for p in procs:
            try:
                p.popen.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.popen.wait(timeout=5)

    # ------------------------------------------------------------------ setup

    def _write_pki(self) -> None:
        d = self.dir
        ca = pki.CA.create("Ostiary test world CA")
        key, cert = ca.issue_server(("localhost",), tuple(dict.fromkeys(("127.0.0.1", self.host))))
        pki.write(d / "ca.crt", pki.cert_pem(ca.cert), 0o644)
        pki.write(d / "server.crt", pki.cert_pem(cert), 0o644)
        pki.write(d / "server.key", pki.private_key_pem(key))
        self.ca_file = str(d / "ca.crt")

    def _spawn(self, name: str, argv: list[str]) -> _Proc:
        log = self.dir / f"{name}.log"
        with open(log, "ab") as fh:
            popen = subprocess.Popen(
                argv,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - main thread only (tests/support/procs.py)
                env={**os.environ, "HOME": str(self.dir)},
            )
        proc = _Proc(name, popen, log)
        self._procs.append(proc)
        return proc

    def _logs(self) -> str:
        parts = []
        for p in self._procs:
            rc = p.popen.poll()
            state = "running" if rc is None else f"exited rc={rc}"
            parts.append(f"--- {p.name} ({state}), tail of {p.log}:\n{_tail(p.log)}")
        return "\n".join(parts)

    def _start_processes(self) -> None:
        d = self.dir
        server_port, registry_port = self._ports or (free_port(), free_port())
        trust: dict = {"type": "local"}
        if self.trust_service == "remote":
            signer_port = free_port()
            (d / "signer-config.json").write_text(
                json.dumps(
                    {
                        "server": {
                            "grpc_addr": f"127.0.0.1:{signer_port}",
                            "tls_cert_file": "server.crt",
                            "tls_key_file": "server.key",
                            "client_ca_file": "ca.crt",
                        },
                        "storage": {"backend": "memory"},
                        "logging": {"level": "info"},
                    },
                    indent=2,
                )
            )
            self._spawn("notary-signer", ["notary-signer", "-config", str(d / "signer-config.json")])
            trust = {
                "type": "remote",
                "hostname": "127.0.0.1",
                "port": str(signer_port),
                "key_algorithm": "ecdsa",
                "tls_ca_file": "ca.crt",
                "tls_client_cert": "server.crt",
                "tls_client_key": "server.key",
            }
        (d / "server-config.json").write_text(
            json.dumps(
                {
                    "server": {
                        "http_addr": f"{self.host}:{server_port}",
                        "tls_key_file": "server.key",
                        "tls_cert_file": "server.crt",
                    },
                    "trust_service": trust,
                    "storage": {"backend": "memory"},
                    "logging": {"level": "info"},
                },
                indent=2,
            )
        )
        (d / "registry").mkdir(exist_ok=True)
        (d / "registry-config.yml").write_text(
            "version: 0.1\n"
            "log:\n  level: info\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {d / 'registry'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}:{registry_port}\n  secret: ostiary-world\n"
            f'  headers:\n    X-Ostiary-World: ["{self._token}"]\n'
        )
        self.notary_url = f"https://{self.host}:{server_port}"
        self.registry_host = f"{self.host}:{registry_port}"
        self.registry_url = f"http://{self.registry_host}"

        # The signer first: notary-server's health endpoint says nothing about the signer, and a server
        # that dialled a signer not yet listening answers 500 until gRPC's reconnect backoff expires.
        self._spawn("docker-registry", ["docker-registry", "serve", str(d / "registry-config.yml")])
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        if self.trust_service == "remote":
            self._wait({"notary-signer (gRPC port)": lambda: self._tcp_check(signer_port)}, deadline)
        self._spawn("notary-server", ["notary-server", "-config", str(d / "server-config.json")])
        self._wait(
            {
                "notary-server": lambda: self._http_check(
                    f"{self.notary_url}/_notary_server/health", self.ca_file
                ),
                # The header proves it is *our* registry answering, not one that won a race for the port.
                # (A foreign notary-server fails our CA; a foreign signer fails the server's TLS.)
                "docker-registry": lambda: self._http_check(
                    f"{self.registry_url}/v2/", True, ("X-Ostiary-World", self._token)
                ),
            },
            deadline,
        )
        # End to end through the trust service: the server makes (or returns) a timestamp key for a
        # probe GUN, through notary-signer when remote. Proves the signing path, and its algorithm.
        self._wait({"notary-server timestamp key": self._probe_trust_service}, deadline)

    @staticmethod
    def _tcp_check(port: int) -> str | None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return None
        except OSError as e:
            return f"{type(e).__name__}: {e}"

    def _http_check(self, url: str, verify, header: tuple[str, str] | None = None) -> str | None:
        try:
            r = self._http.get(url, verify=verify, timeout=0.5)
        except requests.RequestException as e:
            return f"{type(e).__name__}: {e}"
        if header and r.headers.get(header[0]) != header[1]:
            return f"{url} answered without {header[0]}: {header[1]} (another process on the port?)"
        return None if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"

    def _probe_trust_service(self) -> str | None:
        url = f"{self.notary_url}/v2/ostiary-world-probe/health/_trust/tuf/timestamp.key"
        try:
            r = self._http.get(url, verify=self.ca_file, timeout=2)
        except requests.RequestException as e:
            return f"{type(e).__name__}: {e}"
        if r.status_code != 200:
            return f"HTTP {r.status_code}: {r.text[:200]}"
        want = "ecdsa" if self.trust_service == "remote" else "ed25519"
        got = r.json().get("keytype")
        if got != want:
            raise WorldError(f"notary-server made a {got} timestamp key, expected {want}\n{self._logs()}")
        return None

    def _wait(self, checks: dict, deadline: float) -> None:
        """Poll every check (a callable returning None when fine, else why not) until all pass."""
        pending = dict(checks)
        last_err: dict[str, str] = {}
        while True:
            for p in self._procs:
                if p.popen.poll() is not None:
                    logs = self._logs()
                    if "address already in use" in logs:
                        raise _PortRace(f"{p.name}: address already in use")
                    raise WorldError(f"{p.name} exited during startup (rc={p.popen.returncode})\n{logs}")
            for name, check in list(pending.items()):
                err = check()
                if err is None:
                    del pending[name]
                else:
                    last_err[name] = err
            if not pending:
                return
            if time.monotonic() > deadline:
                why = "; ".join(f"{n}: {last_err.get(n, '?')}" for n in pending)
                raise WorldError(f"world not healthy after {_STARTUP_TIMEOUT:.0f}s ({why})\n{self._logs()}")
            time.sleep(0.02)

    def _write_client_config(self) -> None:
        d = self.dir
        (d / "trust").mkdir(exist_ok=True, mode=0o700)
        (d / "notary-client.json").write_text(
            json.dumps(
                {
                    "trust_dir": str(d / "trust"),
                    "remote_server": {"url": self.notary_url, "root_ca": self.ca_file},
                },
                indent=2,
            )
        )

    # ------------------------------------------------------------------ registry

    def gun(self, repo: str) -> str:
        return f"{self.registry_host}/{repo}"

    def image_ref(self, repo: str, tag: str | None = None, digest: str | None = None) -> str:
        ref = self.gun(repo)
        if tag:
            ref += f":{tag}"
        if digest:
            ref += f"@{digest}"
        return ref

    def _upload_blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        base = f"{self.registry_url}/v2/{repo}/blobs"
        if self._http.head(f"{base}/{digest}", timeout=10).status_code == 200:
            return digest
        r = self._http.post(f"{base}/uploads/", timeout=10)
        if r.status_code != 202:
            raise WorldError(f"blob upload start for {repo}: HTTP {r.status_code} {r.text[:300]}")
        location = requests.compat.urljoin(self.registry_url + "/", r.headers["Location"])
        r = self._http.put(
            location,
            params={"digest": digest},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=10,
        )
        if r.status_code != 201:
            raise WorldError(f"blob upload of {digest} to {repo}: HTTP {r.status_code} {r.text[:300]}")
        if r.headers.get("Docker-Content-Digest") not in (None, digest):
            raise WorldError(
                f"registry stored blob as {r.headers['Docker-Content-Digest']}, expected {digest}"
            )
        return digest

    @staticmethod
    def _layer(files: dict[str, tuple[bytes, int]]) -> tuple[bytes, bytes]:
        """A deterministic layer of `files` (path -> (content, mode)): (uncompressed tar, gzip)."""
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path, (body, mode) in sorted(files.items()):
                info = tarfile.TarInfo(path)
                info.size, info.mtime, info.mode, info.uid, info.gid = len(body), 0, mode, 0, 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(body))
        tar_bytes = raw.getvalue()
        return tar_bytes, gzip.compress(tar_bytes, compresslevel=6, mtime=0)

    def push(self, repo: str, tag: str, *, seed: str) -> PushedImage:
        """Push a tiny deterministic schema2 image; the same (seed) gives the same digest every run."""
        body = f"ostiary test image, seed={seed}\n".encode()
        return self.push_files(
            repo,
            tag,
            {"etc/ostiary-seed": (body, 0o644)},
            cmd=["/bin/true"],
            labels={"io.ostiary.seed": seed},
        )

    def push_files(
        self,
        repo: str,
        tag: str,
        files: dict[str, tuple[bytes, int]],
        *,
        cmd: list[str],
        labels: dict[str, str] | None = None,
    ) -> PushedImage:
        """Push a one-layer schema2 image of `files` (a runnable one when `cmd` is among them, e.g.
        the static pause binary the real node's tests run); deterministic for the same input."""
        tar_bytes, layer = self._layer(files)
        config = canonical_json(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": cmd, "Labels": labels or {}},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes).hexdigest()]},
                "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "ostiary test world"}],
            }
        )
        layer_digest = self._upload_blob(repo, layer)
        config_digest = self._upload_blob(repo, config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_V2,
                "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": config_digest},
                "layers": [{"mediaType": LAYER_GZIP, "size": len(layer), "digest": layer_digest}],
            },
            indent=3,
        ).encode()
        expected = "sha256:" + hashlib.sha256(manifest).hexdigest()
        r = self._http.put(
            f"{self.registry_url}/v2/{repo}/manifests/{tag}",
            data=manifest,
            headers={"Content-Type": MANIFEST_V2},
            timeout=10,
        )
        if r.status_code != 201:
            raise WorldError(f"manifest PUT {repo}:{tag}: HTTP {r.status_code} {r.text[:300]}")
        got = r.headers.get("Docker-Content-Digest")
        if got != expected:
            raise WorldError(
                f"registry says digest {got} for {repo}:{tag}, sha256 of the manifest is {expected}"
            )
        image = PushedImage(repo, tag, expected, len(manifest), manifest)
        self.pushed[(repo, tag)] = image
        return image

    def push_image(self, repo: str, tag: str, *, seed: str) -> str:
        """Push (see push()) and return the manifest digest "sha256:<hex>"."""
        return self.push(repo, tag, seed=seed).digest

    def size_of(self, digest: str) -> int:
        for image in self.pushed.values():
            if image.digest == digest:
                return image.size
        raise KeyError(f"no pushed image has digest {digest}")

    # ------------------------------------------------------------------ notary CLI

    def notary(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the real notary CLI against this world (passphrases in the environment)."""
        argv = ["notary", "-c", str(self.dir / "notary-client.json"), *args]
        env = {**os.environ, **_PASSPHRASE_ENV, "HOME": str(self.dir)}
        try:
            cp = subprocess.run(
                argv,
                check=False,
                cwd=self.dir,
                env=env,
                capture_output=True,
                text=True,
                timeout=_CLI_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as e:
            raise WorldError(f"{' '.join(argv)}: timed out after {_CLI_TIMEOUT}s\n{self._logs()}") from e
        with open(self.dir / "notary-cli.log", "a") as log:
            log.write(f"$ {' '.join(argv)}\n{cp.stdout}{cp.stderr}(rc={cp.returncode})\n")
        if check and cp.returncode != 0:
            raise WorldError(
                f"{' '.join(argv)} failed (rc={cp.returncode})\nstdout: {cp.stdout[-2000:]}\n"
                f"stderr: {cp.stderr[-2000:]}\n{self._logs()}"
            )
        return cp

    def init_repo(self, repo: str) -> None:
        """`notary init GUN -p` and a server-managed snapshot key, as `docker trust` does (once per repo)."""
        with self._lock:
            gun = self.gun(repo)
            if gun in self._inited:
                return
            self.notary("init", gun, "-p")
            self.notary("key", "rotate", gun, "snapshot", "-r")
            self._inited.add(gun)
            self._delegations.setdefault(gun, set())

    def sign(
        self,
        repo: str,
        tag: str,
        digest: str,
        size: int,
        *,
        roles: tuple[str, ...] | list[str] = ("targets",),
    ) -> None:
        """Sign tag -> digest (size bytes) into the given roles and publish, with the real notary CLI.

        Delegation roles (targets/...) must have been added first (add_signer / add_delegation_key)."""
        with self._lock:
            self.init_repo(repo)
            gun = self.gun(repo)
            for role in roles:
                if role != "targets" and role not in self._delegations[gun]:
                    raise WorldError(f"{gun}: no delegation {role} was added to this world")
            hexdigest = digest.split(":", 1)[1] if ":" in digest else digest
            if not digest.startswith("sha256:") or len(hexdigest) != 64:
                raise ValueError(f"sign() wants a sha256 digest, got {digest!r}")
            args = ["addhash", gun, tag, str(size), "--sha256", hexdigest, "-p"]
            for role in roles:
                args += ["-r", role]
            self.notary(*args)

    def make_key(self, name: str, *, cert: bool = False) -> SignerKey:
        """A fresh ecdsa P-256 signer key in the world's dir (not imported, not added anywhere)."""
        d = self.dir / "signers"
        d.mkdir(exist_ok=True, mode=0o700)
        key = pki.new_ec_key()
        key_path = pki.write(d / f"{name}.key", pki.private_key_pem(key))
        public = pki.public_key_pem(key)
        pki.write(d / f"{name}.pub", public, 0o644)
        signer = SignerKey(name=name, key_path=key_path, public_pem=public, pem_path=d / f"{name}.pub")
        if cert:
            signer.cert_pem = pki.cert_pem(pki.self_signed_signer_cert(key, name))
            signer.pem_path = pki.write(d / f"{name}.crt", signer.cert_pem, 0o644)
        return signer

    def add_delegation_key(
        self,
        repo: str,
        name: str,
        roles: list[str] | tuple[str, ...],
        *,
        cert: bool = False,
        key: SignerKey | None = None,
    ) -> SignerKey:
        """Import a signer key (made here unless given) and add it to each delegation role; publish."""
        with self._lock:
            self.init_repo(repo)
            gun = self.gun(repo)
            signer = key or self.make_key(name, cert=cert)
            if key is None or (repo, name) not in self.signers:
                self.notary("key", "import", str(signer.key_path), "--role", name)
            for role in roles:
                self.notary("delegation", "add", gun, role, str(signer.pem_path), "--all-paths")
            self.notary("publish", gun)
            self._delegations[gun].update(roles)
            self.signers[(repo, name)] = signer
            return signer

    def add_signer(self, repo: str, name: str, *, cert: bool) -> tuple[str, Path]:
        """As `docker trust signer add`: delegations targets/releases and targets/<name> with a new ecdsa
        key, given as a PEM public key (keytype "ecdsa") or a certificate ("ecdsa-x509").
        Returns (the PEM text given to notary: public key or certificate, private key path)."""
        signer = self.add_delegation_key(repo, name, ("targets/releases", f"targets/{name}"), cert=cert)
        return signer.delegation_pem, signer.key_path

    def sign_as(
        self,
        repo: str,
        tag: str,
        digest: str,
        size: int,
        signers: list[str] | tuple[str, ...],
        releases: bool = True,
    ) -> None:
        """As `docker trust sign` with signer keys: into targets/<name> for each signer (and releases)."""
        roles = [f"targets/{s}" for s in signers]
        if releases:
            roles.insert(0, "targets/releases")
        self.sign(repo, tag, digest, size, roles=roles)

    # ------------------------------------------------------------------ reading back

    def tuf(self, repo: str, role: str) -> requests.Response:
        """GET /v2/<gun>/_trust/tuf/<role>.json from the running notary-server (TLS verified by the CA)."""
        return self._http.get(
            f"{self.notary_url}/v2/{self.gun(repo)}/_trust/tuf/{role}.json", verify=self.ca_file, timeout=10
        )

    def tail_logs(self) -> str:
        return self._logs()


class _PortRace(WorldError):
    pass


# ---------------------------------------------------------------------- a prepared scenario


@dataclass(frozen=True)
class WorldImage:
    """One image of the scenario, with everything a test needs to ask about it."""

    key: str  # scenario name: "signed", "unsigned", ...
    registry: str  # "127.0.0.1:PORT"
    repo: str  # "ostiary/signed"
    tag: str
    digest: str  # the pushed manifest digest
    size: int
    notary_url: str
    ca_file: str
    signed_roles: tuple[str, ...] = ()  # roles the tag is signed into ((), when never signed)

    @property
    def gun(self) -> str:
        return f"{self.registry}/{self.repo}"

    @property
    def reference(self) -> str:
        """registry/repo:tag -- what a pod spec would say."""
        return f"{self.gun}:{self.tag}"

    @property
    def pinned(self) -> str:
        return f"{self.gun}:{self.tag}@{self.digest}"


@dataclass
class Scenario:
    world: NotaryWorld
    images: dict[str, WorldImage]
    alice: SignerKey  # delegation key given as a PEM public key ("ecdsa"), signs "signer-pem"
    bob: SignerKey  # delegation key given as a certificate ("ecdsa-x509"), signs "signer-cert"
    mallory: SignerKey  # a key never added anywhere (wrong-signer tests)
    releaser: SignerKey  # the targets/releases key of "signed"
    build_seconds: float | None = None  # world start + scenario, set by whoever measures it

    def __getitem__(self, key: str) -> WorldImage:
        return self.images[key]

    @property
    def notary_url(self) -> str:
        return self.world.notary_url

    @property
    def registry_host(self) -> str:
        return self.world.registry_host

    @property
    def ca_file(self) -> str:
        return self.world.ca_file

    @property
    def alice_pem(self) -> str:
        return self.alice.public_pem

    @property
    def mallory_pem(self) -> str:
        return self.mallory.public_pem


def build_scenario(world: NotaryWorld) -> Scenario:
    """Push and sign the standard images (tag "v1" everywhere):

    - "signed":      signed into targets/releases (key "releaser") and targets
    - "unsigned":    pushed; the repository has trust data (tag "v0" signed) but "v1" was never signed
    - "no-trust":    pushed; the repository has no trust data at all (notary answers 404)
    - "signer-pem":  signers alice (delegation given a PEM public key) into targets/releases, targets/alice
    - "signer-cert": signer bob (delegation given a certificate: "ecdsa-x509") likewise
    - mallory: a key that is never added (wrong-signer tests)
    """
    images: dict[str, WorldImage] = {}

    def record(key: str, repo: str, image: PushedImage, roles: tuple[str, ...]) -> None:
        images[key] = WorldImage(
            key,
            world.registry_host,
            repo,
            image.tag,
            image.digest,
            image.size,
            world.notary_url,
            world.ca_file,
            roles,
        )

    repo = "ostiary/signed"
    img = world.push(repo, "v1", seed="signed")
    releaser = world.add_delegation_key(repo, "releaser", ["targets/releases"])
    world.sign(repo, "v1", img.digest, img.size, roles=("targets", "targets/releases"))
    record("signed", repo, img, ("targets", "targets/releases"))

    repo = "ostiary/unsigned"
    old = world.push(repo, "v0", seed="unsigned-v0")
    world.sign(repo, "v0", old.digest, old.size)
    img = world.push(repo, "v1", seed="unsigned-v1")
    record("unsigned", repo, img, ())

    repo = "ostiary/no-trust"
    img = world.push(repo, "v1", seed="no-trust")
    record("no-trust", repo, img, ())

    repo = "ostiary/signer-pem"
    img = world.push(repo, "v1", seed="signer-pem")
    world.add_signer(repo, "alice", cert=False)
    world.sign_as(repo, "v1", img.digest, img.size, ["alice"])
    record("signer-pem", repo, img, ("targets/releases", "targets/alice"))

    repo = "ostiary/signer-cert"
    img = world.push(repo, "v1", seed="signer-cert")
    world.add_signer(repo, "bob", cert=True)
    world.sign_as(repo, "v1", img.digest, img.size, ["bob"])
    record("signer-cert", repo, img, ("targets/releases", "targets/bob"))

    return Scenario(
        world=world,
        images=images,
        alice=world.signers[("ostiary/signer-pem", "alice")],
        bob=world.signers[("ostiary/signer-cert", "bob")],
        mallory=world.make_key("mallory"),
        releaser=releaser,
    )
