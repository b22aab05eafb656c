"""A real simple-signing world on loopback: Debian's docker-registry, a lookaside store served over
HTTPS, gpg keys made now, and signatures made by skopeo (`copy --sign-by`) at test time.

    with SigningWorld(tmp_path) as w:
        w.replay_fixtures()                     # ../shared/fixtures/signatures into the registry
        fpr = w.gpg_key("ed")                   # a new Ed25519 key; w.public_key(fpr) is its armour
        digest = w.sign_copy("ostiary/simple:alpha", "made/app:v1", fpr)
        # images: f"{w.registry_host}/made/app:v1"; lookaside: w.store_url (CA: w.ca_file)

The lookaside directory holds the captured fixture signatures and those skopeo writes. Every
process runs in its own session and is killed by stop().
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import requests

from . import pki
from .procs import die_with_parent
from .serve import Ostiary, serve_documents
from .world import free_port

FIXTURES = Path(os.environ.get("OSTIARY_SIGNATURE_FIXTURES", "/work/shared/fixtures/signatures"))
READY_TIMEOUT = 45.0
REQUIRED = {"docker-registry": "docker-registry", "skopeo": "skopeo", "gpg": "gnupg"}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory: Path, context: ssl.SSLContext):
        self.context = context
        super().__init__(("127.0.0.1", 0), partial(_Quiet, directory=str(directory)))

    def finish_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        try:
            request.settimeout(10)
            request = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        super().finish_request(request, client_address)


class SigningWorld:
    def __init__(self, root: Path):
        self.root = root
        self.lookaside = root / "lookaside"
        self.gnupg = root / "gnupg"
        self.procs: list[subprocess.Popen] = []
        self._https: _TLSServer | None = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        missing = [f"{b} (Debian package {p})" for b, p in REQUIRED.items() if shutil.which(b) is None]
        if missing:
            raise RuntimeError(
                "the simple-signing world needs: " + ", ".join(missing) + " (scripts/setup.sh)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self._start_registry()
        shutil.copytree(FIXTURES / "lookaside", self.lookaside)
        for path in self.lookaside.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        self._start_store()
        self.gnupg.mkdir(mode=0o700)
        (self.root / "registries.d").mkdir()
        (self.root / "registries.d" / "default.yaml").write_text(
            f"docker:\n  {self.registry_host}:\n    lookaside: file://{self.lookaside}\n"
        )
        (self.root / "policy.json").write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        return self

    def stop(self) -> None:
        if self._https is not None:
            self._https.shutdown()
            self._https.server_close()
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        with contextlib.suppress(Exception):
            subprocess.run(["gpgconf", "--kill", "all"], env=self._gpg_env(), timeout=10, check=False)

    # -- processes --------------------------------------------------------------------------------------

    def _start_registry(self) -> None:
        port = free_port()
        (self.root / "registry").mkdir()
        config = self.root / "registry.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'registry'}\n"
            f"http:\n  addr: 127.0.0.1:{port}\n  secret: ostiary-signing\n"
        )
        log = open(self.root / "registry.log", "ab")  # noqa: SIM115 - the process owns it
        self.procs.append(
            subprocess.Popen(
                ["docker-registry", "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl
            )
        )
        self.registry_host = f"127.0.0.1:{port}"
        self.registry_url = f"http://{self.registry_host}"
        deadline = time.monotonic() + 15
        while True:
            try:
                if requests.get(f"{self.registry_url}/v2/", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    "docker-registry did not start: " + (self.root / "registry.log").read_text()[-500:]
                )
            time.sleep(0.1)

    def _start_store(self) -> None:
        ca = pki.CA.create("Ostiary lookaside test CA")
        key, cert = ca.issue_server()
        self.ca_file = str(pki.write(self.root / "store-ca.pem", pki.cert_pem(ca.cert)))
        cert_file = pki.write(self.root / "store.pem", pki.cert_pem(cert))
        key_file = pki.write(self.root / "store.key", pki.private_key_pem(key))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert_file), str(key_file))
        self._https = _TLSServer(self.lookaside, context)
        threading.Thread(
            target=self._https.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.store_url = f"https://127.0.0.1:{self._https.server_address[1]}"

    # -- content ----------------------------------------------------------------------------------------

    def replay_fixtures(self, *repos: str) -> None:
        argv = [sys.executable, str(FIXTURES / "replay.py"), self.registry_url]
        for repo in repos:
            argv += ["--repo", repo]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"replay.py failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    def _gpg_env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.gnupg)}

    def gpg(self, *args: str, data: bytes | None = None) -> bytes:
        done = subprocess.run(
            ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "", *args],
            input=data,
            capture_output=True,
            env=self._gpg_env(),
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"gpg {' '.join(args)} failed: {done.stderr.decode(errors='replace')[-800:]}")
        return done.stdout

    def gpg_key(self, name: str, algo: str = "ed25519") -> str:
        """A new signing key (`ed25519` or `rsa3072`); its fingerprint."""
        uid = f"Ostiary {name} <{name}@signing.test>"
        self.gpg("--quick-gen-key", uid, algo, "sign", "never")
        listing = self.gpg("--with-colons", "--list-keys", uid).decode()
        return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))

    def public_key(self, fingerprint: str) -> str:
        return self.gpg("--armor", "--export", fingerprint).decode()

    def sign_payload(self, fingerprint: str, payload: bytes) -> bytes:
        """A signed message (gpg --sign, as containers/image makes them) over any payload."""
        return self.gpg("--local-user", fingerprint, "--sign", data=payload)

    def sign_copy(self, source: str, destination: str, fingerprint: str) -> str:
        """skopeo copy --sign-by from this registry to this registry; the manifest digest."""
        done = subprocess.run(
            [
                "skopeo",
                "--policy",
                str(self.root / "policy.json"),
                "--registries.d",
                str(self.root / "registries.d"),
                "copy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                "--sign-by",
                fingerprint,
                f"docker://{self.registry_host}/{source}",
                f"docker://{self.registry_host}/{destination}",
            ],
            capture_output=True,
            text=True,
            env=self._gpg_env(),
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"skopeo copy --sign-by failed: {done.stderr[-1500:]}")
        return self.digest(destination)

    def digest(self, reference: str) -> str:
        repo, _, tag = reference.rpartition(":")
        answer = requests.head(
            f"{self.registry_url}/v2/{repo}/manifests/{tag}",
            headers={
                "Accept": "application/vnd.oci.image.manifest.v1+json, "
                "application/vnd.docker.distribution.manifest.v2+json"
            },
            timeout=10,
        )
        answer.raise_for_status()
        return answer.headers["Docker-Content-Digest"]

    def signature_files(self, repo: str, digest: str) -> list[Path]:
        folder = self.lookaside / f"{repo}@{digest.replace(':', '=')}"
        return sorted(folder.glob("signature-*"))

    def put_signature(self, repo: str, digest: str, n: int, data: bytes) -> Path:
        folder = self.lookaside / f"{repo}@{digest.replace(':', '=')}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"signature-{n}"
        path.write_bytes(data)
        path.chmod(0o644)
        return path


def serve_policies(
    tmp: Path, documents: list[dict], *extra: str
) -> contextlib.AbstractContextManager[Ostiary]:
    """`ostiary serve --policy-dir` over `documents` (no decision log), ready; stopped on exit."""
    return serve_documents(tmp, documents, "--decision-log", "off", *extra)
