"""One-client attacks on `ostiary serve`, and what they cost it (tests/integration/test_one_client.py
and scripts/attack_bench.py share them).

Each attack runs on its own threads from its own loopback address (Linux routes all of 127/8 to
lo), so the server sees it as one peer; `Prober` sends normal admissions from another address
meanwhile and records how long each took and whether it got the right answer. `Worker` reads the
gunicorn worker's memory from /proc.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ATTACKER = "127.0.0.3"
PROBER = "127.0.0.2"
MIB = 1024 * 1024


# ------------------------------------------------------------------------- the worker's memory


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


class Worker:
    """The gunicorn worker of an `ostiary serve` process (the master's one child)."""

    def __init__(self, serve_pid: int, timeout: float = 30.0):
        self.serve_pid = serve_pid
        end = time.monotonic() + timeout
        while True:
            children = _children(serve_pid)
            if len(children) == 1:
                self.pid = children[0]
                return
            if time.monotonic() > end:
                raise AssertionError(f"`ostiary serve` {serve_pid} has workers {children}, not one")
            time.sleep(0.1)

    def rss_mb(self) -> float:
        return _status_kb(self.pid, "VmRSS") / 1024

    def peak_mb(self) -> float:
        """The highest RSS the worker ever had (the kernel's high-water mark)."""
        return _status_kb(self.pid, "VmHWM") / 1024

    def restarted(self) -> bool:
        """Whether gunicorn replaced the worker (killed for a missed heartbeat, or died)."""
        return _children(self.serve_pid) != [self.pid]


# ------------------------------------------------------------------------------------ probing


def _unverified() -> ssl.SSLContext:
    """TLS without checking the server (the attacks are about load, not about whom they reach)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def admit_from(
    port: int, body: bytes, source: str = PROBER, timeout: float = 30.0, tls: bool = False
) -> tuple[float, int, dict]:
    """POST one AdmissionReview on a fresh connection from `source`: (seconds, status, JSON answer)."""
    started = time.monotonic()
    conn: http.client.HTTPConnection
    if tls:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=timeout, source_address=(source, 0), context=_unverified()
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("POST", "/admit", body=body, headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        data = answer.read()
        status = answer.status
    finally:
        conn.close()
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = {"raw": data[:200].decode("utf-8", "replace")}
    return time.monotonic() - started, status, parsed


@dataclass
class Probe:
    seconds: float
    ok: bool
    said: str


@dataclass
class Prober:
    """Normal admissions, one after another (`every` seconds apart) from PROBER, each expected to
    be answered 200 with `allowed` == `expect`."""

    port: int
    body: bytes
    expect: bool = True
    every: float = 0.25
    timeout: float = 30.0
    tls: bool = False
    probes: list[Probe] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Prober:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.probes.append(self.once())
            self._stop.wait(self.every)

    def once(self) -> Probe:
        started = time.monotonic()
        try:
            seconds, status, answer = admit_from(self.port, self.body, timeout=self.timeout, tls=self.tls)
        except OSError as exc:
            return Probe(time.monotonic() - started, False, f"{exc.__class__.__name__}: {exc}")
        allowed = (answer.get("response") or {}).get("allowed")
        return Probe(seconds, status == 200 and allowed is self.expect, f"{status} {str(answer)[:160]}")

    def stop(self) -> list[Probe]:
        self._stop.set()
        self._thread.join(self.timeout + 5)
        return self.probes

    def worst(self) -> float:
        return max((p.seconds for p in self.probes), default=0.0)

    def failures(self) -> list[Probe]:
        return [p for p in self.probes if not p.ok]


# ------------------------------------------------------------------------------------ attacks


def connect(port: int, source: str = ATTACKER, timeout: float = 10.0, tls: bool = False) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return _unverified().wrap_socket(sock) if tls else sock


class Attack:
    """Runs `step` on `threads` threads until stopped; counts what the server answered."""

    threads = 1
    source = ATTACKER

    def __init__(self, port: int):
        self.port = port
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        self.answers: dict[str, int] = {}
        self._lock = threading.Lock()

    def note(self, what: str) -> None:
        with self._lock:
            self.answers[what] = self.answers.get(what, 0) + 1

    def start(self) -> Attack:
        for t in self._workers:
            t.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except OSError as exc:
                self.note(exc.__class__.__name__)
                self._stop.wait(0.05)

    def step(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(30)
        self.close()

    def close(self) -> None:
        pass


def _status_of(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode("latin-1")[:40] if data else "closed"


class CrlfFlood(Attack):
    """One connection sending `\\r\\n` as fast as the server takes it (issue 20, item 3)."""

    def __init__(self, port: int, tls: bool = False):
        self.tls = tls
        super().__init__(port)

    def step(self) -> None:
        with connect(self.port, self.source, tls=self.tls) as sock:
            sock.settimeout(5)
            chunk = b"\r\n" * 32768
            try:
                while not self._stop.is_set():
                    sock.sendall(chunk)
            except OSError:
                pass
            try:
                self.note(_status_of(sock.recv(4096)))
            except OSError as exc:
                self.note(exc.__class__.__name__)


class PromisedBodies(Attack):
    """`count` connections, each announcing a body of `length` bytes and sending 1 KB of it, then
    holding on; reopened when the server closes them (issue 20, item 4)."""

    def __init__(self, port: int, count: int = 20, length: int = 4 * MIB):
        self.count, self.length = count, length
        self.held: list[socket.socket] = []
        super().__init__(port)

    def step(self) -> None:
        for sock in [s for s in self.held if _closed(s)]:
            self.held.remove(sock)
            sock.close()
            self.note("closed")
        while len(self.held) < self.count and not self._stop.is_set():
            sock = connect(self.port, self.source)
            sock.sendall(
                b"POST /admit HTTP/1.1\r\nHost: ostiary\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % self.length + b" " * 1024
            )
            self.held.append(sock)
        self._stop.wait(0.2)

    def close(self) -> None:
        for sock in self.held:
            sock.close()


def _closed(sock: socket.socket) -> bool:
    """Whether the server answered or closed (without blocking)."""
    try:
        sock.setblocking(False)
        try:
            return sock.recv(4096, socket.MSG_PEEK) is not None
        except (BlockingIOError, InterruptedError):
            return False
        finally:
            sock.setblocking(True)
    except OSError:
        return True


class ConnectionHog(Attack):
    """`count` connections from one address, each with half a request line, reopened when the
    server closes them (issue 20, item 5)."""

    def __init__(self, port: int, count: int, source: str = ATTACKER):
        self.count, self.source = count, source
        self.held: list[socket.socket] = []
        super().__init__(port)

    def step(self) -> None:
        for sock in [s for s in self.held if _closed(s)]:
            self.held.remove(sock)
            sock.close()
            self.note("closed")
        while len(self.held) < self.count and not self._stop.is_set():
            sock = connect(self.port, self.source)
            sock.sendall(b"POST /adm")
            self.held.append(sock)
        self._stop.wait(0.2)

    def close(self) -> None:
        for sock in self.held:
            sock.close()


def array_bomb(size: int = 7 * MIB - 4096) -> bytes:
    """An AdmissionReview of `size` bytes, nearly all of it `[{},{},…]` (issue 20, item 8)."""
    head = b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","junk":['
    tail = b"{}]}}"
    return head + b"{}," * ((size - len(head) - len(tail)) // 3) + tail


class DecodeBombs(Attack):
    """`threads` clients each posting a body of `[{},{},…]` again and again (issue 20, item 8)."""

    def __init__(self, port: int, threads: int = 8, body: bytes | None = None):
        self.threads = threads
        self.body = body if body is not None else array_bomb()
        super().__init__(port)

    def step(self) -> None:
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=120, source_address=(self.source, 0)
        )
        try:
            conn.request("POST", "/admit", body=self.body, headers={"Content-Type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            self.note(str(answer.status))
        finally:
            conn.close()


def plan_review(index: int, images: int = 64, length: int = 250) -> bytes:
    """A Deployment in its own namespace naming `images` distinct, long image references: a plan
    Ostiary keeps (within plans.MAX_IMAGES and MAX_KEY_CHARS), unlike any other (issue 20, item 7)."""
    ns = f"ns-{index}"
    containers = []
    for i in range(images):
        repo = f"registry.example.com/mirror/p{index}-{i}-" + "x" * length
        containers.append({"name": f"c{i}", "image": f"{repo[: length - 5]}:1"})
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": f"plan-{index}",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "namespace": ns,
            "operation": "CREATE",
            "userInfo": {"username": "anyone"},
            "object": {
                "kind": "Deployment",
                "metadata": {"name": "w", "namespace": ns},
                "spec": {
                    "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": containers}}
                },
            },
        },
    }
    return json.dumps(review).encode()


class PlanFlood(Attack):
    """`threads` clients sending reviews that each leave a kept plan of their own (issue 20, item 7)."""

    def __init__(self, port: int, threads: int = 4, total: int = 4200):
        self.threads, self.total = threads, total
        self._next = iter(range(total))
        self.done = threading.Event()
        super().__init__(port)

    def step(self) -> None:
        with self._lock:
            index = next(self._next, None)
        if index is None:
            self.done.set()
            self._stop.wait(0.2)
            return
        _, status, _ = admit_from(self.port, plan_review(index), source=self.source)
        self.note(str(status))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
