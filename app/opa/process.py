"""Run and supervise a local `opa run --server` on a free loopback port (the embedded default).

With authenticate=True (what `ostiary serve`, `check` and `explain` use) OPA accepts only requests
bearing a random token that exists in this process alone: `--authentication=token
--authorization=basic` and a `system.authz` policy, loaded as a bundle that owns
`system/authz` so that nobody, Ostiary included, can replace or delete it over the API. Any
other process in the pod (or on the host) that reaches the port gets 401 for every request.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from app.errors import OpaUnavailable
from app.paths import repo_root

OPA_ENV = "OSTIARY_OPA"


class OpaNotFound(OpaUnavailable):
    """No opa binary to start (OSTIARY_OPA, the tools folder, PATH)."""


class OpaStartFailed(OpaUnavailable):
    """The opa binary was found but did not start, or did not become healthy in time."""


def find_opa() -> str:
    """OSTIARY_OPA, else the project's tools folder, else `opa` on PATH."""
    candidates = [os.environ.get(OPA_ENV)]
    tools = os.environ.get("OSTIARY_TOOLS_DIR")
    if tools:
        candidates.append(str(Path(tools) / "bin" / "opa"))
    root = repo_root()
    if root is not None:
        candidates.append(str(root / ".tools" / "bin" / "opa"))
    candidates.append(shutil.which("opa"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise OpaNotFound(
        "no opa binary: run scripts/setup.sh (builds the pinned OPA into .tools/bin), "
        f"or set {OPA_ENV} to an OPA 1.x binary"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no orphaned OPA if we are killed
    except OSError:
        pass


AUTHZ_ROOT = "system/authz"


# Go's garbage collector for the OPA Ostiary starts, unless the environment sets it: a heap allowed
# to grow to five times what is live cut OPA's CPU per decision by about a quarter for about 25 MiB
# (docs/performance.md); the chart sets the same for its sidecar (values opa.gogc, opa.goMemLimit).
OPA_GOGC = "400"


def opa_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment OPA runs with: Ostiary's own, with GOGC defaulted to OPA_GOGC."""
    env = dict(environ)
    env.setdefault("GOGC", OPA_GOGC)
    return env


def authz_policy(token: str) -> str:
    """OPA's administrative policy: only a request with this bearer token is allowed, any API."""
    return (
        f"package system.authz\n\ndefault allow := false\n\nallow if input.identity == {json.dumps(token)}\n"
    )


def write_authz_bundle(directory: Path, token: str) -> None:
    """A bundle holding the authz policy; its manifest makes OPA refuse API writes to its root."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, text in (
        (".manifest", json.dumps({"roots": [AUTHZ_ROOT]})),
        ("authz.rego", authz_policy(token)),
    ):
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)


class LocalOpa:
    """An OPA server owned by this process; stop() (or our death) ends it.

    authenticate=False serves the test fixtures that drive OPA directly; every Ostiary command
    passes True and hands `token` to its OpaClient."""

    def __init__(self, binary: str | None = None, startup_timeout: float = 20.0, authenticate: bool = False):
        self.binary = binary or find_opa()
        self.startup_timeout = startup_timeout
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.token: str | None = secrets.token_urlsafe(32) if authenticate else None
        self._log = tempfile.NamedTemporaryFile(prefix="ostiary-opa-", suffix=".log", delete=False)  # noqa: SIM115 - lives as long as the process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalOpa:
        self.port = free_port()
        args = [
            self.binary,
            "run",
            "--server",
            "--skip-version-check",
            "--addr",
            f"127.0.0.1:{self.port}",
            "--log-level",
            "error",
            # Policies are data documents (app/policies/translate.py), read by every decision: the
            # store keeps them as AST values instead of converting them on each read.
            "--optimize-store-for-read-speed",
        ]
        headers = {}
        bundle_dir = None
        if self.token:
            # The token travels in a private file read once at start (never on the command line,
            # which every process can read); the file is gone once OPA answers.
            bundle_dir = Path(tempfile.mkdtemp(prefix="ostiary-opa-authz-"))
            write_authz_bundle(bundle_dir / "authz", self.token)
            args += ["--authentication=token", "--authorization=basic", "--bundle", str(bundle_dir / "authz")]
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            return self._spawn(args, headers)
        finally:
            if bundle_dir is not None:
                shutil.rmtree(bundle_dir, ignore_errors=True)

    def _spawn(self, args: list[str], headers: dict) -> LocalOpa:
        import requests

        self.proc = subprocess.Popen(
            args,
            env=opa_environment(os.environ),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
        )
        end = time.monotonic() + self.startup_timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise OpaStartFailed(f"opa exited at start ({self.proc.returncode}): {self.log_tail()}")
            try:
                if requests.get(self.url + "/health", timeout=0.5, headers=headers).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise OpaStartFailed(f"opa did not become healthy within {self.startup_timeout}s: {self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        try:
            return Path(self._log.name).read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
