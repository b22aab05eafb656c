"""Run and supervise a local `opa run --server` on a free loopback port (the embedded default)."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from app.paths import repo_root

OPA_ENV = "OSTIARY_OPA"


class OpaNotFound(RuntimeError):
    pass


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


class LocalOpa:
    """An OPA server owned by this process; stop() (or our death) ends it."""

    def __init__(self, binary: str | None = None, startup_timeout: float = 20.0):
        self.binary = binary or find_opa()
        self.startup_timeout = startup_timeout
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="ostiary-opa-", suffix=".log", delete=False)  # noqa: SIM115 - lives as long as the process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalOpa:
        import requests

        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                self.binary, "run", "--server", "--skip-version-check",
                "--addr", f"127.0.0.1:{self.port}", "--log-level", "error",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
        )
        end = time.monotonic() + self.startup_timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"opa exited at start ({self.proc.returncode}): {self.log_tail()}")
            try:
                if requests.get(self.url + "/health", timeout=0.5).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"opa did not become healthy within {self.startup_timeout}s: {self.log_tail()}")

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
